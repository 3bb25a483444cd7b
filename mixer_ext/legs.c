/* legs.c: legs. A call leg wraps a pjmedia stream's port (behind pjmedia's channel and rate
 * converters when the stream is not 8/16 kHz mono) and gives the conference bridge a
 * placeholder null port instead; a source leg (a room sound) has no stream, only a player.
 * Here too: the player (a PCM clip walked frame by frame), flags, gains, the leg's DTMF input
 * hook and its lock-free stats.
 *
 * Locking: a leg in a room is guarded by that room's lock (the tick reads and writes it under
 * it): play/stop/flags/gain take leg->room's lock when there is one. leg->room itself changes
 * only on the SIP thread (rooms.c), which is the only caller of these functions. The DTMF
 * hook runs in the tick and pushes events (g_ev_lock, a leaf). The tick's counters and
 * player.active are written with relaxed stores; eng_leg_get_stats and eng_leg_playing read
 * them without any lock.
 */
#include "engine_int.h"
#include "rtpguard.h"

#include <stdlib.h>
#include <string.h>

#include <pjsua-lib/pjsua.h>
#include <speex/speex_preprocess.h>

/* A call leg that is gated is also denoised first (speexdsp's preprocessor: noise estimated
 * and suppressed by up to 30 dB; no AGC, no VAD: the gate decides), so the gate opens on
 * speech, not on a noisy room. Made and freed on the SIP thread, run by the tick. */
/* speexdsp's preprocessor delays what it gives back by its frame (it analyses a window of two
 * frames and overlaps-and-adds the halves): a 20 ms frame made a denoised member 20 ms later
 * than a plain one (measured: delay 14 -> 34 ms, onset 26 -> 48 ms). So it runs on half a
 * tick, twice a tick: 10 ms later. */
#define DENOISE_SPLIT 2
static void *legs_denoiser(int rate, int spf)
{
    SpeexPreprocessState *st = speex_preprocess_state_init(spf / DENOISE_SPLIT, rate);
    if (!st)
        return NULL;
    int on = 1, off = 0, suppress = -30;
    speex_preprocess_ctl(st, SPEEX_PREPROCESS_SET_DENOISE, &on);
    speex_preprocess_ctl(st, SPEEX_PREPROCESS_SET_NOISE_SUPPRESS, &suppress);
    speex_preprocess_ctl(st, SPEEX_PREPROCESS_SET_AGC, &off);
    speex_preprocess_ctl(st, SPEEX_PREPROCESS_SET_VAD, &off);
    speex_preprocess_ctl(st, SPEEX_PREPROCESS_SET_DEREVERB, &off);
    return st;
}

void legs_denoise(eng_leg *leg)
{
    if (!leg->denoise)
        return;
    for (int k = 0; k < DENOISE_SPLIT; k++)
        speex_preprocess_run((SpeexPreprocessState *)leg->denoise,
                             leg->m.in + k * (leg->m.spf / DENOISE_SPLIT));
}

/* Catch-up. pjmedia's adaptive jitter buffer keeps what its prefetch asks for, but once a
 * burst (a tick that came late, two packets in one turn) has left one frame more in it than
 * the stream needs, it can keep it for the whole call: that leg then lags 20 ms, depending on
 * where its packets fall against the tick. A leg whose buffer still held a whole frame after
 * every read for g_catchup_ticks gets that frame read on (the older one dropped), on a quiet
 * frame if one comes within CATCHUP_FORCE_TICKS, else anyway. Real jitter drains the buffer to
 * empty now and then, and a frame lost, concealed or discarded starts the second again: only
 * a clean stream catches up (on a lossy one it cost up to 0.7 PESQ at 3 % loss). */
static int g_catchup_ticks = 50;     /* 1 s of a frame to spare on every read (--jb-catchup-ms) */
#define CATCHUP_FORCE_TICKS 250      /* 5 s more: a talker who never pauses */
#define CATCHUP_QUIET_POWER 1074ULL  /* a frame's mean power at -55 dBFS */

void eng_set_catchup(int ticks)
{
    __atomic_store_n(&g_catchup_ticks, ticks, __ATOMIC_RELAXED);
}

