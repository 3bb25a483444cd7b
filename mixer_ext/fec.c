/* In-band FEC both ways. Sending: each Opus encoder codes for the loss its peers report.
 * Receiving: each Opus packet decoded at once, the FEC used from the packet the jitter buffer
 * holds next, or from a frame the decoder holds (fec_after_read, below).
 *
 * libopus codes a coarse copy of each frame into the next packet (SILK's LBRR) only when told
 * to expect loss, and as much as it is told; the bits come out of the frame's own. pjmedia
 * tells it once, at open (5 %). Here each Opus leg's expected loss follows the receiver
 * reports its peer sends (RTCP RR, every ~5 s): the packets the peer lost between two reports
 * over those the leg sent. Up at once to what a report shows, down by half a report, and
 * under FEC_MIN_PCT to none (the codec's concealment covers a packet lost now and then), so a
 * clean line soon codes no FEC (every bit to the voice) and a lossy one is covered from its
 * first report on. A room's shared encoder (share.c) codes for the worst of the legs on it.
 *
 * Runs on the room's clock thread, under the room's lock: pjmedia's statistics are a plain
 * copy, the encoder's mutex is pjmedia's own (no Python, nothing that waits on it).
 */
#include "engine_int.h"

#include <string.h>

/* pjproject as scripts/build-pjproject.sh patches it (PJ_EINVAL for any other codec). */
pj_status_t sipconf_opus_set_loss(pjmedia_codec *codec, unsigned pct);
pjmedia_codec *sipconf_stream_codec(pjmedia_stream *stream);
pj_status_t sipconf_opus_set_direct(pjmedia_codec *codec, int direct);
pj_status_t sipconf_opus_dec_stats(pjmedia_codec *codec, int *lbrr_age, unsigned *fec_frames,
                                   int *direct);
void sipconf_opus_next(pjmedia_codec *codec, const void *buf, unsigned size);
extern void (*sipconf_next_hook)(pjmedia_codec *, const void *, unsigned);

#define FEC_POLL_TICKS 50   /* a leg looks for a new report once a second */
#define FEC_MIN_PCT 3       /* under this, none */
#define FEC_MAX_PCT 30      /* coding for more costs the voice more than it saves */

#define HELD_LBRR_PACKETS 50     /* 50 speech packets (1 s) without FEC: the peer codes none */
#define HELD_BELOW_US 35000      /* a playout target under this: its buffer seldom holds the */
#define DIRECT_FROM_US 45000     /* next packet when one is lost; from this on it mostly does */
#define SWITCH_FORCE_TICKS 50    /* a switch on a quiet frame if one comes within 1 s */

static int g_direct;  /* --opus-decoding direct */

void fec_set_decoding(int direct)
{
    __atomic_store_n(&g_direct, direct != 0, __ATOMIC_RELAXED);
}

void fec_leg_init(eng_leg *leg, const pjmedia_stream_info *si)
{
    leg->loss_pct = -1;
    if (si->fmt.encoding_name.slen != 4 || pj_ansi_strnicmp(si->fmt.encoding_name.ptr, "opus", 4))
        return;
    if (si->dir & PJMEDIA_DIR_ENCODING)
        leg->fec_codec = sipconf_stream_codec(leg->stream);
    if (si->dir & PJMEDIA_DIR_DECODING) {
        leg->dec_codec = sipconf_stream_codec(leg->stream);
        leg->dec_held = 1;  /* as every decoder opens */
        __atomic_store_n(&sipconf_next_hook, sipconf_opus_next, __ATOMIC_RELAXED);
    }
}

