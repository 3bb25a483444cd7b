/* engine_int.h: what the engine's files share and nothing outside them sees (the public API
 * is engine.h). The engine is split by concern, each file's functions prefixed by its name:
 *
 *   clock.c   clock threads, their tick loop, heartbeat and stats; the clock registry (g_lock),
 *             which also hands out leg and room ids
 *   rooms.c   rooms: create/destroy (placing them on a clock), add/leave, the room tick
 *   legs.c    legs: attach a pjmedia stream or create a source, players, flags, gain, stats
 *   taps.c    recording taps: the tick's hook and the ring the recorder drains
 *   events.c  the event queue the ticks push to and the control plane polls
 *   pipes.c   a leg's audio to and from another thread (streams, agents), agent legs
 *   share.c   one encode per shared mix: listeners hearing the same frame share a payload
 *
 * Lock order (outer first): g_lock (clock.c) > a clock's lock > g_tap_lock (taps.c) > a room's
 * lock > a tap's lock, g_ev_lock (events.c). A clock thread holds its clock's lock, then each
 * room's lock in turn, for the whole tick; the stats readers take no lock (relaxed atomics).
 */
#ifndef SIPCONF_ENGINE_INT_H
#define SIPCONF_ENGINE_INT_H

#include "engine.h"

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include <pjmedia.h>

/* Counters the ticks write and the stats functions read from other threads without any lock:
 * relaxed atomics (each has a single writer at a time; readers want a value, not an order). */
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define BUMP(x, d) STORE(x, (x) + (d))  /* single writer: no read-modify-write needed */

typedef struct eng_player {
    const int16_t *pcm;
    int n;
    int pos;
    int loops;                  /* plays left after this one; < 0 = forever */
    int active;
} eng_player;

struct eng_leg {
    mix_leg m;                  /* first: a mix_leg* is an eng_leg* */
    eng_player player;
    pjmedia_stream *stream;
    pjmedia_port *port;         /* what the clock drives: the stream's port, or a converter */
    pjmedia_port *mono;         /* channel converter over the stream port, if needed */
    pjmedia_port *resampler;    /* rate converter to 16 kHz, if needed */
    pjmedia_resample *up;       /* with it: what the leg hears, 16 kHz to the stream's rate, */
    pjmedia_port *below;        /* put to the port below (ours, so share.c can prime it) */
    int below_spf;
    pj_pool_t *pool;
    pjmedia_port *placeholder;
    eng_room *room;
    pj_timestamp ts;
    uint64_t rx_audio, rx_empty, tx, errors, catchups, in_place;
    int frm_ms;                 /* the codec's frame, ms (the jitter buffer counts these) */
    int behind;                 /* ticks in a row the jitter buffer kept a whole frame back */
    uint64_t jb_events;         /* its lost + empty + discarded frames when last looked at */
    uint64_t jb_empty;          /* its empty reads when last looked at */
    int owed_ms;                /* audio concealed for an empty buffer since its last packet */
    int calm;                   /* reads since its last late packet (capped) */
    int jittery;                /* its T over JITTER_ON_US: the node sets its playout (legs.c) */
    uint64_t floor_pow;         /* its frames' noise floor, mean power (legs.c, leg_quiet) */
    int64_t playout_us, target_us;  /* its playout delay D and target T, -1: not known */
    uint64_t delay_steps;           /* as its transit window counted them */
    uint64_t energy;            /* m.energy and m.speaking as of the last tick, for stats */
    int talking;
    uint64_t id;
    dtmf_detector dtmf;
    eng_pipe *pipe;             /* a stream or agent pipe, or NULL (pipes.c) */
    void *denoise;              /* speexdsp preprocessor while MIX_LEG_GATE (a call leg) */
    int agent;                  /* an agent leg: no stream, its pipe is its voice */
    /* shared encoding (share.c): the leg's encoder configuration, NULL if it never shares */
    pjmedia_codec_param *sh_param;
    pjmedia_codec_info sh_info;
    char sh_name[32];
    pjmedia_transport *tp;      /* the stream's transport (a guard, rtpguard.c) */
    int64_t own_until_ns;       /* digits being sent: its own encoder until then */
    eng_room *sh_room;          /* the room sh_slot was found in */
    int sh_slot;                /* its room's shared encoder, -1: none */
    uint64_t shared;            /* frames sent as a shared payload */
    pjmedia_codec *codec;       /* the stream's own encoder (its state continued, share.c) */
    int quiet_ticks;            /* ticks in a row it has heard the room's whole mix */
    int was_shared;             /* its last frame was a shared payload */
    /* in-band FEC on what it sends (fec.c): its Opus encoder, the loss (%) it codes for (-1:
     * not told yet), the peer's last receiver report as counted then */
    pjmedia_codec *fec_codec;
    int loss_pct;
    unsigned rr_count;
    pj_uint32_t rr_lost;
    uint64_t rr_sent;
    /* in-band FEC on what it receives (fec.c): its Opus decoder, whether it asked for the held
     * frame, ticks a switch has waited for a quiet frame, frames rebuilt from FEC */
    pjmedia_codec *dec_codec;
    int dec_held;
    int dec_switch_ticks;
    unsigned fec_frames;
};

