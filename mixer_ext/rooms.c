/* rooms.c: rooms. Create (placed on the clock serving the fewest rooms, clock_add_room) and
 * destroy, legs joining and leaving, the room tick that a clock thread runs every 20 ms (read
 * each leg's decoded frame or its player, mix N-1, update the floor, write each call leg's
 * frame to its encoder), and the room's lock-free stats.
 *
 * Locking: a room's lock guards its mix_room (legs, flags, gains, players, tap hook) and is held
 * by the clock thread for the whole room tick; the tick pushes events (g_ev_lock) and feeds
 * the tap (its lock) while holding it. Create/destroy take g_lock, then a clock's lock (in
 * clock.c), never with a room lock held. The tick's counters and r->rate/r->nlegs are written
 * with relaxed stores and read by eng_room_get_stats without any lock.
 */
#include "engine_int.h"
#include "rtpguard.h"

#include <stdlib.h>
#include <string.h>

static int g_align = 1;  /* --tick-align */

void eng_set_tick_align(int on)
{
    __atomic_store_n(&g_align, on ? 1 : 0, __ATOMIC_RELAXED);
}

/* One tick's measure into the alignment window, kept in order (insertion; 25 at most); 1 when
 * the window is full. */
static int align_push(eng_room *r, int64_t v)
{
    int i = r->align_n++;
    while (i > 0 && r->align_ages[i - 1] > v) {
        r->align_ages[i] = r->align_ages[i - 1];
        i--;
    }
    r->align_ages[i] = v;
    return r->align_n >= ENG_ALIGN_TICKS;
}

/* Under jitter (the talker's playout set by the node, legs.c) its packets' arrival says nothing
 * steady; its wait does: D, how long after its earliest possible arrival the packet read next
 * is played, is the tick's phase against the talker's packet grid plus whole frames, so the
 * buffer (grown by a frame at a late packet, a packet dropped when D stays a packet over T)
 * keeps D anywhere in T..T+20 ms, by that phase, for the whole call: up to 20 ms more delay
 * than the wait asks for (measured at 5 % loss + 40+-40 ms: D 61-75 ms against T 60). So the
 * tick moves, once D - T has held for ENG_ALIGN_TICKS ticks (no frame grown or dropped in
 * them) outside 0..ENG_ALIGN_JB_HIGH_NS, to read the talker at T + ENG_ALIGN_JB_MARGIN_NS
 * (at most one move per ENG_ALIGN_HOLD_NS, as below). Sooner means packets late by more than
 * that are concealed: what T already chose (measured: 40+-40 ms, D 70-75 against T 70). */
static void rooms_align_jittery(eng_room *r, eng_leg *leg, int64_t t0)
{
    const int64_t d = LOAD(leg->playout_us), t = LOAD(leg->target_us);
    if (d < 0 || t < 0) {
        r->align_n = 0;
        return;
    }
    if (!align_push(r, (d - t) * 1000))  /* ns */
        return;
    r->align_n = 0;
    const int64_t low = r->align_ages[0], high = r->align_ages[ENG_ALIGN_TICKS - 1];
    if (high - low > ENG_ALIGN_SPREAD_NS || t0 - r->align_at_ns < ENG_ALIGN_HOLD_NS
            || (low >= 0 && low <= ENG_ALIGN_JB_HIGH_NS)
            || low <= -ENG_TICK_NS || low >= ENG_TICK_NS)
        return;
    const int64_t ms = 1000000LL;
    int64_t shift = low - ENG_ALIGN_JB_MARGIN_NS;
    shift = (shift >= 0 ? shift + ms / 2 : shift - ms / 2) / ms * ms;
    r->next_ns -= shift;  /* sooner: D shorter by as much */
    r->align_at_ns = t0;
    BUMP(r->phase_moves, 1);
}

/* Tick alignment. A packet that arrives just after the tick read its leg's jitter buffer waits
 * a whole tick: node-added delay ran from ~5 to ~26 ms with the packets' phase against the
 * tick. So the room's talker (its floor holder) is watched: the age of its latest packet when
 * the tick reads, over ENG_ALIGN_TICKS ticks; when those ages are steady (within
 * ENG_ALIGN_SPREAD_NS, a late packet or two aside: no real jitter) and the youngest is not
 * ENG_ALIGN_LOW_NS..HIGH_NS, the room's schedule moves (once, by under a tick) so the tick
 * reads the talker's packets ENG_ALIGN_MARGIN_NS after they arrive. The next tick comes that
 * much sooner or later; its frame is there either way (sooner: still after the next packet's
 * arrival plus the margin). */