/* 1 if the frame the tick read is quiet (a frame dropped after it is barely heard): under
 * -55 dBFS, or within 3 dB of the talker's own noise floor (a pause on a noisy line: a laptop's
 * fan, a car). The floor follows the quietest frames down at once and up by 3.4 dB a second. */
static int leg_quiet(eng_leg *leg)
{
    uint64_t e = 0;
    for (int i = 0; i < leg->m.spf; i++)
        e += (uint64_t)((int32_t)leg->m.in[i] * leg->m.in[i]);
    const uint64_t p = e / (uint64_t)leg->m.spf;
    const uint64_t floor = leg->floor_pow;
    leg->floor_pow = p < floor || !floor ? p : floor + floor / 64 + 1;
    return p <= CATCHUP_QUIET_POWER || (floor && p <= 2 * floor);
}

/* Reads the stream's next frame over what the tick read (a frame dropped); 1 if it was audio. */
static int read_on(eng_leg *leg)
{
    pjmedia_frame f;
    memset(&f, 0, sizeof(f));
    f.type = PJMEDIA_FRAME_TYPE_AUDIO;
    f.buf = leg->m.in;
    f.size = (pj_size_t)leg->m.spf * 2;
    if (pjmedia_port_get_frame(leg->port, &f) != PJ_SUCCESS || f.type != PJMEDIA_FRAME_TYPE_AUDIO
            || f.size == 0)
        return 0;
    if (f.size < (pj_size_t)leg->m.spf * 2)
        memset((char *)leg->m.in + f.size, 0, leg->m.spf * 2 - f.size);
    return 1;
}

/* The playout point under jitter (issue 18). pjmedia's buffer numbers frames, not times: a read
 * that finds it empty retimes the stream a frame later for good, a packet into an empty buffer
 * skips the gap before it, and at 40+-40 ms of jitter the delay random-walks (PESQ 1.3). So
 * each leg measures how late its packets come (transit.h: arrival less RTP timestamp, against
 * the earliest of the last ~5 s) and waits for --jb-wait-pct of them (99 %), adding at most
 * --jb-delay-max-ms (60): that is its target T. D is how long after its earliest possible
 * arrival the packet read next is played (from the timestamp at the buffer's head). Once T is
 * over JITTER_ON_US the node sets the buffer's mode each tick (a pjmedia patch,
 * scripts/build-pjproject.sh): D under T, GROW (the next empty read keeps its slot: D a frame
 * longer); else HOLD (an empty read conceals its slot in place and the late packet is dropped;
 * a gap before a packet is concealed, not skipped; a packet for a slot of an empty spell over
 * SIPCONF_STEP_MS is a delay step, not a late packet: the patch gives the slots back). D
 * over T by a packet (or the head within a packet) for OVER_TICKS drops audio up to the next
 * packet's start, on a quiet frame if one comes soon (never with --jb-catchup-ms 0, like the
 * catch-up below). In order and on time (T under JITTER_OFF_US) pjmedia's own ways are the
 * better ones (with concealment in place and catch-up, below). */
static int g_delay_max_us = 70000;

enum { PLAYOUT_PJMEDIA, PLAYOUT_GROW, PLAYOUT_HOLD };
#define OVER_TICKS 10                /* D a frame over T this long: a frame dropped, */
#define OVER_FORCE_TICKS 50          /* on a quiet one if one comes within this */
#define JITTER_ON_US 10000           /* T from which the node sets the delay, */
#define JITTER_OFF_US 5000           /* and below which pjmedia does again */
void sipconf_stream_playout(pjmedia_stream *stream, int mode);
unsigned sipconf_stream_drop(pjmedia_stream *stream);
pj_bool_t sipconf_stream_head(pjmedia_stream *stream, uint32_t *ts);

void eng_set_playout(int wait_pct, int delay_max_ms)
{
    transit_set_pct((unsigned)wait_pct);
    __atomic_store_n(&g_delay_max_us, delay_max_ms * 1000, __ATOMIC_RELAXED);
}

/* A leg's playout point: D and T (us), and what dropping audio to shorten D would take. */
typedef struct {
    int64_t d_us, t_us;
    unsigned drop;      /* buffer frames to drop: up to the next packet's start, */
    int64_t cost_us;    /* and the D that takes (none from within a packet) */
    unsigned steps;     /* delay steps the transit window started again from */
} playout_point;

