/* share.c: one encode per shared mix (issue 19).
 *
 * In a room most members talk little: each tick, every call leg that contributes nothing (a
 * listener, muted, gated silent) hears the same frame, the room's whole mix. Encoding it once
 * per encoder configuration (codec, its PCM rate, bitrates, fmtp: share_same) and sending that
 * payload on each of those legs, as the next packet of the leg's own RTP stream (its SSRC,
 * sequence numbers and timestamps: rtpguard_send_shared), saves an encode per listener; for
 * Opus the encode is most of a leg's cost. A talker hears the mix less itself and keeps its
 * own encoder.
 *
 * Who shares is decided per tick (hears_whole_mix): a leg that adds nothing to the mix, or only
 * what the talker detection calls silence, and hears nothing of its own (private sound,
 * coaching, a gain, a deaf waiting member) is sent the room's whole mix (mix_room_full), encoded
 * once. A leg with a <Stream> pipe, digits being sent (eng_leg_own_encoder), another frame size
 * or channel count, or no guard transport (rtpguard.c) always encodes its own.
 *
 * The switch. The peer's decoder must not see packets of another encoder state, or Opus' inter-
 * frame prediction is wrong for ~300 ms (measured: the tone a listener hears had its residual
 * at -7 dB for a frame and under -30 dB only after 15 frames). So a leg going back to its own
 * encoder (it starts talking) continues the shared encoder: its Opus state copied
 * (sipconf_opus_copy_encoder), its resampler primed with the shared one's last frame
 * (share_resume_own). A leg going to the shared encoder cannot be given the peer's state (the
 * shared one serves others): it codes the whole mix on its own encoder for SHARE_SETTLE ticks
 * and changes over in a pause of the mix (SHARE_QUIET_TICKS), or after SHARE_WAIT. G.711 has no
 * state and changes over at once; G.722 is treated like Opus. Measured (worst frame of a tone
 * through 3 switches each way, against a node that never shares): -40.3 vs -40.6 dB,
 * tests/e2e/test_e2e_shared_encoding.py.
 *
 * Runs on the room's clock thread under the room's lock, no Python; an encoder is made (pjmedia's
 * codec manager, a pool) the first tick a configuration needs one, at most ENG_SHARE_CONFIGS a
 * room, and released with the room. */
#include "engine_int.h"
#include "rtpguard.h"

#include <pjsua-lib/pjsua.h>

#include <stdlib.h>
#include <string.h>

static int g_share = 1;

#define SHARE_QUIET_MEANSQ 3397u    /* -55 dBFS as a mean square: (32768 * 10^(-55/20))^2 */
/* Ticks a leg hears the whole mix, still on its own encoder, before it shares: its encoder then
 * has coded what the shared one codes long enough for their states (and so the peer decoder's)
 * to agree, and a new leg's encoder is past its start-up. */
#define SHARE_SETTLE 25
/* A leg goes from its own encoder to the shared one only after the whole mix has been quiet
 * (under -50 dBFS) for SHARE_QUIET_TICKS: Opus' inter-frame prediction then rests at the same
 * floor in both encoders, so the peer's decoder, still following the leg's own encoder, finds
 * the shared one where it expects it (measured: at a switch amid a tone the residual stayed at
 * -25 dB for 10 frames; in a pause it is gone by the time anyone speaks). */
#define SHARE_MIX_QUIET 10737u  /* -50 dBFS as a mean square */
#define SHARE_QUIET_TICKS 5
/* In a room that never pauses, a quiet leg goes over anyway after SHARE_WAIT ticks, its state
 * having followed the shared one's input all along (measured: a residual of about -25 dB that
 * fades within ~10 frames, against -43 dB steady). */
#define SHARE_WAIT 100

static int energy_below(const int16_t *pcm, int n, unsigned mean_square)
{
    uint64_t e = 0;
    for (int i = 0; i < n; i++)
        e += (uint64_t)((int32_t)pcm[i] * pcm[i]);
    return e < (uint64_t)n * mean_square;
}

/* pjproject as scripts/build-pjproject.sh patches it: a stream's codec; one Opus encoder's state
 * copied into another (PJ_EINVAL for any other codec). */
pjmedia_codec *sipconf_stream_codec(pjmedia_stream *stream);
pj_status_t sipconf_opus_copy_encoder(pjmedia_codec *dst, pjmedia_codec *src);

void eng_set_shared_encoding(int on)
{
    STORE(g_share, on ? 1 : 0);
}

