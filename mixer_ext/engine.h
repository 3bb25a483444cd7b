/* engine: drive pjmedia streams from the mixer's own clock threads (no conference bridge).
 *
 * Each call's pjmedia_stream is attached as a leg; its own port is read (decoded frame) and
 * written (frame to encode and send) by a clock thread once per 20 ms, for every leg of every
 * room that clock serves: one tick per room, no Python, no GIL. The conference bridge is given
 * a placeholder null port per call and never touches the stream.
 *
 * Threads: attach/free/room operations are made by the SIP thread (registered with pjlib);
 * clock threads register themselves. Room and clock state are guarded by pthread mutexes that
 * the tick holds for microseconds. Lock rules: a clock thread never calls into Python while it
 * holds one (pjlib's log lines go to a lock-free ring, pjlog.h); callers from Python release
 * the GIL before any function here that locks; the stats functions, eng_leg_playing and
 * eng_clock_stall_ns take no lock at all (relaxed atomics).
 *
 * The implementation is split by concern (engine_int.h lists the files and the lock order):
 * clock.c, rooms.c, legs.c, taps.c, events.c.
 */
#ifndef SIPCONF_ENGINE_H
#define SIPCONF_ENGINE_H

#include <stdint.h>
#include "mixcore.h"
#include "dtmf.h"
#include "floor.h"

#define ENG_MAX_CLOCKS 16
#define ENG_MAX_ROOMS_PER_CLOCK 4096

typedef struct eng_leg eng_leg;
typedef struct eng_room eng_room;

typedef struct eng_leg_stats {
    int rate;
    uint64_t rx_audio;     /* frames with decoded audio */
    uint64_t rx_empty;     /* frames with nothing (jitter buffer empty, no RTP yet) */
    uint64_t catchups;     /* frames dropped to catch up with a stream running a frame behind */
    uint64_t in_place;     /* packets dropped for slots already concealed (in place) */
    int64_t playout_us;    /* how long after its earliest possible arrival a packet plays, -1 */
    int64_t target_us;     /* the lateness its jitter buffer waits for (legs.c), -1: unknown */
    uint64_t delay_steps;  /* delay steps its lateness measure started again from (transit.c) */
    uint64_t tx;           /* frames sent (handed to the encoder, or a shared payload) */
    uint64_t shared;       /* of those, frames sent as a payload encoded once for the room */
    uint64_t errors;
    uint64_t energy;       /* last frame's talker energy */
    int talking;           /* speaking (floor.c): what talk events and the API report */
    int fec_pct;           /* the loss (%) its Opus encoder codes FEC for (fec.c), -1: none */
    unsigned fec_frames;   /* frames its Opus decoder rebuilt from the peer's FEC (fec.c) */
} eng_leg_stats;

typedef struct eng_room_stats {
    int rate;
    int nlegs;
    uint64_t ticks;
    uint64_t tick_ns_total;
    uint64_t tick_ns_max;
    uint64_t phase_moves;  /* times its tick was moved to its talker's packets (rooms.c) */
} eng_room_stats;

/* Room tick durations, for a histogram: bucket i counts ticks <= eng_tick_bucket_ns[i]; the
   last bucket counts the rest. */
#define ENG_TICK_BUCKETS 12
extern const uint64_t eng_tick_bucket_ns[ENG_TICK_BUCKETS - 1];

typedef struct eng_clock_stats {
    int nclocks;
    int nrooms;
    uint64_t ticks;
    uint64_t late;         /* ticks that started over 10 ms after their deadline */
    uint64_t resyncs;      /* times a clock fell over 100 ms behind and skipped ahead */
    uint64_t room_ticks;   /* room ticks done, over every room there has been */
    uint64_t room_tick_ns; /* and the time they took */
    uint64_t room_tick_hist[ENG_TICK_BUCKETS];
} eng_clock_stats;