/* 1 with the leg's playout point when its transit is known (a guard, 50 packets seen). D: the
 * next tick reads the frame at the buffer's head (pjmedia_stream, patched), so the packet
 * starting there, or next if the head is within one, must come by then: D is how long after
 * it could have come at the earliest that is. (Taken from the newest packet, its age and
 * lateness and the audio queued behind it, as before the head is known, it swung by a packet
 * or two under heavy reordering.) A head within a packet (a 10 ms frame of a 20 ms packet
 * dropped or grown) costs a frame of delay for no wait: dropping up to the next packet's start
 * shortens the delay and keeps D; from a packet's start, a whole packet is dropped. */
static int playout(eng_leg *leg, const pjmedia_jb_state *st, playout_point *p)
{
    transit_view v;
    if (!rtpguard_transit(pjmedia_stream_get_transport(leg->stream), &v))
        return 0;
    const int64_t now = now_ns();
    uint32_t head;
    const uint32_t span = (uint32_t)((int64_t)v.packet_us * v.rate / 1000000);
    const uint32_t frame = (uint32_t)((int64_t)leg->frm_ms * v.rate / 1000);
    if (span && frame && sipconf_stream_head(leg->stream, &head)) {
        /* Signed, in timestamps: the patch gives the head as its frame's index times the
         * frame's span, off the stream's own grid by the rest of a start that is not a
         * multiple of it (RFC 3550's random start: nearly always); and a head behind the
         * newest packet (the buffer holds packets) is a negative difference, which 32-bit
         * unsigned modulo a span 2^32 is no multiple of (160, 960) made a head within a
         * packet. Both made the drop below free (cost 0) at a packet's start: a packet
         * dropped whenever D was over T, the next empty read grew it back, in a cycle (28
         * times in 12 s of speech at 5 % loss + 20+-10 ms: PESQ 2.3 against 2.75). */
        int32_t off = (int32_t)(v.newest_ts - head) % (int32_t)frame;
        head += (uint32_t)(off < 0 ? off + (int32_t)frame : off);
        int32_t in = (int32_t)(head - v.newest_ts) % (int32_t)span;
        const uint32_t within = (uint32_t)(in < 0 ? in + (int32_t)span : in);
        const uint32_t to_next = within ? span - within : span;
        p->drop = to_next / frame ? to_next / frame : 1;
        p->cost_us = within ? 0 : v.packet_us;
        const uint32_t next = within ? head + to_next : head;  /* the packet that must come */
        p->d_us = (now + MIX_FRAME_MS * 1000000LL - transit_earliest_ns(&v, next)) / 1000;
    } else {
        /* the audio queued behind the newest packet, less what of it came in the packet whose
         * start was just read (a packet of 20 ms holds two 10 ms frames) */
        const int64_t queued = (int64_t)st->size * leg->frm_ms * 1000;
        p->d_us = (now - v.newest_ns) / 1000 + v.newest_us + queued
                  - (v.packet_us > 0 ? queued % v.packet_us : 0);
        p->drop = 1;
        p->cost_us = leg->frm_ms * 1000;
    }
    const int64_t max = __atomic_load_n(&g_delay_max_us, __ATOMIC_RELAXED);
    p->t_us = v.target_us < max ? v.target_us : max;
    p->steps = v.steps;
    return 1;
}

/* Concealment in place. When a talker's packet comes too late for its tick, pjmedia conceals
 * the frame (the buffer ran empty) and plays the late packet at the next tick, and every packet
 * after it a tick late, for the rest of the call: the stream is retimed (a buffer run empty
 * also prefetches, up to --jb-max-ms, before it plays again: more retiming if that is over one
 * packet). The room's tick, reading each talker ~5 ms after its packets arrive, leaves the
 * buffer that dry, and the catch-up below never comes while such events go on. So on the
 * first frame read after an empty spell, if the buffer now keeps a whole frame back (the spell
 * ended with a late packet, not a lost one: a lost packet's successor comes in its own time
 * and leaves nothing back), the stream is read on by the ticks concealed (at most): the packets
 * that came for slots already concealed are dropped, and the next plays in its own slot. Only
 * for a hiccup in a calm stream (no late packet in the 2 s before; lost ones do not count, so
 * a lossy line keeps its timing too): under steady jitter the buffer grows, pjmedia's way, by
 * what the network needs (with a 300 ms calm window instead: -0.1 to -0.9 PESQ at 5 % loss +
 * 20+-10 ms jitter in benchmarks/quality.py). */