struct eng_shared {
    pj_pool_t *pool;
    pjmedia_codec *codec;
    pjmedia_codec_info info;
    pjmedia_codec_param *param;
    pjmedia_resample *rs;       /* the mixer's rate to the codec's, when they differ */
    int enc_spf;                /* samples a frame at the codec's rate */
    int mix_spf;                /* and at the mixer's */
    pj_uint64_t ts;
    int failed;                 /* could not be made: its legs encode their own */
    int16_t last[MIX_MAX_SPF];  /* the frame it last coded, at the mixer's rate */
    int quiet_ticks;            /* ticks in a row that frame was quiet (SHARE_MIX_QUIET) */
    int stateless;              /* G.711: any frame codes alone, a switch is always seamless */
    int loss_pct;               /* the loss it codes for: its legs' worst (fec.c), -1: unset */
};

/* A leg back on its own encoder continues the shared one: its Opus state copied (the peer's
 * decoder has been following the shared encoder) and its resampler primed with the frame the
 * shared one last coded, so its input runs on from the shared input without a seam. */
static void share_resume_own(eng_leg *leg, struct eng_shared *s)
{
    int16_t scratch[ENG_SHARE_MAX_SPF];
    sipconf_opus_copy_encoder(leg->codec, s->codec);
    fec_own_again(leg);  /* the copy brought the shared encoder's expected loss */
    if (leg->up)
        pjmedia_resample_run(leg->up, s->last, scratch);
}

/* At attach (SIP thread): a leg whose stream can take shared payloads keeps a copy of its
 * encoder configuration; others never share. */
void share_leg_init(eng_leg *leg, const pjmedia_stream_info *si)
{
    const pjmedia_codec_param *p = si->param;
    /* a stream that sends (not held: a recvonly stream's own frames go nowhere, and neither
     * may a shared payload), one packet a tick: G.711 and G.722 code 2 x 10 ms frames a
     * packet, Opus 1 x 20 ms */
    if (!p || !(si->dir & PJMEDIA_DIR_ENCODING) || p->info.channel_cnt != 1 || leg->mono || si->fmt.encoding_name.slen <= 0
            || si->fmt.encoding_name.slen >= (pj_ssize_t)sizeof(leg->sh_name)
            || p->info.frm_ptime * p->setting.frm_per_pkt
                   != MIX_FRAME_MS * (p->info.frm_ptime_denum ? p->info.frm_ptime_denum : 1)
            || p->info.clock_rate * MIX_FRAME_MS / 1000 > ENG_SHARE_MAX_SPF)
        return;
    pjmedia_transport *tp = pjmedia_stream_get_transport(leg->stream);
    if (!tp)
        return;
    leg->sh_param = pjmedia_codec_param_clone(leg->pool, p);
    if (!leg->sh_param)
        return;
    memcpy(leg->sh_name, si->fmt.encoding_name.ptr, (size_t)si->fmt.encoding_name.slen);
    leg->sh_name[si->fmt.encoding_name.slen] = 0;
    leg->sh_info = si->fmt;
    leg->sh_info.encoding_name = pj_str(leg->sh_name);
    leg->tp = tp;
    leg->codec = sipconf_stream_codec(leg->stream);
}

void eng_leg_own_encoder(eng_leg *leg, int ms)
{
    STORE(leg->own_until_ns, now_ns() + (int64_t)ms * 1000000);
}

static int same_fmtp(const pjmedia_codec_fmtp *a, const pjmedia_codec_fmtp *b)
{
    if (a->cnt != b->cnt)
        return 0;
    for (unsigned i = 0; i < a->cnt; i++)
        if (pj_stricmp(&a->param[i].name, &b->param[i].name)
                || pj_strcmp(&a->param[i].val, &b->param[i].val))
            return 0;
    return 1;
}

/* Two encoder configurations that turn one frame into one payload. */
static int share_same(const pjmedia_codec_info *ai, const pjmedia_codec_param *a,
                      const pjmedia_codec_info *bi, const pjmedia_codec_param *b)
{
    return !pj_stricmp(&ai->encoding_name, &bi->encoding_name)
        && ai->clock_rate == bi->clock_rate && ai->channel_cnt == bi->channel_cnt
        && a->info.clock_rate == b->info.clock_rate
        && a->info.frm_ptime == b->info.frm_ptime && a->setting.frm_per_pkt == b->setting.frm_per_pkt
        && a->info.avg_bps == b->info.avg_bps && a->info.max_bps == b->info.max_bps
        && a->info.pcm_bits_per_sample == b->info.pcm_bits_per_sample
        && a->setting.vad == b->setting.vad && a->setting.cng == b->setting.cng
        && a->setting.penh == b->setting.penh && a->setting.plc == b->setting.plc
        && same_fmtp(&a->setting.enc_fmtp, &b->setting.enc_fmtp)
        && same_fmtp(&a->setting.dec_fmtp, &b->setting.dec_fmtp);
}

