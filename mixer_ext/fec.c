/* In-band FEC on what the node sends: each Opus encoder codes for the loss its peers report.
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

#define FEC_POLL_TICKS 50   /* a leg looks for a new report once a second */
#define FEC_MIN_PCT 3       /* under this, none */
#define FEC_MAX_PCT 30      /* coding for more costs the voice more than it saves */

void fec_leg_init(eng_leg *leg, const pjmedia_stream_info *si)
{
    leg->loss_pct = -1;
    if (!(si->dir & PJMEDIA_DIR_ENCODING) || si->fmt.encoding_name.slen != 4
            || pj_ansi_strnicmp(si->fmt.encoding_name.ptr, "opus", 4))
        return;
    leg->fec_codec = sipconf_stream_codec(leg->stream);
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