#define OWED_MAX_MS 60
#define CALM_TICKS 100
/* 1 if it read on (the buffer's state changed). */
static int conceal_in_place(eng_leg *leg, const pjmedia_jb_state *st)
{
    const uint64_t empty = st->empty - leg->jb_empty;  /* in the buffer's frames */
    leg->jb_empty = st->empty;
    if (empty) {
        /* a tick's read stops at the buffer's first empty frame and conceals the rest: in
         * whole ticks */
        const uint64_t ms = (uint64_t)leg->owed_ms
            + (empty * (uint64_t)leg->frm_ms + MIX_FRAME_MS - 1) / MIX_FRAME_MS * MIX_FRAME_MS;
        leg->owed_ms = ms > OWED_MAX_MS ? OWED_MAX_MS : (int)ms;
        return 0;
    }
    if (leg->calm < CALM_TICKS)
        leg->calm++;
    if (!leg->owed_ms)
        return 0;
    int owed = leg->owed_ms;
    leg->owed_ms = 0;
    if ((int)st->size * leg->frm_ms < MIX_FRAME_MS)
        return 0;  /* nothing kept back: the spell's packets were lost, not late */
    const int calm = leg->calm;
    leg->calm = 0;  /* a late packet */
    if (calm < CALM_TICKS)
        return 0;
    pjmedia_jb_state now = *st;
    int read = 0;
    for (; owed >= MIX_FRAME_MS && (int)now.size * leg->frm_ms >= MIX_FRAME_MS; owed -= MIX_FRAME_MS) {
        if (!read_on(leg))
            break;
        BUMP(leg->in_place, 1);
        read = 1;
        if (pjmedia_stream_get_stat_jbuf(leg->stream, &now) != PJ_SUCCESS)
            break;
        leg->jb_empty = now.empty;
    }
    return read;
}

/* Under jitter: the buffer's mode for the next tick, and audio dropped when D stays over T by
 * what that costs (a packet, or nothing from within one). */
static void hold_playout(eng_leg *leg, const pjmedia_jb_state *st, const playout_point *p,
                         int quiet)
{
    /* set each tick: GROW turns itself to HOLD at the empty read it grows by */
    sipconf_stream_playout(leg->stream, p->d_us >= p->t_us ? PLAYOUT_HOLD : PLAYOUT_GROW);
    if (p->d_us - p->cost_us < p->t_us) {  /* (cost_us >= 0: D under T too) */
        leg->behind = 0;
        return;
    }
    if (leg->behind < OVER_TICKS + OVER_FORCE_TICKS)
        leg->behind++;
    if (leg->behind < OVER_TICKS || st->size < p->drop
            || __atomic_load_n(&g_catchup_ticks, __ATOMIC_RELAXED) <= 0
            || (!quiet && leg->behind < OVER_TICKS + OVER_FORCE_TICKS))
        return;
    unsigned n = 0;
    while (n < p->drop && sipconf_stream_drop(leg->stream) > 0)
        n++;
    if (n)
        BUMP(leg->catchups, 1);
    leg->behind = 0;
}

/* After the tick read a leg's frame: the playout point under jitter; else concealment in
 * place, then catch-up. */