/* The rate converters of legs at another rate (Opus at 48 kHz) and of the shared encoders, one
 * quality for all (a leg and the shared encoder must convert alike for a seamless switch):
 * speexdsp's resampler through pjmedia, high quality (pjmedia: quality 10 with the large
 * filter, 7 with the small one) or not (quality 3). */
#define ENG_RS_HIGH_QUALITY PJ_FALSE
#define ENG_RS_LARGE_FILTER PJ_FALSE
#define ENG_RS_PORT_OPTS ((ENG_RS_HIGH_QUALITY ? 0 : PJMEDIA_RESAMPLE_USE_LINEAR) \
                          | (ENG_RS_LARGE_FILTER ? 0 : PJMEDIA_RESAMPLE_USE_SMALL_FILTER))

#define ENG_SHARE_CONFIGS 4     /* shared encoders (configurations) a room keeps */
#define ENG_SHARE_PAYLOAD 1280  /* bytes an encoded frame may take */
#define ENG_SHARE_MAX_SPF 960   /* 20 ms at 48 kHz */
struct eng_shared;

/* Tick alignment (rooms.c): the room's talker (its floor holder) is read ENG_ALIGN_MARGIN_NS
 * after its packets arrive (a margin for their jitter, so no frame straddles the read) when
 * the youngest packet age at the reads falls outside ENG_ALIGN_LOW_NS..ENG_ALIGN_HIGH_NS;
 * measured over ENG_ALIGN_TICKS ticks of steady arrivals (ages within ENG_ALIGN_SPREAD_NS
 * once the ENG_ALIGN_OUTLIERS youngest and oldest are set aside, and at most
 * ENG_ALIGN_OUTLIERS ticks with no recent packet: a late packet now and then does not hold a
 * move back), at most one move per ENG_ALIGN_HOLD_NS. */
#define ENG_ALIGN_MARGIN_NS (5 * 1000000LL)
#define ENG_ALIGN_LOW_NS (3 * 1000000LL)
#define ENG_ALIGN_HIGH_NS (10 * 1000000LL)
#define ENG_ALIGN_TICKS 25
#define ENG_ALIGN_OUTLIERS 2
#define ENG_ALIGN_SPREAD_NS (5 * 1000000LL)
#define ENG_ALIGN_HOLD_NS (2000 * 1000000LL)
/* A jittery talker (rooms.c, rooms_align_jittery): read at its target T and this margin, moved
 * when its wait is over T by more than ENG_ALIGN_JB_HIGH_NS or under it. */
#define ENG_ALIGN_JB_MARGIN_NS (2 * 1000000LL)
#define ENG_ALIGN_JB_HIGH_NS (5 * 1000000LL)

