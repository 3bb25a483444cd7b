/* sipconf: what the node asks of an Opus codec instance (inserted at the end of pjmedia's
 * opus.c by scripts/build-pjproject.sh). Each returns PJ_EINVAL for any other codec. */
static struct opus_data *sipconf_opus(pjmedia_codec *codec)
{
    if (!codec || codec->factory != &opus_codec_factory.base)
        return NULL;
    return (struct opus_data *)codec->codec_data;
}

/* dst's encoder continues from src's state (mixer_ext/share.c): a leg going back from the
 * room's shared encoder to its own, so the peer's decoder sees one encoder. libopus states
 * are flat, position-independent blocks: memcpy is a valid copy. */
PJ_DEF(pj_status_t) sipconf_opus_copy_encoder(pjmedia_codec *dst, pjmedia_codec *src)
{
    struct opus_data *d = sipconf_opus(dst), *s = sipconf_opus(src);
    if (!d || !s || !d->enc || !s->enc || d->cfg.channel_cnt != s->cfg.channel_cnt
        || d->cfg.sample_rate != s->cfg.sample_rate)
        return PJ_EINVAL;
    pj_memcpy(d->enc, s->enc, opus_encoder_get_size(d->cfg.channel_cnt));
    return PJ_SUCCESS;
}

/* The loss (%) the encoder codes for (mixer_ext/fec.c). libopus codes in-band FEC only for an
 * expected loss over 0 %, as much as it says; pjmedia sets it once, at open, to the configured
 * 5 %: the node follows what each peer reports. */
PJ_DEF(pj_status_t) sipconf_opus_set_loss(pjmedia_codec *codec, unsigned pct)
{
    struct opus_data *d = sipconf_opus(codec);
    if (!d || !d->enc || pct > 100)
        return PJ_EINVAL;
    pj_mutex_lock(d->mutex);
    opus_encoder_ctl(d->enc, OPUS_SET_PACKET_LOSS_PERC((int)pct));
    pj_mutex_unlock(d->mutex);
    return PJ_SUCCESS;
}

/* Direct decoding (opus_direct.c): the packet the jitter buffer holds after a lost frame
 * (NULL: none), for its FEC; valid until the stream's next read. */
PJ_DEF(void) sipconf_opus_next(pjmedia_codec *codec, const void *buf, unsigned size)
{
    struct opus_data *d = sipconf_opus(codec);
    if (d) {
        d->sipconf_next = buf;
        d->sipconf_next_size = size;
    }
}

/* One decoder, from its next packet on: 1 decodes each packet at once; 0 holds a frame
 * (pjmedia's way, how every decoder opens). */
PJ_DEF(pj_status_t) sipconf_opus_set_direct(pjmedia_codec *codec, int direct)
{
    struct opus_data *d = sipconf_opus(codec);
    if (!d)
        return PJ_EINVAL;
    d->sipconf_want_direct = direct != 0;
    return PJ_SUCCESS;
}

/* The decoder's figures: speech packets since the last one carrying FEC (0 until one
 * without comes), frames rebuilt from FEC, and whether it decodes directly now. */
PJ_DEF(pj_status_t) sipconf_opus_dec_stats(pjmedia_codec *codec, int *lbrr_age,
                                           unsigned *fec_frames, int *direct)
{
    struct opus_data *d = sipconf_opus(codec);
    if (!d)
        return PJ_EINVAL;
    *lbrr_age = d->sipconf_lbrr_age;
    *fec_frames = d->sipconf_fec_frames;
    *direct = d->sipconf_direct;
    return PJ_SUCCESS;
}