void legs_after_read(eng_leg *leg)
{
    pjmedia_jb_state st;
    if (!leg->stream || leg->frm_ms <= 0
            || pjmedia_stream_get_stat_jbuf(leg->stream, &st) != PJ_SUCCESS)
        return;
    const int quiet = leg_quiet(leg);  /* each tick: it keeps the noise floor */
    playout_point p;
    const int known = playout(leg, &st, &p);
    STORE(leg->playout_us, known ? p.d_us : -1);
    STORE(leg->target_us, known ? p.t_us : -1);
    if (known)
        STORE(leg->delay_steps, (uint64_t)p.steps);
    const int was = leg->jittery;
    const int jittery = known && p.t_us >= (was ? JITTER_OFF_US : JITTER_ON_US);
    leg->jittery = jittery;
    fec_after_read(leg, quiet, known ? p.t_us : -1);
    if (jittery) {
        hold_playout(leg, &st, &p, quiet);
        return;
    }
    if (was) {  /* back to pjmedia's ways */
        sipconf_stream_playout(leg->stream, PLAYOUT_PJMEDIA);
        leg->behind = leg->owed_ms = leg->calm = 0;
        leg->jb_empty = st.empty;
    }
    if (MIX_FRAME_MS % leg->frm_ms == 0) {  /* a tick reads whole frames of the buffer */
        if (conceal_in_place(leg, &st)
                && pjmedia_stream_get_stat_jbuf(leg->stream, &st) != PJ_SUCCESS)
            return;
    }
    const int ticks = __atomic_load_n(&g_catchup_ticks, __ATOMIC_RELAXED);
    if (ticks <= 0)
        return;
    const uint64_t events = (uint64_t)st.lost + st.empty + st.discard;
    if ((int)st.size * leg->frm_ms < MIX_FRAME_MS || events != leg->jb_events) {
        leg->behind = 0;  /* not behind, or not a clean stream: loss and jitter are the */
        leg->jb_events = events;  /* buffer's to handle (catching up there cost PESQ) */
        return;
    }
    if (++leg->behind < ticks)
        return;
    if (!quiet && leg->behind < ticks + CATCHUP_FORCE_TICKS)
        return;
    if (read_on(leg))
        BUMP(leg->catchups, 1);
    leg->behind = 0;
}

/* The tick's input hook on call legs: in-band DTMF. */
static void legs_detect_input(void *user, mix_leg *m, const int16_t *pcm, int n, int rate)
{
    (void)rate;
    eng_leg *leg = (eng_leg *)user;
    char digit = dtmf_feed(&leg->dtmf, pcm, n);
    if (digit)
        events_push(ENG_EV_DIGIT, digit, leg->id, 0);
    (void)m;
}

static void legs_release_converters(eng_leg *leg)
{
    /* Outermost first; neither destroys the port below it (DONT_DESTROY_DN). */
    if (leg->up) {
        pjmedia_resample_destroy(leg->up);
        leg->up = NULL;
    }
    if (leg->resampler) {
        pjmedia_port_destroy(leg->resampler);
        leg->resampler = NULL;
    }
    if (leg->mono) {
        pjmedia_port_destroy(leg->mono);
        leg->mono = NULL;
    }
}

int legs_player_fill(eng_player *p, int16_t *dst, int n, int add)
{
    if (!p->active || !p->pcm || p->n <= 0)
        return 0;
    int i = 0;
    while (i < n) {
        if (p->pos >= p->n) {
            if (p->loops == 0) {
                STORE(p->active, 0);  /* eng_leg_playing reads it without the lock */
                break;
            }
            if (p->loops > 0)
                p->loops--;
            p->pos = 0;
        }
        int take = p->n - p->pos;
        if (take > n - i)
            take = n - i;
        if (add) {
            pcm_add_sat(dst + i, p->pcm + p->pos, take);
        } else {
            memcpy(dst + i, p->pcm + p->pos, (size_t)take * sizeof(int16_t));
        }
        i += take;
        p->pos += take;
    }
    if (!add && i < n)
        memset(dst + i, 0, (size_t)(n - i) * sizeof(int16_t));
    return i > 0;
}