struct eng_room {
    mix_room m;
    pthread_mutex_t lock;
    int clock;
    uint64_t id;
    floor_state floor;
    eng_tap *tap;
    uint64_t ticks, tick_ns_total, tick_ns_max;
    int rate, nlegs;            /* m.rate and m.nlegs, for stats (set under lock, read without) */
    struct eng_shared *shared[ENG_SHARE_CONFIGS];  /* share.c; freed with the room */
    /* Its own tick schedule (clock.c; only its clock thread touches these): when it ticks
     * next, 0 until its clock first sees it; rooms.c moves it so that the room's talker's
     * packets arrive ENG_ALIGN_MARGIN_NS before the tick reads them. */
    int64_t next_ns;
    void *align_leg;            /* the talker being measured */
    int align_n;                /* ticks measured */
    int align_skipped;          /* ticks of the window with no recent packet (a late one) */
    int align_jittery;          /* the talker's playout is the node's (legs.c): its wait is
                                 * measured, not its packets' age (align_ages holds D - T) */
    int64_t align_ages[ENG_ALIGN_TICKS];  /* the packet ages at read over those ticks */
    int64_t align_at_ns;        /* last move */
    uint64_t phase_moves;
};


static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* clock.c */
uint64_t clock_new_id(void);              /* takes g_lock */
int clock_add_room(eng_room *r);          /* g_lock, then the chosen clock's lock; -1: none */
void clock_remove_room(eng_room *r);      /* the same locks; no tick reaches r afterwards */

/* rooms.c: one room's tick (the caller holds its clock's lock); returns its duration. */
uint64_t rooms_tick(eng_room *r);
#define ENG_TICK_NS (MIX_FRAME_MS * 1000000LL)

/* dst[i] += src[i], saturating at int16 (a sound added to what a leg hears). */
static inline void pcm_add_sat(int16_t *dst, const int16_t *src, int n)
{
    for (int i = 0; i < n; i++) {
        int32_t v = (int32_t)dst[i] + src[i];
        dst[i] = (int16_t)(v > 32767 ? 32767 : (v < -32768 ? -32768 : v));
    }
}

/* share.c: at attach, a leg that can share keeps its encoder configuration; each tick, the
 * legs whose frames one shared encode can serve are sent it and cleared from send[] (one flag
 * per room leg: it still needs a frame); a room's encoders go with it. */
void share_leg_init(eng_leg *leg, const pjmedia_stream_info *si);
void share_tick(eng_room *r, unsigned char *send);
void share_room_gone(eng_room *r);
void fec_leg_init(eng_leg *leg, const pjmedia_stream_info *si);
void fec_tick(eng_room *r);
void fec_after_read(eng_leg *leg, int quiet, int64_t target_us);
void fec_own_again(eng_leg *leg);
int fec_shared(pjmedia_codec *codec, int now, int want);

/* legs.c: the tick denoises a gated call leg's decoded frame (m.in), if it has a denoiser. */
void legs_denoise(eng_leg *leg);
/* legs.c: after the tick read a call leg's frame: after an empty spell that a late packet ended
 * in a calm stream, drop the packets that came for slots already concealed (concealment in
 * place); when its jitter buffer has kept at least a whole frame back for a while
 * (eng_set_catchup), read on to the newer frame (20 ms less). */
void legs_after_read(eng_leg *leg);

/* legs.c: a leg with no stream (a source's or an agent's base), its id given. */
eng_leg *legs_new_bare(int rate);

/* legs.c: the next n samples of the leg's player into dst (added when add, else copied with
 * silence past the clip's end); 0 once it is finished. Under the leg's room lock. */
int legs_player_fill(eng_player *p, int16_t *dst, int n, int add);

/* taps.c: the room is being destroyed (no clock reaches it): let its tap go (g_tap_lock). */
void taps_room_gone(eng_room *r);

/* pipes.c, for the tick (under the room lock): a frame up; a frame down into dst. */
void pipes_up(eng_pipe *p, int track, const int16_t *pcm, int n);
int pipes_down(eng_pipe *p, int16_t *dst, int n, int add);
/* pipes.c: a leg being freed (in no room any more) lets its pipe go. */
void pipes_leg_gone(eng_leg *leg);

/* events.c: queue an event (g_ev_lock); a full queue drops it and counts. */
void events_push(int type, char digit, uint64_t leg_id, uint64_t room_id);

#endif
