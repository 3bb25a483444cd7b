/* sipconf: direct decoding (scripts/build-pjproject.sh, issue 18). pjmedia decodes each Opus
 * packet a frame late: it holds the packet so that, if the next is lost, the one after it can
 * rebuild the frame from its in-band FEC. That costs 20 ms on every Opus leg, FEC or not. A
 * decoder told to (sipconf_opus_set_direct, mixer_ext/fec.c: a peer that codes no FEC, or a
 * long jitter buffer) decodes each packet at once instead, and rebuilds a lost frame from the
 * FEC of the packet the jitter buffer holds next (stream.c hands it over, sipconf_opus_next),
 * as WebRTC's NetEq does, or conceals it. Every decoder opens pjmedia's way. A switch costs
 * one frame: dropped on the way to direct, concealed on the way back. */
static int sipconf_spf(const struct opus_data *d)
{
    return (int)(d->cfg.sample_rate * d->dec_ptime / d->dec_ptime_denum / 1000);
}

/* A mono one-frame SILK or hybrid packet's VAD flag (1) and LBRR flag (2: it carries the
 * previous frame's FEC), RFC 6716 4.2.3: the range coder's first two bits; 1 for any other
 * packet (CELT only, stereo, several frames: speech without FEC, as far as the node goes).
 * libopus 1.3 has no call for it. */
static int sipconf_fec_flags(const unsigned char *p, pj_size_t len)
{
    const unsigned char *data = p + 1;
    pj_size_t n = len - 1, pos = 0;
    opus_uint32 rng = 128, val, rem, sym;
    int i, bit, flags = 0;
    if (len < 2 || (p[0] >> 3) >= 16 || (p[0] & 0x07))
        return 1;  /* CELT only, stereo, or more than one frame */
    rem = data[pos++];
    val = 127 - (rem >> 1);
    for (i = 0; i < 2; i++) {
        opus_uint32 s;
        while (rng <= (1u << 23)) {
            rng <<= 8;
            sym = rem;
            rem = pos < n ? data[pos] : 0;
            pos++;
            sym = ((sym << 8) | rem) >> 1;
            val = ((val << 8) + (255 & ~sym)) & 0x7FFFFFFFu;
        }
        s = rng >> 1;
        bit = val < s;
        if (!bit)
            val -= s;
        rng = bit ? s : rng - s;
        flags |= bit << i;
    }
    return flags;
}

static pj_status_t sipconf_out(struct opus_data *d, int n, pjmedia_frame *out)
{
    if (n < 0) {
        PJ_LOG(4, (THIS_FILE, "Decode failed!"));
        return PJMEDIA_CODEC_EFAILED;
    }
    out->size = n * sizeof(opus_int16) * d->cfg.channel_cnt;
    out->type = PJMEDIA_FRAME_TYPE_AUDIO;
    return PJ_SUCCESS;
}

/* 1 if it decoded the packet (direct, or the switch to held); 0 for pjmedia's held path. */
static int sipconf_decode(struct opus_data *d, const pjmedia_frame *in, pjmedia_frame *out,
                          pj_status_t *st)
{
    int frm = (int)out->size / (int)(sizeof(opus_int16) * d->cfg.channel_cnt);
    int flags = sipconf_fec_flags((const unsigned char *)in->buf, in->size);
    d->sipconf_next = NULL;
    if (flags & 2)
        d->sipconf_lbrr_age = 0;
    else if ((flags & 1) && d->sipconf_lbrr_age < 0x7FFFFFFF)
        d->sipconf_lbrr_age++;  /* speech without FEC */
    if (!d->sipconf_direct) {
        if (!d->sipconf_want_direct)
            return 0;
        /* held -> direct: the held frame is decoded (the decoder's state) and not played */
        if (d->dec_frame_index != -1) {
            pjmedia_frame *h = &d->dec_frame[d->dec_frame_index];
            if (h->type == PJMEDIA_FRAME_TYPE_AUDIO)
                opus_decode(d->dec, h->buf, (opus_int32)h->size, (opus_int16 *)out->buf, frm, 0);
        }
        d->dec_frame[0].type = d->dec_frame[1].type = PJMEDIA_FRAME_TYPE_NONE;
        d->dec_frame_index = -1;
        d->sipconf_direct = 1;
    } else if (!d->sipconf_want_direct) {
        /* direct -> held: this slot concealed, the packet held for the next */
        int n = opus_decode(d->dec, NULL, 0, (opus_int16 *)out->buf,
                            PJ_MIN(frm, sipconf_spf(d)), 0);
        d->dec_frame[0].type = in->type;
        d->dec_frame[0].size = in->size;
        d->dec_frame[0].timestamp = in->timestamp;
        pj_memcpy(d->dec_frame[0].buf, in->buf, in->size);
        d->dec_frame[1].type = PJMEDIA_FRAME_TYPE_NONE;
        d->dec_frame_index = 0;
        d->sipconf_direct = 0;
        out->timestamp = in->timestamp;
        *st = sipconf_out(d, n, out);
        return 1;
    }
    out->timestamp = in->timestamp;
    *st = sipconf_out(d, opus_decode(d->dec, in->buf, (opus_int32)in->size,
                                     (opus_int16 *)out->buf, frm, 0), out);
    return 1;
}

/* A lost frame, decoding directly: the next packet's FEC if stream.c found one, else PLC. */
static pj_status_t sipconf_recover(struct opus_data *d, pjmedia_frame *out)
{
    int frm = PJ_MIN((int)out->size / (int)(sizeof(opus_int16) * d->cfg.channel_cnt),
                     sipconf_spf(d));
    const void *next = d->sipconf_next;
    int n = opus_decode(d->dec, next, next ? (opus_int32)d->sipconf_next_size : 0,
                        (opus_int16 *)out->buf, frm, next != NULL);
    d->sipconf_next = NULL;
    if (n > 0 && next && (sipconf_fec_flags((const unsigned char *)next, d->sipconf_next_size) & 2))
        d->sipconf_fec_frames++;
    return sipconf_out(d, n, out);
}