eng_leg *eng_leg_attach(void *stream, void **placeholder, int *err)
{
    pjmedia_port *sport = NULL;
    *err = 0;
    if (pjmedia_stream_get_port((pjmedia_stream *)stream, &sport) != PJ_SUCCESS || !sport) {
        *err = ENG_ERR_NO_PORT;
        return NULL;
    }
    eng_leg *leg = (eng_leg *)calloc(1, sizeof(eng_leg));
    if (!leg) {
        *err = ENG_ERR_NO_MEMORY;
        return NULL;
    }
    leg->pool = pjsua_pool_create("mixleg", 2048, 2048);
    if (!leg->pool) {
        free(leg);
        *err = ENG_ERR_NO_MEMORY;
        return NULL;
    }
    /* The mixer takes 8 or 16 kHz mono. A stream at another rate or channel count (Opus
     * negotiated at 48 kHz stereo, say) is wrapped in pjmedia's channel and rate converters,
     * so only such legs pay for conversion. */
    pjmedia_port *port = sport;
    if (PJMEDIA_PIA_CCNT(&port->info) != 1) {
        pjmedia_port *mono = NULL;
        if (pjmedia_stereo_port_create(leg->pool, port, 1, PJMEDIA_STEREO_DONT_DESTROY_DN,
                                       &mono) != PJ_SUCCESS) {
            *err = ENG_ERR_CONVERT;
            goto fail;
        }
        port = leg->mono = mono;
    }
    unsigned rate = PJMEDIA_PIA_SRATE(&port->info);
    if (rate != 8000 && rate != 16000) {
        pjmedia_port *rs = NULL;
        if (pjmedia_resample_port_create(leg->pool, port, 16000,
                                         PJMEDIA_RESAMPLE_DONT_DESTROY_DN | ENG_RS_PORT_OPTS,
                                         &rs) != PJ_SUCCESS) {
            *err = ENG_ERR_CONVERT;
            goto fail;
        }
        /* the other way (what the leg hears) ours, not the port's, so share.c can prime it;
         * without it (no memory) the port converts */
        if (PJMEDIA_PIA_SPF(&port->info) <= ENG_SHARE_MAX_SPF
                && pjmedia_resample_create(leg->pool, ENG_RS_HIGH_QUALITY, ENG_RS_LARGE_FILTER, 1,
                                           16000, rate, 16000 * MIX_FRAME_MS / 1000,
                                           &leg->up) == PJ_SUCCESS) {
            leg->below = port;
            leg->below_spf = (int)PJMEDIA_PIA_SPF(&port->info);
        }
        port = leg->resampler = rs;
        rate = 16000;
    }
    unsigned spf = PJMEDIA_PIA_SPF(&port->info);
    if (spf != rate * MIX_FRAME_MS / 1000) {
        *err = ENG_ERR_FRAME;
        goto fail;
    }
    mix_leg_init(&leg->m, (int)rate);
    leg->m.user = leg;
    leg->id = clock_new_id();
    leg->sh_slot = -1;
    leg->loss_pct = -1;
    dtmf_init(&leg->dtmf, (int)rate);
    leg->m.on_input = legs_detect_input;
    leg->m.on_input_user = leg;
    leg->stream = (pjmedia_stream *)stream;
    leg->port = port;
    pjmedia_stream_info si;
    if (pjmedia_stream_get_info(leg->stream, &si) == PJ_SUCCESS && si.param) {
        leg->frm_ms = si.param->info.frm_ptime / (si.param->info.frm_ptime_denum
                                                   ? si.param->info.frm_ptime_denum : 1);
        share_leg_init(leg, &si);
        fec_leg_init(leg, &si);
        /* The RTP clock: G.722's is 8 kHz (RFC 3551) and Opus' 48 kHz (RFC 7587), whatever
         * their sampling rate (an Opus leg at the room's 16 kHz has 16000 here: its packets'
         * lateness, measured against a clock three times too slow, capped the playout target
         * and retimed it at every loss, 30-60 ms more delay at 3-10 % loss) */
        const int g722 = si.fmt.encoding_name.slen == 4
                         && !pj_ansi_strnicmp(si.fmt.encoding_name.ptr, "G722", 4);
        const int opus = si.fmt.encoding_name.slen == 4
                         && !pj_ansi_strnicmp(si.fmt.encoding_name.ptr, "opus", 4);
        rtpguard_measure(pjmedia_stream_get_transport(leg->stream), si.rx_pt,
                         g722 ? 8000 : opus ? 48000 : si.fmt.clock_rate);
    }
    if (pjmedia_null_port_create(leg->pool, rate, 1, spf, 16, &leg->placeholder) != PJ_SUCCESS) {
        *err = ENG_ERR_NO_MEMORY;
        goto fail;
    }
    *placeholder = leg->placeholder;
    return leg;

fail:
    legs_release_converters(leg);
    pj_pool_release(leg->pool);
    free(leg);
    return NULL;
}

eng_leg *legs_new_bare(int rate)
{
    if (rate != 8000 && rate != 16000)
        return NULL;
    eng_leg *leg = (eng_leg *)calloc(1, sizeof(eng_leg));
    if (!leg)
        return NULL;
    mix_leg_init(&leg->m, rate);
    leg->m.user = leg;
    leg->id = clock_new_id();
    return leg;
}