/* What the ticks detect, for the control plane to poll (eng_poll_events). */
#define ENG_EV_DIGIT 1   /* leg_id pressed `digit` (in-band tones) */
#define ENG_EV_FLOOR 2   /* leg_id took the floor of room_id */
#define ENG_EV_TALK 3    /* leg_id started (digit 'T') or stopped ('S') talking in room_id */
#define ENG_EVENT_QUEUE 1024

typedef struct eng_event {
    int type;
    char digit;
    uint64_t leg_id;
    uint64_t room_id;
} eng_event;

/* Why eng_leg_attach refused a stream (*err). */
#define ENG_ERR_NO_PORT   (-1)  /* the stream has no port */
#define ENG_ERR_CONVERT   (-2)  /* could not convert it to 8/16 kHz mono */
#define ENG_ERR_FRAME     (-3)  /* its frame is not 20 ms */
#define ENG_ERR_NO_MEMORY (-4)

/* Start n clock threads (idempotent). 0 on success. */
int eng_start(int n);
/* Stop and join the clock threads; rooms must be gone. */
void eng_stop(void);

/* Attach a pjmedia_stream; *placeholder gets the port to give the conference bridge.
 * Returns NULL and sets *err (an ENG_ERR_*) when the stream's format is not one we mix. */
eng_leg *eng_leg_attach(void *stream, void **placeholder, int *err);
/* Release a leg that is in no room. */
void eng_leg_free(eng_leg *leg);
void eng_leg_set_flags(eng_leg *leg, int flags);
void eng_leg_set_gain(eng_leg *leg, int gain_in, int gain_out);
/* listener hears the private (MIX_LEG_PRIVATE) leg src, or no longer (hear 0): both in one
 * room; 0 on success, -1 otherwise. Leaving the room ends the relation. */
int eng_leg_relate(eng_leg *listener, eng_leg *src, int hear);
void eng_leg_get_stats(eng_leg *leg, eng_leg_stats *st);
/* Node-wide: a leg catches up after its jitter buffer kept a frame back for this many ticks in
 * a row (0: never). Set before calls start. */
void eng_set_catchup(int ticks);
/* The jitter buffer's playout point (legs.c): waits for wait_pct % of a leg's packets, adding at
 * most delay_max_ms for the late ones. */
void eng_set_playout(int wait_pct, int delay_max_ms);
/* Node-wide: a room's tick follows its talker's packets (rooms.c; default on). */
void eng_set_tick_align(int on);
/* Node-wide: listeners hearing the same frame share one encode (share.c; default on). */
void eng_set_shared_encoding(int on);
/* The leg encodes its own frames for the next `ms` (digits are being sent on its stream). */
void eng_leg_own_encoder(eng_leg *leg, int ms);
/* pjproject as scripts/build-pjproject.sh patches it: the Opus application (OPUS_APPLICATION_*)
 * of every Opus encoder opened from now on. */
void sipconf_opus_set_application(int app);
void fec_set_decoding(int direct);     /* Opus decoders: 1 at once (fec.c), 0 pjmedia's way */

/* Sounds. A player walks a PCM clip (at the leg's rate) frame by frame; loops < 0 = forever.
 * On a call leg it is a private overlay: added to what that caller hears (wait music, a Play
 * before the conference). On a source leg (eng_source_create) it is the leg's input: mixed into
 * the room like a member's voice, heard by everyone (beeps, enter/exit sounds).
 * The clip memory must stay valid until eng_leg_stop or the leg is freed. */
eng_leg *eng_source_create(int rate);
void eng_leg_play(eng_leg *leg, const int16_t *pcm, int n, int loops);
void eng_leg_stop(eng_leg *leg);
/* 1 while the leg's player still has audio to give. */
int eng_leg_playing(eng_leg *leg);
int eng_leg_rate(eng_leg *leg);

/* Every leg and room has a process-unique id, named in events. */
uint64_t eng_leg_id(eng_leg *leg);
uint64_t eng_room_id(eng_room *room);
/* Copy up to max pending events into out; returns how many. *dropped gets the number lost to a
 * full queue since the last call. Never blocks a tick for longer than a copy. */