static void shared_free(struct eng_shared *s)
{
    if (s->codec) {
        pjmedia_codec_close(s->codec);
        pjmedia_codec_mgr_dealloc_codec(pjmedia_endpt_get_codec_mgr(pjsua_get_pjmedia_endpt()),
                                        s->codec);
    }
    if (s->rs)
        pjmedia_resample_destroy(s->rs);
    pj_pool_release(s->pool);
}

static struct eng_shared *shared_create(const eng_leg *leg)
{
    pj_pool_t *pool = pjsua_pool_create("mixshare", 4096, 4096);
    if (!pool)
        return NULL;
    struct eng_shared *s = PJ_POOL_ZALLOC_T(pool, struct eng_shared);
    s->pool = pool;
    s->loss_pct = -1;
    s->info = leg->sh_info;
    pj_strdup(pool, &s->info.encoding_name, &leg->sh_info.encoding_name);
    s->param = pjmedia_codec_param_clone(pool, leg->sh_param);
    unsigned rate = leg->sh_param->info.clock_rate;
    s->enc_spf = (int)(rate * MIX_FRAME_MS / 1000);
    s->mix_spf = leg->m.spf;
    s->stateless = !pj_stricmp2(&s->info.encoding_name, "PCMU")
                   || !pj_stricmp2(&s->info.encoding_name, "PCMA");
    pjmedia_codec_mgr *mgr = pjmedia_endpt_get_codec_mgr(pjsua_get_pjmedia_endpt());
    if (!s->param || pjmedia_codec_mgr_alloc_codec(mgr, &s->info, &s->codec) != PJ_SUCCESS) {
        s->codec = NULL;
        s->failed = 1;
    } else if (pjmedia_codec_init(s->codec, pool) != PJ_SUCCESS
               || pjmedia_codec_open(s->codec, s->param) != PJ_SUCCESS) {
        pjmedia_codec_mgr_dealloc_codec(mgr, s->codec);
        s->codec = NULL;
        s->failed = 1;
    } else if (rate != (unsigned)leg->m.rate
               && pjmedia_resample_create(pool, ENG_RS_HIGH_QUALITY, ENG_RS_LARGE_FILTER, 1,
                                          (unsigned)leg->m.rate,
                                          rate, (unsigned)leg->m.spf, &s->rs) != PJ_SUCCESS) {
        s->rs = NULL;
        s->failed = 1;
    }
    if (s->failed)
        PJ_LOG(3, ("share.c", "no shared encoder for %.*s/%u: its legs encode their own",
                   (int)s->info.encoding_name.slen, s->info.encoding_name.ptr, rate));
    return s;
}

/* The room's shared encoder for the leg's configuration (made if need be), or -1. */
static int share_slot(eng_room *r, eng_leg *leg)
{
    if (leg->sh_room == r)
        return leg->sh_slot;
    int k;
    for (k = 0; k < ENG_SHARE_CONFIGS && r->shared[k]; k++)
        if (share_same(&r->shared[k]->info, r->shared[k]->param, &leg->sh_info, leg->sh_param))
            break;
    if (k == ENG_SHARE_CONFIGS)
        k = -1;
    else if (!r->shared[k] && !(r->shared[k] = shared_create(leg)))
        k = -1;
    if (k >= 0 && r->shared[k]->failed)
        k = -1;
    leg->sh_room = r;
    leg->sh_slot = k;
    return k;
}

/* One frame at the mixer's rate into a payload: 1, or SHARE_DTX if the encoder had nothing to
 * send (Opus DTX in a pause, for peers that asked usedtx=1), or 0 if it failed. */
#define SHARE_DTX 2
static int shared_encode(struct eng_shared *s, const int16_t *pcm, void *out, unsigned cap,
                         unsigned *len)
{
    int16_t buf[ENG_SHARE_MAX_SPF];
    memcpy(s->last, pcm, (size_t)s->mix_spf * sizeof(int16_t));
    s->quiet_ticks = energy_below(pcm, s->mix_spf, SHARE_MIX_QUIET) ? s->quiet_ticks + 1 : 0;
    if (s->rs) {
        pjmedia_resample_run(s->rs, pcm, buf);
        pcm = buf;
    }
    pjmedia_frame fi, fo;
    memset(&fi, 0, sizeof(fi));
    memset(&fo, 0, sizeof(fo));
    fi.type = PJMEDIA_FRAME_TYPE_AUDIO;
    fi.buf = (void *)pcm;
    fi.size = (pj_size_t)s->enc_spf * 2;
    fi.timestamp.u64 = s->ts;
    s->ts += (pj_uint64_t)s->enc_spf;
    fo.buf = out;
    fo.size = cap;
    if (pjmedia_codec_encode(s->codec, &fi, cap, &fo) != PJ_SUCCESS)
        return 0;
    if (fo.size == 0)
        return SHARE_DTX;
    *len = (unsigned)fo.size;
    return 1;
}