eng_leg *eng_source_create(int rate)
{
    eng_leg *leg = legs_new_bare(rate);
    if (leg)
        leg->m.flags = MIX_LEG_SOURCE;
    return leg;
}

void eng_leg_play(eng_leg *leg, const int16_t *pcm, int n, int loops)
{
    eng_room *r = leg->room;
    if (r) pthread_mutex_lock(&r->lock);
    leg->player.pcm = pcm;
    leg->player.n = n;
    leg->player.pos = 0;
    leg->player.loops = loops < 0 ? -1 : (loops > 0 ? loops - 1 : 0);
    STORE(leg->player.active, n > 0);
    if (r) pthread_mutex_unlock(&r->lock);
}

void eng_leg_stop(eng_leg *leg)
{
    eng_room *r = leg->room;
    if (r) pthread_mutex_lock(&r->lock);
    STORE(leg->player.active, 0);
    leg->player.pcm = NULL;
    if (r) pthread_mutex_unlock(&r->lock);
}

int eng_leg_playing(eng_leg *leg)
{
    return LOAD(leg->player.active);
}

int eng_leg_rate(eng_leg *leg)
{
    return leg->m.rate;
}

uint64_t eng_leg_id(eng_leg *leg)
{
    return leg->id;
}

void eng_leg_free(eng_leg *leg)
{
    if (!leg)
        return;
    eng_leg_leave(leg);
    pipes_leg_gone(leg);
    if (leg->denoise)
        speex_preprocess_state_destroy((SpeexPreprocessState *)leg->denoise);
    legs_release_converters(leg);
    leg->player.active = 0;
    /* The bridge took a reference on the placeholder's group lock and dropped it when the
     * port was removed, before the stream was destroyed; only our pool is left to release. */
    if (leg->pool)
        pj_pool_release(leg->pool);
    free(leg);
}

void eng_leg_set_flags(eng_leg *leg, int flags)
{
    void *fresh = NULL, *old = NULL;
    if ((flags & MIX_LEG_GATE) && leg->port && !leg->denoise)
        fresh = legs_denoiser(leg->m.rate, leg->m.spf);  /* made outside the room lock */
    eng_room *r = leg->room;
    if (r) pthread_mutex_lock(&r->lock);
    leg->m.flags = flags;
    if (fresh)
        leg->denoise = fresh;
    else if (!(flags & MIX_LEG_GATE)) {
        old = leg->denoise;
        leg->denoise = NULL;
    }
    if (r) pthread_mutex_unlock(&r->lock);
    if (old)
        speex_preprocess_state_destroy((SpeexPreprocessState *)old);
}

void eng_leg_set_gain(eng_leg *leg, int gain_in, int gain_out)
{
    eng_room *r = leg->room;
    if (r) pthread_mutex_lock(&r->lock);
    leg->m.gain_in = gain_in;
    leg->m.gain_out = gain_out;
    if (r) pthread_mutex_unlock(&r->lock);
}

int eng_leg_relate(eng_leg *listener, eng_leg *src, int hear)
{
    eng_room *r = listener->room;
    if (!r || src->room != r)
        return -1;
    pthread_mutex_lock(&r->lock);
    int rc = mix_room_relate(&r->m, &listener->m, &src->m, hear);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void eng_leg_get_stats(eng_leg *leg, eng_leg_stats *st)
{
    /* No lock: the tick publishes these with relaxed stores (a stats reader never waits for a
     * clock thread, whatever that thread is blocked on). */
    st->rate = leg->m.rate;
    st->rx_audio = LOAD(leg->rx_audio);
    st->rx_empty = LOAD(leg->rx_empty);
    st->catchups = LOAD(leg->catchups);
    st->playout_us = LOAD(leg->playout_us);
    st->target_us = LOAD(leg->target_us);
    st->delay_steps = LOAD(leg->delay_steps);
    st->in_place = LOAD(leg->in_place);
    st->tx = LOAD(leg->tx);
    st->shared = LOAD(leg->shared);
    st->errors = LOAD(leg->errors);
    st->energy = LOAD(leg->energy);
    st->talking = LOAD(leg->talking);
    st->fec_pct = LOAD(leg->loss_pct);
    st->fec_frames = LOAD(leg->fec_frames);
}