static void rooms_align(eng_room *r, int64_t t0)
{
    eng_leg *leg = (eng_leg *)r->floor.holder;
    if (!__atomic_load_n(&g_align, __ATOMIC_RELAXED) || !leg || !leg->tp || !leg->m.has_audio
            || leg != r->align_leg || leg->jittery != r->align_jittery) {
        r->align_leg = leg;
        r->align_jittery = leg ? leg->jittery : 0;
        r->align_n = r->align_skipped = 0;
        return;
    }
    if (leg->jittery) {
        rooms_align_jittery(r, leg, t0);
        return;
    }
    const int64_t raw = t0 - rtpguard_last_rx_ns(leg->tp);
    if (raw < -ENG_TICK_NS / 4 || raw >= ENG_TICK_NS * 5 / 4) {
        /* no packet in the last tick and a quarter (a packet just after the read is the
         * straddling phase below): a late one (skipped), or not sending (DTX, a pause) */
        if (++r->align_skipped > ENG_ALIGN_OUTLIERS)
            r->align_n = r->align_skipped = 0;
        return;
    }
    int64_t age = raw;
    if (age > ENG_TICK_NS * 3 / 4)  /* read just before a packet: it waits a whole tick */
        age -= ENG_TICK_NS;         /* (counted as read just after it: packets that straddle
                                     * the read are one steady phase, not a spread) */
    if (!align_push(r, age))
        return;
    r->align_n = r->align_skipped = 0;
    const int64_t youngest_age = r->align_ages[ENG_ALIGN_OUTLIERS];
    const int64_t oldest_age = r->align_ages[ENG_ALIGN_TICKS - 1 - ENG_ALIGN_OUTLIERS];
    if (oldest_age - youngest_age > ENG_ALIGN_SPREAD_NS || t0 - r->align_at_ns < ENG_ALIGN_HOLD_NS
            || (youngest_age >= ENG_ALIGN_LOW_NS && youngest_age <= ENG_ALIGN_HIGH_NS))
        return;
    /* The next tick reads the packet after the one read now (the youngest age seen, on this
     * tick's side of the wrap): none skipped, none left behind. */
    const int64_t youngest = raw - (age - youngest_age);
    /* In whole ms: the rooms of a clock keep to its 1 ms grid (at most 20 wake-ups a tick,
     * however many rooms). */
    const int64_t ms = 1000000LL;
    int64_t shift = youngest - ENG_ALIGN_MARGIN_NS;
    shift = (shift >= 0 ? shift + ms / 2 : shift - ms / 2) / ms * ms;
    r->next_ns -= shift;  /* the clock adds the tick after */
    r->align_at_ns = t0;
    BUMP(r->phase_moves, 1);
}

uint64_t rooms_tick(eng_room *r)
{
    int64_t t0 = now_ns();
    pthread_mutex_lock(&r->lock);
    mix_room *m = &r->m;
    for (int i = 0; i < m->nlegs; i++) {
        eng_leg *leg = (eng_leg *)m->legs[i];
        if (leg->agent) {
            /* an agent: what its pipe brought down is its voice (silence while none) */
            leg->m.has_audio = leg->pipe && pipes_down(leg->pipe, leg->m.in, leg->m.spf, 0);
            continue;
        }
        if (!leg->port) {
            /* a room sound: its player is its voice */
            leg->m.has_audio = legs_player_fill(&leg->player, leg->m.in, leg->m.spf, 0);
            continue;
        }
        pjmedia_frame f;
        memset(&f, 0, sizeof(f));
        f.type = PJMEDIA_FRAME_TYPE_AUDIO;
        f.buf = leg->m.in;
        f.size = (pj_size_t)leg->m.spf * 2;
        leg->m.has_audio = 0;
        if (pjmedia_port_get_frame(leg->port, &f) != PJ_SUCCESS) {
            BUMP(leg->errors, 1);
        } else if (f.type == PJMEDIA_FRAME_TYPE_AUDIO && f.size > 0) {
            if (f.size < (pj_size_t)leg->m.spf * 2)
                memset((char *)leg->m.in + f.size, 0, leg->m.spf * 2 - f.size);
            leg->m.has_audio = 1;
            BUMP(leg->rx_audio, 1);
            legs_after_read(leg);
            legs_denoise(leg);
        } else {
            BUMP(leg->rx_empty, 1);
        }
        if (leg->pipe)  /* a <Stream>: what the caller says */
            pipes_up(leg->pipe, ENG_PIPE_IN, leg->m.has_audio ? leg->m.in : NULL, leg->m.spf);
    }
    rooms_align(r, t0);
    mix_room_tick(m);
    unsigned char send[MIX_MAX_LEGS];
    if (floor_update(&r->floor, m))
        events_push(ENG_EV_FLOOR, 0, ((eng_leg *)r->floor.holder)->id, r->id);
    for (int i = 0; i < m->nlegs; i++) {
        eng_leg *leg = (eng_leg *)m->legs[i];
        STORE(leg->energy, leg->m.energy);
        if (leg->talking != leg->m.speaking && !(leg->m.flags & MIX_LEG_SOURCE))
            events_push(ENG_EV_TALK, leg->m.speaking ? 'T' : 'S', leg->id, r->id);
        STORE(leg->talking, leg->m.speaking);
        if (leg->agent && leg->pipe)  /* what the agent hears */
            pipes_up(leg->pipe, ENG_PIPE_OUT, leg->m.out, leg->m.spf);
        send[i] = !(leg->m.flags & MIX_LEG_SOURCE) && leg->port;
        if (!send[i])
            continue;
        legs_player_fill(&leg->player, leg->m.out, leg->m.spf, 1);  /* private sound, if any */
        if (leg->pipe) {  /* a <Stream>: its app's audio to this caller alone, and the whole */
            pipes_down(leg->pipe, leg->m.out, leg->m.spf, 1);
            pipes_up(leg->pipe, ENG_PIPE_OUT, leg->m.out, leg->m.spf);
        }
    }
    fec_tick(r);  /* the loss each Opus encoder codes for (fec.c) */
    share_tick(r, send);  /* listeners hearing one frame: one encode (share.c) */
    for (int i = 0; i < m->nlegs; i++) {
        eng_leg *leg = (eng_leg *)m->legs[i];
        pj_timestamp ts = leg->ts;
        leg->ts.u64 += (pj_uint64_t)leg->m.spf;  /* the stream's clock runs on when shared */
        if (!send[i])
            continue;
        pjmedia_frame f;
        memset(&f, 0, sizeof(f));
        f.type = PJMEDIA_FRAME_TYPE_AUDIO;
        f.buf = leg->m.out;
        f.size = (pj_size_t)leg->m.spf * 2;
        f.timestamp = ts;
        pjmedia_port *to = leg->port;
        int16_t up[ENG_SHARE_MAX_SPF];
        if (leg->up) {  /* to the stream's rate ourselves (share.c primes this resampler) */
            pjmedia_resample_run(leg->up, leg->m.out, up);
            f.buf = up;
            f.size = (pj_size_t)leg->below_spf * 2;
            to = leg->below;
        }
        const unsigned sent = rtpguard_sent(leg->tp);
        if (pjmedia_port_put_frame(to, &f) != PJ_SUCCESS) {
            BUMP(leg->errors, 1);
        } else {
            BUMP(leg->tx, 1);
            if (rtpguard_sent(leg->tp) == sent)  /* DTX: the encoder had nothing to send */
                rtpguard_skip(leg->tp, 0);
        }
    }
    pthread_mutex_unlock(&r->lock);
    uint64_t dt = (uint64_t)(now_ns() - t0);
    BUMP(r->ticks, 1);
    BUMP(r->tick_ns_total, dt);
    if (dt > r->tick_ns_max)
        STORE(r->tick_ns_max, dt);
    return dt;
}