int eng_poll_events(eng_event *out, int max, uint64_t *dropped);

/* Recording taps: the room's full mix (every unmuted member and the room's sounds), always at
 * 16 kHz (an 8 kHz room is upsampled with the mixer's half-band filter), into a ring the
 * recorder drains from another thread. The tick only copies; a full ring drops (counted). */
typedef struct eng_tap eng_tap;
eng_tap *eng_tap_create(int seconds);
/* 0 on success; -1 if the room already has a tap. */
int eng_tap_attach(eng_tap *tap, eng_room *room);
void eng_tap_detach(eng_tap *tap);
/* Up to max samples, oldest first; returns how many. */
int eng_tap_read(eng_tap *tap, int16_t *out, int max);
uint64_t eng_tap_dropped(eng_tap *tap);
/* A tap that also keeps one track per member: ntracks slots (at most ENG_MAX_TRACKS), each
 * the 16 kHz contribution of the first leg seen in it (a member who left: silence), fed every
 * tick with the mix, so a track's sample i is the mix's sample i. */
#define ENG_MAX_TRACKS 32
eng_tap *eng_tap_create_tracks(int seconds, int ntracks);
/* Up to max samples of slot's track; *leg_id gets its leg (0: the slot is free). */
int eng_tap_read_track(eng_tap *tap, int slot, int16_t *out, int max, uint64_t *leg_id);
void eng_tap_free(eng_tap *tap);

/* Pipes (pipes.c): a leg's audio to and from another thread, at the leg's rate. Up: what a
 * call leg says (ENG_PIPE_IN) and hears (ENG_PIPE_OUT), what an agent leg hears (OUT); down:
 * audio the tick takes one frame per 20 ms, added to what a call leg hears, or an agent leg's
 * voice. Rings drop their oldest samples when full (counted). One pipe per leg; attach and
 * detach on the thread that places legs in rooms, read/write/clear from any thread. */
#define ENG_PIPE_IN 1
#define ENG_PIPE_OUT 2
typedef struct eng_pipe eng_pipe;
typedef struct eng_pipe_stats {
    uint64_t played;       /* down samples the tick has taken */
    uint64_t pending;      /* down samples waiting */
    uint64_t dropped_up;
    uint64_t dropped_down;
} eng_pipe_stats;
eng_pipe *eng_pipe_create(int rate, int want, int seconds_up, int seconds_down);
/* 0 on success; -1 if either already has a pipe or the rates differ. */
int eng_pipe_attach(eng_pipe *p, eng_leg *leg);
void eng_pipe_detach(eng_pipe *p);
void eng_pipe_free(eng_pipe *p);
int eng_pipe_read(eng_pipe *p, int track, int16_t *out, int max);
void eng_pipe_write(eng_pipe *p, const int16_t *pcm, int n);
/* Drop the down audio not played yet; returns how many samples. */
int eng_pipe_clear(eng_pipe *p);
void eng_pipe_get_stats(eng_pipe *p, eng_pipe_stats *st);
/* A member leg with no stream (an AI agent): its pipe is its voice and its ears. */
eng_leg *eng_agent_create(int rate);

eng_room *eng_room_create(void);
/* Remove the room from its clock and free it; legs still in it are detached. */
void eng_room_destroy(eng_room *room);
int eng_room_add(eng_room *room, eng_leg *leg);
/* Remove the leg from whatever room it is in (no-op when in none). */
void eng_leg_leave(eng_leg *leg);
void eng_room_get_stats(eng_room *room, eng_room_stats *st);
void eng_clock_get_stats(eng_clock_stats *st);
/* Heartbeat: nanoseconds since the clock that ticked least recently completed a tick (0 when
 * no clock runs). Lock-free, from any thread: a watchdog's view of a stuck clock. */
int64_t eng_clock_stall_ns(void);

#endif