/* A leg hearing the room's whole mix: it adds nothing to it this tick, or only what the talker
 * detection calls silence (under SHARE_QUIET_DBFS, not speaking: its own room noise, heard back
 * 40 ms later at that level, under the noise it is in), and hears nothing of its own. */
static int hears_whole_mix(const eng_leg *leg)
{
    const mix_leg *m = &leg->m;
    if (leg->player.active || m->nhears || m->gain_out != MIX_GAIN_UNITY
            || (m->flags & MIX_LEG_DEAF))
        return 0;
    if (!m->contrib || (m->flags & MIX_LEG_PRIVATE))
        return 1;
    /* SHARE_QUIET_DBFS as a frame's sum of squares: n * (32768 * 10^(dBFS/20))^2 */
    return !m->speaking && !(m->flags & MIX_LEG_AGC)
        && m->energy < (uint64_t)m->spf * SHARE_QUIET_MEANSQ;
}

void share_tick(eng_room *r, unsigned char *send)
{
    if (!LOAD(g_share))
        return;
    mix_room *m = &r->m;
    signed char slot[MIX_MAX_LEGS];  /* its shared encoder, if it hears the whole mix */
    unsigned char ready[MIX_MAX_LEGS];  /* and it takes that encoder's payload this tick */
    int any = 0;
    int64_t now = 0;
    for (int i = 0; i < m->nlegs; i++) {
        eng_leg *leg = (eng_leg *)m->legs[i];
        slot[i] = -1;
        ready[i] = 0;
        int quiet = send[i] && leg->sh_param && !leg->pipe && hears_whole_mix(leg)
                    && rtpguard_own_sent(leg->tp);
        leg->quiet_ticks = quiet ? (leg->quiet_ticks < SHARE_WAIT ? leg->quiet_ticks + 1
                                                                : SHARE_WAIT) : 0;
        if (quiet)
            slot[i] = (signed char)share_slot(r, leg);
        const struct eng_shared *sh = slot[i] >= 0 ? r->shared[slot[i]] : NULL;
        if (sh && (sh->stateless || (leg->quiet_ticks >= SHARE_SETTLE
                                     && (leg->was_shared || leg->quiet_ticks >= SHARE_WAIT
                                         || sh->quiet_ticks >= SHARE_QUIET_TICKS)))) {
            int64_t until = LOAD(leg->own_until_ns);
            ready[i] = !(until && until > (now ? now : (now = now_ns())));
        }
        if (!ready[i] && leg->was_shared) {
            /* back to its own encoder: on from the shared one's state, before that codes
             * this tick, as the peer's decoder is (Opus; G.711 has no state, G.722 little) */
            if (leg->sh_room == r && leg->sh_slot >= 0)
                share_resume_own(leg, r->shared[leg->sh_slot]);
            leg->was_shared = 0;
        }
        any |= slot[i] >= 0;
    }
    if (!any)
        return;
    /* Each shared encoder codes every tick one of its legs hears the whole mix, so a leg that
     * settles onto it finds its state following that mix, as its own encoder's does. */
    for (int k = 0; k < ENG_SHARE_CONFIGS && r->shared[k]; k++) {
        pj_uint8_t payload[ENG_SHARE_PAYLOAD];
        unsigned len = 0;
        int have = 0;
        int worst = -1;
        for (int i = 0; i < m->nlegs; i++)
            if (slot[i] == k && ((eng_leg *)m->legs[i])->loss_pct > worst)
                worst = ((eng_leg *)m->legs[i])->loss_pct;
        r->shared[k]->loss_pct = fec_shared(r->shared[k]->codec, r->shared[k]->loss_pct, worst);
        for (int i = 0; i < m->nlegs; i++) {
            eng_leg *leg = (eng_leg *)m->legs[i];
            if (slot[i] != k)
                continue;
            if (!have && !(have = shared_encode(r->shared[k], mix_room_full(m, leg->m.rate),
                                                payload, sizeof(payload), &len)))
                break;  /* no payload this tick: each encodes its own */
            if (!ready[i])
                continue;
            send[i] = 0;
            leg->was_shared = 1;
            if (have == SHARE_DTX) {
                rtpguard_skip(leg->tp, 1);
            } else if (rtpguard_send_shared(leg->tp, payload, len) != PJ_SUCCESS) {
                BUMP(leg->errors, 1);
            } else {
                BUMP(leg->tx, 1);
                BUMP(leg->shared, 1);
            }
        }
    }
}

void share_room_gone(eng_room *r)
{
    for (int k = 0; k < ENG_SHARE_CONFIGS; k++)
        if (r->shared[k]) {
            shared_free(r->shared[k]);
            r->shared[k] = NULL;
        }
}