uint64_t eng_room_id(eng_room *room)
{
    return room->id;
}

eng_room *eng_room_create(void)
{
    eng_room *r = (eng_room *)calloc(1, sizeof(eng_room));
    if (!r)
        return NULL;
    mix_room_init(&r->m);
    floor_init(&r->floor);
    r->rate = r->m.rate;
    r->id = clock_new_id();
    pthread_mutex_init(&r->lock, NULL);
    if (clock_add_room(r) != 0) {
        /* no clock running, or the least busy one is full */
        pthread_mutex_destroy(&r->lock);
        free(r);
        return NULL;
    }
    return r;
}

void eng_room_destroy(eng_room *r)
{
    if (!r)
        return;
    clock_remove_room(r);
    /* No clock can reach the room now; a tap still on it is let go. */
    taps_room_gone(r);
    share_room_gone(r);
    for (int i = 0; i < r->m.nlegs; i++)
        ((eng_leg *)r->m.legs[i])->room = NULL;
    pthread_mutex_destroy(&r->lock);
    free(r);
}

int eng_room_add(eng_room *r, eng_leg *leg)
{
    if (leg->room == r)
        return 0;
    eng_leg_leave(leg);
    pthread_mutex_lock(&r->lock);
    leg->sh_room = NULL;  /* its shared encoder is found again in this room, */
    leg->quiet_ticks = 0;  /* after settling on its own encoder again (share.c) */
    leg->was_shared = 0;
    int rc = mix_room_add(&r->m, &leg->m);
    if (rc == 0)
        leg->room = r;
    STORE(r->rate, r->m.rate);
    STORE(r->nlegs, r->m.nlegs);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void eng_leg_leave(eng_leg *leg)
{
    eng_room *r = leg->room;
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    mix_room_remove(&r->m, &leg->m);
    floor_forget(&r->floor, &leg->m);
    leg->room = NULL;
    STORE(r->rate, r->m.rate);
    STORE(r->nlegs, r->m.nlegs);
    pthread_mutex_unlock(&r->lock);
}

/* No lock: the room's lock is held by a clock thread for its whole tick. Each counter is read
 * atomically; a snapshot may mix values from two ticks, which stats can live with. */
void eng_room_get_stats(eng_room *r, eng_room_stats *st)
{
    st->rate = LOAD(r->rate);
    st->nlegs = LOAD(r->nlegs);
    st->ticks = LOAD(r->ticks);
    st->tick_ns_total = LOAD(r->tick_ns_total);
    st->tick_ns_max = LOAD(r->tick_ns_max);
    st->phase_moves = LOAD(r->phase_moves);
}