/* Receiving (scripts/pjproject/opus_direct.c). pjmedia decodes each Opus packet a frame late,
 * holding it for the FEC of the next: 20 ms on every Opus leg, the price of using the FEC of
 * every single loss. Decoding at once, a lost frame is rebuilt from the FEC of the packet the
 * jitter buffer holds next, if it holds it: under 40+-40 ms of jitter (a 60 ms playout target)
 * the FEC of all 30 lost packets was used so, under 20+-10 ms (21 ms) that of 2 of 28, on a
 * clean line (a few ms) of none. So a decoder opens pjmedia's way, and decodes at once when
 * the frame it holds buys nothing: its peer sent a second of speech without FEC (most SIP
 * phones and softphones), or the leg's target is long. It goes back to holding a frame when
 * both change. (A peer codes FEC because it expects loss, WebRTC from the receiver reports it
 * gets; opening direct and holding once FEC came scored 0.03-0.17 PESQ under pjmedia's way at
 * 3 % and 10 % loss in each of 6 repetitions, same seeds, so a decoder holds until a peer
 * shows it codes none.)
 * Each switch costs a frame (dropped on the way to direct, concealed on the way back), on a
 * quiet one if one comes within a second. Called after each read, on the room's clock thread;
 * target_us -1: not known yet. */
void fec_after_read(eng_leg *leg, int quiet, int64_t target_us)
{
    int lbrr_age, direct;
    unsigned frames;
    if (!leg->dec_codec
            || sipconf_opus_dec_stats(leg->dec_codec, &lbrr_age, &frames, &direct) != PJ_SUCCESS)
        return;
    STORE(leg->fec_frames, frames);
    if (!__atomic_load_n(&g_direct, __ATOMIC_RELAXED))
        return;  /* --opus-decoding held: pjmedia's way throughout */
    const int64_t t = target_us < 0 ? 0 : target_us;
    const int held = lbrr_age < HELD_LBRR_PACKETS
                     && t < (leg->dec_held ? DIRECT_FROM_US : HELD_BELOW_US);
    if (held == leg->dec_held) {
        leg->dec_switch_ticks = 0;
        return;
    }
    if (!quiet && ++leg->dec_switch_ticks < SWITCH_FORCE_TICKS)
        return;
    if (sipconf_opus_set_direct(leg->dec_codec, !held) == PJ_SUCCESS)
        leg->dec_held = held;
    leg->dec_switch_ticks = 0;
}

/* The loss (%) a new report shows since the one before, or -1 if none came. */
static int fec_reported(eng_leg *leg)
{
    pjmedia_rtcp_stat st;
    if (pjmedia_stream_get_stat(leg->stream, &st) != PJ_SUCCESS
            || st.tx.update_cnt == leg->rr_count)
        return -1;
    uint64_t sent = LOAD(leg->tx);
    uint64_t lost = st.tx.loss >= leg->rr_lost ? st.tx.loss - leg->rr_lost : 0;
    uint64_t span = sent - leg->rr_sent;
    leg->rr_count = st.tx.update_cnt;
    leg->rr_lost = st.tx.loss;
    leg->rr_sent = sent;
    if (span == 0)
        return -1;
    uint64_t pct = (100 * lost + span / 2) / span;
    return pct > FEC_MAX_PCT ? FEC_MAX_PCT : (int)pct;
}

void fec_tick(eng_room *r)
{
    mix_room *m = &r->m;
    for (int i = 0; i < m->nlegs; i++) {
        eng_leg *leg = (eng_leg *)m->legs[i];
        if (!leg->fec_codec || (r->ticks + (uint64_t)i) % FEC_POLL_TICKS)
            continue;
        int pct = fec_reported(leg);
        if (pct < 0)
            continue;
        int est = leg->loss_pct < 0 || pct >= leg->loss_pct ? pct : (leg->loss_pct + pct) / 2;
        if (est < FEC_MIN_PCT)
            est = 0;
        if (est != leg->loss_pct && sipconf_opus_set_loss(leg->fec_codec, (unsigned)est)
                                        == PJ_SUCCESS)
            STORE(leg->loss_pct, est);
    }
}

void fec_own_again(eng_leg *leg)
{
    int pct = LOAD(leg->loss_pct);
    if (leg->fec_codec && pct >= 0)
        sipconf_opus_set_loss(leg->fec_codec, (unsigned)pct);
}

int fec_shared(pjmedia_codec *codec, int now, int want)
{
    if (want >= 0 && want != now && sipconf_opus_set_loss(codec, (unsigned)want) == PJ_SUCCESS)
        return want;
    return now;
}
