#!/usr/bin/env bash
# Build pjproject (shared libraries + the pjsua2 SWIG binding) into the project's venv.
#
# Why: the PyPI wheel caps at 4 calls and a 64-socket select() ioqueue; a room needs 20 legs and a
# node hundreds. We build from Debian's repack of pjproject (asterisk's component tarball), as
# shared libraries so that the SWIG module and mixer_ext share one pjlib/pjmedia in the process.
#
# Idempotent: a stamp in the venv records what was built; a second run with the same inputs does
# nothing. Env:
#   SIPCONF_VENV            venv to install into (default: <repo>/.venv)
#   PJPROJECT_TARBALL       local pjproject tarball to use instead of Debian's archive
#   SIPCONF_CACHE           download cache (default: ~/.cache/sipconf)
#   PJ_JOBS                 make -j (default: nproc)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${SIPCONF_VENV:-$REPO/.venv}
CACHE=${SIPCONF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sipconf}
PREFIX=$VENV/pjproject
JOBS=${PJ_JOBS:-$(nproc)}
MIN_VERSION=2.14
# Bump when the flags, config_site.h or patches below change: it invalidates the stamp.
RECIPE=20

die() { echo "build-pjproject: $*" >&2; exit 1; }
log() { echo "build-pjproject: $*" >&2; }

[ -x "$VENV/bin/python" ] || die "no virtual environment at $VENV (create it first: python3 -m venv $VENV)"
PY=$VENV/bin/python
mkdir -p "$CACHE"

# --- 1. the source tarball ---------------------------------------------------------------
debian_src_uri() {
    # The first Debian archive URI configured on this machine (deb822 or one-line format),
    # so no mirror host is ever written into the repository.
    local uri=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        uri=$(awk 'tolower($1)=="uris:" {for (i=2;i<=NF;i++) print $i}' /etc/apt/sources.list.d/*.sources \
              | grep -E '/debian/?$' | head -n1 || true)
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1=="deb" {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' /etc/apt/sources.list \
              | grep -E '/debian/?$' | head -n1 || true)
    fi
    echo "$uri"
}

fetch_from_debian() {
    local uri list srcdir out line url name size hash
    uri=$(debian_src_uri)
    [ -n "$uri" ] || die "no Debian archive URI in /etc/apt/sources.list{,.d}; set PJPROJECT_TARBALL to a local pjproject tarball"
    srcdir=$CACHE/apt
    mkdir -p "$srcdir/lists/partial" "$srcdir/archives/partial"
    list=$srcdir/unstable-src.sources
    cat > "$list" <<SRC
Types: deb-src
URIs: $uri
Suites: unstable
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    # A private apt configuration: only this deb-src entry, its own lists directory, so the
    # machine's own apt state is left alone.
    local aptopts=(-o "Dir::Etc::sourcelist=$list" -o "Dir::Etc::sourceparts=-"
                   -o "Dir::State::Lists=$srcdir/lists" -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
    log "fetching the asterisk source index from Debian unstable ($uri)"
    apt-get "${aptopts[@]}" update -qq >&2 || die "apt-get update for Debian unstable sources failed"
    out=$(cd "$srcdir" && apt-get "${aptopts[@]}" source --print-uris -qq asterisk 2>/dev/null) \
        || die "apt-get source --print-uris asterisk failed (no asterisk source in Debian unstable?)"
    line=$(printf '%s\n' "$out" | grep -E "orig-X?pjproject\.tar\.(xz|gz|bz2)'" | head -n1 || true)
    [ -n "$line" ] || die "asterisk source in Debian unstable has no pjproject component tarball"
    # 'URL' NAME SIZE SHA256:HASH
    read -r url name size hash <<<"$line"
    url=${url//\'/}
    TARBALL=$CACHE/$name
    if [ ! -f "$TARBALL" ] || [ "$(stat -c %s "$TARBALL")" != "$size" ]; then
        log "downloading $name ($size bytes)"
        /usr/lib/apt/apt-helper -o APT::Sandbox::User=root download-file "$url" "$TARBALL.part" "$hash" >&2 \
            || die "download of $url failed or its checksum did not match"
        mv "$TARBALL.part" "$TARBALL"
    fi
    # Check what we have against the archive's own checksum every time.
    case "$hash" in
        SHA256:*) echo "${hash#SHA256:}  $TARBALL" | sha256sum -c --quiet - >&2 || die "$TARBALL: SHA256 mismatch";;
        MD5Sum:*) echo "${hash#MD5Sum:}  $TARBALL" | md5sum -c --quiet - >&2 || die "$TARBALL: MD5 mismatch";;
        *) die "unexpected checksum field from apt: $hash";;
    esac
}

if [ -n "${PJPROJECT_TARBALL:-}" ]; then
    [ -f "$PJPROJECT_TARBALL" ] || die "PJPROJECT_TARBALL=$PJPROJECT_TARBALL: no such file"
    TARBALL=$(readlink -f "$PJPROJECT_TARBALL")
else
    # A cached tarball from an earlier run is reused without touching the network.
    TARBALL=$(ls -1 "$CACHE"/asterisk_*.orig-*pjproject.tar.* 2>/dev/null | sort -V | tail -n1 || true)
    if [ -z "$TARBALL" ]; then fetch_from_debian; fi
fi
tar -tf "$TARBALL" >/dev/null 2>&1 || die "$TARBALL is not a readable tarball"
TARBALL_SHA=$(sha256sum "$TARBALL" | cut -d' ' -f1)

# --- 2. is it already built? -------------------------------------------------------------
PY_TAG=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
STAMP_WANT="recipe=$RECIPE tarball=$TARBALL_SHA python=$PY_TAG prefix=$PREFIX"
STAMP=$PREFIX/.sipconf-build
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_WANT" ] \
   && "$PY" -c 'import pjsua2' >/dev/null 2>&1; then
    log "pjproject already built into $PREFIX (nothing to do)"
    exit 0
fi

# --- 3. unpack and check the version -----------------------------------------------------
BUILD=$CACHE/build-$(echo "$PREFIX" | sha256sum | cut -c1-12)  # one per venv: builds may run at once
rm -rf "$BUILD"; mkdir -p "$BUILD"
log "unpacking $(basename "$TARBALL")"
tar -C "$BUILD" -xf "$TARBALL"
SRC=$(find "$BUILD" -mindepth 1 -maxdepth 1 -type d | head -n1)
[ -f "$SRC/version.mak" ] || die "$TARBALL does not look like pjproject (no version.mak)"
MAJ=$(awk -F':=' '/^export PJ_VERSION_MAJOR / {gsub(/ /,"",$2); print $2}' "$SRC/version.mak")
MIN=$(awk -F':=' '/^export PJ_VERSION_MINOR / {gsub(/ /,"",$2); print $2}' "$SRC/version.mak")
VERSION="$MAJ.$MIN"
if [ "$(printf '%s\n%s\n' "$MIN_VERSION" "$VERSION" | sort -V | head -n1)" != "$MIN_VERSION" ]; then
    die "pjproject $VERSION in $TARBALL is older than $MIN_VERSION"
fi
[ -d "$SRC/pjsip-apps/src/swig/python" ] || die "pjproject $VERSION has no pjsua2 SWIG binding"
log "building pjproject $VERSION (shared) into $PREFIX"

# --- 4. configure: limits for a conferencing node, Debian's codec libraries ---------------
# Debian's repack removes bdimad_dev.c but the makefile still lists it.
touch "$SRC/pjmedia/src/pjmedia-audiodev/bdimad_dev.c"
cat > "$SRC/pjlib/include/pj/config_site.h" <<'CFG'
/* sipconf: a conferencing node, not a phone. */
#define PJSUA_MAX_CALLS             2048  /* sipconf.config.PJSUA_MAX_CALLS */
#define PJ_IOQUEUE_MAX_HANDLES      8192
#define PJSUA_MAX_PLAYERS           256
#define PJSUA_MAX_RECORDERS         256
#define PJSUA_MAX_CONF_PORTS        (PJSUA_MAX_CALLS+2*PJSUA_MAX_PLAYERS)
#define PJSIP_MAX_TSX_COUNT         65535
#define PJSIP_MAX_DIALOG_COUNT      65535
#define PJMEDIA_HAS_VIDEO           0
CFG
# pjsua2.i has an 'out' typemap for void* in Python but no 'in' one, so a port pointer cannot be
# handed back in onStreamCreated (prm.pPort). Add it.
SWIG_I=$SRC/pjsip-apps/src/swig/pjsua2.i
if ! grep -q 'PyLong_AsVoidPtr' "$SWIG_I"; then
    awk '{print} /\$result = PyLong_FromVoidPtr\(\$1\);/ {want=1} want && /^ *}/ {print "  %typemap(in) void* { $1 = PyLong_AsVoidPtr($input); if (PyErr_Occurred()) SWIG_fail; }"; want=0}' \
        "$SWIG_I" > "$SWIG_I.new" && mv "$SWIG_I.new" "$SWIG_I"
    grep -q 'PyLong_AsVoidPtr' "$SWIG_I" || die "could not patch $SWIG_I (pjsua2.i layout changed?)"
fi

# A re-INVITE whose offer has no codec in common gets 500 from pjsip's invite session; RFC 3261
# (14.2, 21.4.26) asks for 488 Not Acceptable Here, which tells the peer to offer again.
INV_C=$SRC/pjsip/src/pjsip-ua/sip_inv.c
if ! grep -q 'SIPCONF: 488' "$INV_C"; then
    [ "$(grep -c 'pjsip_dlg_create_response(dlg, rdata, 500, &reason,' "$INV_C")" = 1 ] \
        || die "could not patch $INV_C (the re-INVITE answer changed?)"
    sed -i 's|pjsip_dlg_create_response(dlg, rdata, 500, &reason,|pjsip_dlg_create_response(dlg, rdata, /* SIPCONF: 488 */ PJSIP_SC_NOT_ACCEPTABLE_HERE, \&reason,|' "$INV_C"
fi

# Shared encoding (mixer_ext/share.c), FEC (fec.c): a stream's codec, which pjmedia does not
# give; what the node asks of an Opus codec is in scripts/pjproject/opus_api.c (below).
STREAM_C=$SRC/pjmedia/src/pjmedia/stream.c
OPUS_C=$SRC/pjmedia/src/pjmedia-codec/opus.c
if ! grep -q 'sipconf_stream_codec' "$STREAM_C"; then
    grep -q 'pjmedia_codec           \*codec;' "$STREAM_C" || die "could not patch $STREAM_C"
    cat >> "$STREAM_C" <<'PATCH'

/* sipconf: the stream's codec instance (mixer_ext/share.c). */
PJ_DEF(pjmedia_codec*) sipconf_stream_codec(pjmedia_stream *stream)
{
    return stream ? stream->codec : NULL;
}
PATCH
fi
if ! grep -q 'sipconf_dtx_skip' "$STREAM_C"; then
    # A DTX pause (Opus usedtx=1, or a G.711 peer's silence suppression: the sequence number
    # goes on by one while the timestamp jumps) is no loss. pjmedia numbers the jitter buffer's
    # frames by timestamp, so a packet still buffered when a talk spurt resumed left the pause
    # as "missing" frames ahead of the new ones: concealed one by one, the talker late by the
    # pause (measured: 178 ms average delay, the next bursts refused as the buffer was full).
    # Frames never sent are now skipped in that numbering.
    for pat in '^    unsigned                 rtp_rx_ts_len_per_frame;' \
               '^        /\* Put each frame to jitter buffer. \*/' \
               '^            ext_seq = (unsigned)(frames\[i\].timestamp.u64 / ts_span);'; do
        [ "$(grep -c "$pat" "$STREAM_C")" = 1 ] || die "could not patch $STREAM_C ($pat)"
    done
    awk '
    /^    unsigned                 rtp_rx_ts_len_per_frame;/ {
        print
        print "    pj_uint32_t              sipconf_dtx_skip;  /* sipconf: frames a peer never sent */"
        print "    pj_uint32_t              sipconf_rx_ts;     /* sipconf: the last packet in order */"
        print "    pj_uint32_t              sipconf_rx_span;"
        print "    pj_uint16_t              sipconf_rx_seq;"
        print "    pj_bool_t                sipconf_rx_seen;"
        next }
    /^        \/\* Put each frame to jitter buffer. \*\// {
        print "        /* sipconf: the next packet in sequence, its timestamp past the last"
        print "         * packet'"'"'s frames: the frames between were never sent (DTX). */"
        print "        if (count > 0 && ts_span > 0) {"
        print "            pj_uint16_t rseq = pj_ntohs(hdr->seq);"
        print "            pj_uint32_t rts = pj_ntohl(hdr->ts);"
        print "            if (stream->sipconf_rx_seen"
        print "                && (pj_uint16_t)(rseq - stream->sipconf_rx_seq) == 1) {"
        print "                pj_uint32_t d = rts - stream->sipconf_rx_ts;"
        print "                if (d > stream->sipconf_rx_span && d < 0x80000000u)"
        print "                    stream->sipconf_dtx_skip += (d - stream->sipconf_rx_span) / ts_span;"
        print "            }"
        print "            if (!stream->sipconf_rx_seen"
        print "                || (pj_int16_t)(rseq - stream->sipconf_rx_seq) > 0) {"
        print "                stream->sipconf_rx_seen = PJ_TRUE;"
        print "                stream->sipconf_rx_seq = rseq;"
        print "                stream->sipconf_rx_ts = rts;"
        print "                stream->sipconf_rx_span = ts_span * count;"
        print "            }"
        print "        }"
        print
        next }
    /^            ext_seq = \(unsigned\)\(frames\[i\].timestamp.u64 \/ ts_span\);/ {
        print "            ext_seq = (unsigned)(frames[i].timestamp.u64 / ts_span)"
        print "                      - stream->sipconf_dtx_skip;  /* sipconf */"
        next }
    { print }' "$STREAM_C" > "$STREAM_C.new" && mv "$STREAM_C.new" "$STREAM_C"
    [ "$(grep -c 'sipconf_dtx_skip' "$STREAM_C")" = 3 ] || die "could not patch $STREAM_C"
fi
if ! grep -q 'sipconf: Opus. RTP clock' "$STREAM_C"; then
    # An Opus codec at 16 kHz (the node's, sipconf/sip/pjsua.py) made RTCP count its 48 kHz RTP
    # timestamps at 16 kHz: every receiver report said 40 ms of jitter on loopback.
    [ "$(grep -c '^ *pjmedia_rtcp_init2(&c_strm->rtcp, &rtcp_setting);' "$STREAM_C")" = 1 ] \
        || die "could not patch $STREAM_C"
    awk '/^ *pjmedia_rtcp_init2\(&c_strm->rtcp, &rtcp_setting\);/ && !done {
        print "        /* sipconf: Opus. RTP clock is 48 kHz whatever the codec rate (RFC 7587). */"
        print "        if (!pj_stricmp2(&info->fmt.encoding_name, \"opus\") && afd->clock_rate) {"
        print "            rtcp_setting.samples_per_frame = PJMEDIA_AFD_SPF(afd) * (48000 / afd->clock_rate);"
        print "            rtcp_setting.clock_rate = 48000;"
        print "        }"
        done = 1 }
        { print }' "$STREAM_C" > "$STREAM_C.new" && mv "$STREAM_C.new" "$STREAM_C"
    grep -q 'sipconf: Opus. RTP clock' "$STREAM_C" || die "could not patch $STREAM_C"
fi
if ! grep -q 'sipconf_opus_set_application' "$OPUS_C"; then
    # The encoder's Opus application (VoIP, audio, or restricted low delay: CELT only, 2.5 ms
    # lookahead, a quarter of the VoIP encoder's cost), chosen by the node before any call.
    grep -q '^static pj_str_t STR_CBR ' "$OPUS_C" || die "could not patch $OPUS_C"
    awk '/^static pj_str_t STR_CBR / && !done {
        print
        print "/* sipconf: the encoder'"'"'s application (node option --opus-application). */"
        print "static int sipconf_opus_application = OPUS_APPLICATION_VOIP;"
        print "PJ_DEF(void) sipconf_opus_set_application(int app)"
        print "{"
        print "    sipconf_opus_application = app;"
        print "}"
        done = 1; next }
        { print }' "$OPUS_C" > "$OPUS_C.new" && mv "$OPUS_C.new" "$OPUS_C"
    [ "$(grep -c '^ *OPUS_APPLICATION_VOIP);' "$OPUS_C")" = 1 ] || die "could not patch $OPUS_C"
    sed -i 's/^\( *\)OPUS_APPLICATION_VOIP);/\1sipconf_opus_application);/' "$OPUS_C"
    grep -q 'sipconf_opus_application);' "$OPUS_C" || die "could not patch $OPUS_C"
    # pjmedia opens every Opus encoder at OPUS_AUTO (60 bit/s a frame plus 1 a sample: 19 kbit/s
    # at 16 kHz, too little for CELT; 51 at 48 kHz) unless the peer sends maxaveragebitrate; the
    # configured bit rate (pjsua's CodecOpusConfig.bit_rate) applies only from a re-INVITE on.
    # Open at the configured one.
    [ "$(grep -c 'pj_bool_t auto_bit_rate = PJ_TRUE;' "$OPUS_C")" = 1 ] || die "could not patch $OPUS_C"
    sed -i 's/pj_bool_t auto_bit_rate = PJ_TRUE;/pj_bool_t auto_bit_rate = attr->info.avg_bps == 0;  \/* sipconf *\//' "$OPUS_C"
fi
if ! grep -q 'sipconf: DTX' "$OPUS_C"; then
    # DTX to a peer that asked usedtx=1. libopus codes a frame it need not send as its TOC alone
    # (1-2 bytes), and pjmedia sent those: 50 packets a second of nothing. And the node's default
    # encoder (restricted low delay: CELT at complexity 5) has no DTX in libopus 1.3 at all, not
    # even for a mix of decoders' idle output (+-1) or digital silence (3-byte frames forever).
    # So the frame itself decides: under -60 dBFS peak (a quiet or gated room), or a frame libopus
    # coded as its TOC alone, is silence, and as libopus' DTX does, after 200 ms of it only one
    # frame each 400 ms is sent (SILK codes a silent room as TOC-only frames, the refreshes too:
    # sent none, the peer's NAT binding and RTP timeout saw nothing for as long as the room was
    # quiet; a TOC-only packet is a valid one, decoded as a DTX frame). The encoder still
    # codes every frame (its state follows the signal, as the peer's decoder conceals); the
    # stream sends nothing, its RTP timestamp runs on, and the next packet carries the marker
    # (mixer_ext/rtpguard.c; share.c for the shared encoder).
    [ "$(grep -c '^    pj_size_t                    dec_frame_buf_size;$' "$OPUS_C")" = 1 ] \
        || die "could not patch $OPUS_C"
    [ "$(grep -c '} else if (size > 0) {' "$OPUS_C")" = 1 ] || die "could not patch $OPUS_C"
    [ "$(grep -c '/\* Empty packet \*/' "$OPUS_C")" = 1 ] || die "could not patch $OPUS_C"
    awk '{ print }
        /^    pj_size_t                    dec_frame_buf_size;$/ {
            print "    unsigned                     sipconf_quiet;  /* sipconf: DTX */"
            field = 1; next }
        field == 1 && /^};$/ {
            field = 2
            print ""
            print "/* sipconf: DTX: 1 if a frame (size bytes, from n samples) is not to be sent. */"
            print "static int sipconf_dtx_frame(struct opus_data *d, opus_int32 size,"
            print "                             const opus_int16 *pcm, unsigned n)"
            print "{"
            print "    opus_int32 dtx = 0;"
            print "    unsigned i;"
            print "    opus_encoder_ctl(d->enc, OPUS_GET_DTX(&dtx));"
            print "    if (!dtx)"
            print "        return 0;"
            print "    if (size <= 2) {  /* libopus DTX (its TOC alone), after its own 200 ms */"
            print "        if (d->sipconf_quiet < 10)"
            print "            d->sipconf_quiet = 10;"
            print "        d->sipconf_quiet++;"
            print "        return (d->sipconf_quiet - 10) % 20 != 0;"
            print "    }"
            print "    for (i = 0; i < n; i++)"
            print "        if (pcm[i] > 32 || pcm[i] < -32) {  /* -60 dBFS */"
            print "            d->sipconf_quiet = 0;"
            print "            return 0;"
            print "        }"
            print "    d->sipconf_quiet++;"
            print "    return d->sipconf_quiet > 10 && (d->sipconf_quiet - 10) % 20 != 0;"
            print "}"
        }' "$OPUS_C" > "$OPUS_C.new" && mv "$OPUS_C.new" "$OPUS_C"
    sed -i 's|} else if (size > 0) {|} else if (size > 0 \&\& !sipconf_dtx_frame(opus_data, size, (const opus_int16*)(((char*)input->buf) + in_pos), samples_per_frame * opus_data->cfg.channel_cnt)) {|' "$OPUS_C"
    sed -i 's|/\* Empty packet \*/|/* Empty packet */\n        size = 0;  /* sipconf: DTX */|' "$OPUS_C"
    [ "$(grep -c 'sipconf: DTX' "$OPUS_C")" = 3 ] || die "could not patch $OPUS_C"
fi

# Opus decoded at once (scripts/pjproject/opus_direct.c, mixer_ext/fec.c, issue 18): pjmedia
# holds each packet a frame for the next one's FEC, 20 ms on every Opus leg; now a lost frame's
# FEC comes from the packet the jitter buffer holds next, and the held frame only where the node
# asks for it (a peer that codes FEC, a short jitter buffer). And the node's Opus API (opus_api.c: the
# encoder's state copied, the loss it codes FEC for, the decoder's mode and figures).
if ! grep -q 'sipconf_opus_set_direct' "$OPUS_C"; then
    for pat in '^    int                          dec_frame_index;$' \
               '^    opus_data->dec_frame_index = -1;$' \
               '^static pj_status_t  codec_decode( pjmedia_codec \*codec, $' \
               '^static pj_status_t  codec_recover( pjmedia_codec \*codec,$' \
               '^        fec = 1;$' '^#endif /\* PJMEDIA_HAS_OPUS_CODEC \*/'; do
        [ "$(grep -c "$pat" "$OPUS_C")" = 1 ] || die "could not patch $OPUS_C ($pat)"
    done
    awk -v direct="$REPO/scripts/pjproject/opus_direct.c" \
        -v api="$REPO/scripts/pjproject/opus_api.c" '
    function insert(file,   line) {
        while ((getline line < file) > 0) print line
        close(file) }
    /^    int                          dec_frame_index;$/ {
        print
        print "    int                          sipconf_direct;       /* sipconf: decoding at once */"
        print "    int                          sipconf_want_direct;"
        print "    const void                  *sipconf_next;         /* the packet after a lost one */"
        print "    unsigned                     sipconf_next_size;"
        print "    int                          sipconf_lbrr_age;     /* speech packets without FEC */"
        print "    unsigned                     sipconf_fec_frames;   /* frames rebuilt from FEC */"
        next }
    /^    opus_data->dec_frame_index = -1;$/ {
        print
        print "    opus_data->sipconf_direct = opus_data->sipconf_want_direct = 0;  /* sipconf */"
        print "    opus_data->sipconf_lbrr_age = 0;"
        next }
    /^static pj_status_t  codec_decode\( pjmedia_codec \*codec, $/ { insert(direct); where = "decode" }
    /^static pj_status_t  codec_recover\( pjmedia_codec \*codec,$/ { where = "recover" }
    /^    if \(opus_data->dec_frame_index == -1\) \{$/ && where == "decode" {
        print "    {  /* sipconf: decoding at once */"
        print "        pj_status_t st;"
        print "        if (sipconf_decode(opus_data, input, output, &st)) {"
        print "            pj_mutex_unlock (opus_data->mutex);"
        print "            return st;"
        print "        }"
        print "    }"
        where = "" }
    /^    if \(opus_data->dec_frame_index == -1\) \{$/ && where == "recover" {
        print "    if (opus_data->sipconf_direct) {  /* sipconf: decoding at once */"
        print "        pj_status_t st = sipconf_recover(opus_data, output);"
        print "        pj_mutex_unlock (opus_data->mutex);"
        print "        return st;"
        print "    }"
        where = "" }
    /^        fec = 1;$/ {
        print
        print "        if (sipconf_fec_flags((const unsigned char *)input->buf, input->size) & 2)"
        print "            opus_data->sipconf_fec_frames++;  /* sipconf */"
        next }
    /^#endif \/\* PJMEDIA_HAS_OPUS_CODEC \*\// { insert(api) }
    { print }' "$OPUS_C" > "$OPUS_C.new" && mv "$OPUS_C.new" "$OPUS_C"
    [ "$(grep -c 'sipconf: decoding at once' "$OPUS_C")" = 3 ] \
        && grep -q 'PJ_DEF(pj_status_t) sipconf_opus_set_loss' "$OPUS_C" || die "could not patch $OPUS_C"
fi
if ! grep -q 'sipconf_next_fec' "$STREAM_C"; then
    for pat in '^static pj_status_t get_frame( pjmedia_port \*port, pjmedia_frame \*frame)$' \
               '^            plc_invoked = synthesize_samples(stream, samples_needed,$'; do
        [ "$(grep -c "$pat" "$STREAM_C")" = 1 ] || die "could not patch $STREAM_C ($pat)"
    done
    awk '
    /^static pj_status_t get_frame\( pjmedia_port \*port, pjmedia_frame \*frame\)$/ {
        print "/* sipconf: a lost frame is rebuilt from the FEC of the packet the jitter buffer holds"
        print " * next (Opus, scripts/pjproject/opus_direct.c); the codec is told through a hook the"
        print " * node sets, pjmedia-codec being a library above this one. */"
        print "void (*sipconf_next_hook)(pjmedia_codec*, const void*, unsigned) = NULL;"
        print "static void sipconf_next_fec(pjmedia_stream *stream, int find)"
        print "{"
        print "    const void *buf = NULL;"
        print "    pj_size_t size = 0;"
        print "    char type = PJMEDIA_JB_MISSING_FRAME;"
        print "    pj_uint32_t bit_info = 0, ts = 0;"
        print "    int seq = 0;"
        print "    if (!sipconf_next_hook)"
        print "        return;"
        print "    if (find)"
        print "        pjmedia_jbuf_peek_frame(stream->base.jb, 0, &buf, &size, &type, &bit_info,"
        print "                                &ts, &seq);"
        print "    if (type == PJMEDIA_JB_NORMAL_FRAME && buf && size)"
        print "        sipconf_next_hook(stream->codec, buf, (unsigned)size);"
        print "    else"
        print "        sipconf_next_hook(stream->codec, NULL, 0);"
        print "}"
        print ""
        print
        next }
    /^            plc_invoked = synthesize_samples\(stream, samples_needed,$/ {
        print "            sipconf_next_fec(stream, 1);  /* sipconf */"
        print
        after = 1
        next }
    after && /&frame_out\);$/ {
        print
        print "            sipconf_next_fec(stream, 0);  /* sipconf */"
        after = 0
        next }
    { print }' "$STREAM_C" > "$STREAM_C.new" && mv "$STREAM_C.new" "$STREAM_C"
    [ "$(grep -c 'sipconf_next_fec' "$STREAM_C")" = 3 ] || die "could not patch $STREAM_C"
fi

# The jitter buffer's playout point (mixer_ext/legs.c, issue 18). pjmedia's buffer numbers
# frames, not times: a read that finds it empty leaves the slot for the late packet (the stream
# is retimed a frame later for good), and a packet put into an empty buffer becomes its origin
# whatever slot it is for (a gap before it is skipped: retimed earlier). Under 40+-40 ms of
# jitter both happen many times a second and the delay random-walks (PESQ 1.3). A mode the node
# sets per stream, each tick: 2, the delay holds (an empty read conceals its slot in place: a
# packet for it comes too late) and a gap before a packet is concealed, not skipped; 1, the
# same, but the first empty read keeps its slot (the delay grows a frame, no prefetch) and
# turns the mode to 2. In both the node, not pjmedia's progressive discard, shrinks the delay;
# an empty spell over SIPCONF_SPELL_MAX frames is a pause (DTX, hold), after which the buffer
# goes back to pjmedia's own ways until a frame is read. A packet that comes for a slot an empty
# spell of over SIPCONF_STEP_MS concealed is a delay step (the talker's packets come later for
# good, by more than the node waits: a route change, a sender's hiccup), not a late packet: the
# slots from it on are given back and it plays, the stream retimed by the step as pjmedia would
# (concealing on, every packet after the step came too late: 100 ms later lost ~400 ms).
JBUF_C=$SRC/pjmedia/src/pjmedia/jbuf.c
if ! grep -q 'sipconf_mode' "$JBUF_C"; then
    for pat in '^#define INVALID_OFFSET          -9999' \
               '^    int              origin;            /\*\*< original index of flist_head   \*/' \
               '^    unsigned        jb_min_delay;       /\*\*< Minimum delay, in frames       \*/' \
               '^    if (framelist->size == 0) {' \
               '^    /\* Should be done in PUT operation \*/' \
               '^        if (res) {' \
               '^    /\* Attempt to store the frame \*/' \
               '^            if (jb->jb_prefetch)'; do
        [ "$(grep -c "$pat" "$JBUF_C")" = 1 ] || die "could not patch $JBUF_C ($pat)"
    done
    awk '
    /^#define INVALID_OFFSET          -9999/ {
        print
        print "#define SIPCONF_SPELL_MAX       40     /* sipconf: frames (400 ms of 10 ms frames) */"
        print "#define SIPCONF_STEP_MS         60     /* sipconf: a spell this long and a packet for it */"
        print "/* sipconf: the last n of the slots an empty spell concealed given back */"
        print "#define SIPCONF_GIVE_BACK(jb, n) do { \\"
        print "        jb_framelist_t *fl_ = &(jb)->jb_framelist; \\"
        print "        const unsigned n_ = (n); \\"
        print "        fl_->origin -= (int)n_; \\"
        print "        fl_->head = (fl_->head + fl_->max_count - n_ % fl_->max_count) % fl_->max_count; \\"
        print "        (jb)->sipconf_adv -= n_; \\"
        print "    } while (0)"
        next }
    /^    int              origin;            \/\*\*< original index of flist_head   \*\// {
        print
        print "    int              sipconf_anchored;  /* sipconf: origin kept while empty */"
        next }
    /^    unsigned        jb_min_delay;       \/\*\*< Minimum delay, in frames       \*\// {
        print
        print "    int             sipconf_mode;       /* sipconf: 0 pjmedia, 1 grow, 2 hold */"
        print "    unsigned        sipconf_spell;      /* sipconf: empty reads in a row */"
        print "    unsigned        sipconf_adv;        /* sipconf: of those, slots concealed */"
        next }
    /^    if \(framelist->size == 0\) \{/ {
        print "    if (framelist->size == 0 && !(framelist->sipconf_anchored"
        print "            && framelist->origin != INVALID_OFFSET"
        print "            && distance < (int)framelist->max_count)) {  /* sipconf */"
        next }
    /^    \/\* Should be done in PUT operation \*\// {
        print "    if (jb->sipconf_mode)"
        print "        return;  /* sipconf: the node sets the delay */"
        print
        next }
    /^    \/\* Attempt to store the frame \*\// {
        print "    {  /* sipconf: a delay step (see build-pjproject.sh) */"
        print "        jb_framelist_t *fl = &jb->jb_framelist;"
        print "        const int back = fl->origin - frame_seq;"
        print "        if (jb->sipconf_mode && fl->size == 0 && fl->origin != INVALID_OFFSET"
        print "                && back > 0 && back <= (int)jb->sipconf_adv"
        print "                && jb->sipconf_adv * jb->jb_frame_ptime"
        print "                   >= SIPCONF_STEP_MS * jb->jb_frame_ptime_denum)"
        print "            SIPCONF_GIVE_BACK(jb, (unsigned)back);  /* origin: this packet */"
        print "    }"
        print
        next }
    /^        if \(res\) \{/ {
        print
        print "            jb->sipconf_spell = jb->sipconf_adv = 0;  /* sipconf */"
        print "            jb->jb_framelist.sipconf_anchored = jb->sipconf_mode != 0;"
        next }
    /^            if \(jb->jb_prefetch\)/ {
        print "            /* sipconf: the slot concealed in place (a packet for it is too late);"
        print "             * a longer spell is a pause: the slots given back, pjmedia'"'"'s ways */"
        print "            jb_framelist_t *fl = &jb->jb_framelist;"
        print "            if (++jb->sipconf_spell > SIPCONF_SPELL_MAX || !jb->sipconf_mode) {"
        print "                SIPCONF_GIVE_BACK(jb, jb->sipconf_adv);"
        print "                fl->sipconf_anchored = PJ_FALSE;"
        print "            } else if (jb->sipconf_mode == 1) {"
        print "                jb->sipconf_mode = 2;  /* grown by this frame: enough for now */"
        print "            } else if (fl->origin != INVALID_OFFSET) {"
        print "                fl->origin++;"
        print "                fl->head = (fl->head + 1) % fl->max_count;"
        print "                jb->sipconf_adv++;"
        print "                fl->sipconf_anchored = PJ_TRUE;"
        print "            }"
        print "            if (jb->jb_prefetch && !jb->sipconf_mode)"
        next }
    { print }' "$JBUF_C" > "$JBUF_C.new" && mv "$JBUF_C.new" "$JBUF_C"
    cat >> "$JBUF_C" <<'PATCH'

/* sipconf: the playout mode (see build-pjproject.sh); the stream's jb_mutex need not be held
 * (an int store; the next put or get reads it under that mutex). */
PJ_DEF(void) sipconf_jbuf_mode(pjmedia_jbuf *jb, int mode)
{
    jb->sipconf_mode = mode;
    if (!mode)
        jb->jb_framelist.sipconf_anchored = PJ_FALSE;
    else if (!jb->sipconf_spell)
        jb->jb_framelist.sipconf_anchored = PJ_TRUE;
}
PATCH
    cat >> "$JBUF_C" <<'PATCH'

/* sipconf: a DTX pause ended (stream.c: the next packet in sequence, its timestamp jumped):
 * the slots concealed in the empty spell were no late packet's; given back, and the packet
 * starts the buffer again, as pjmedia would. Under the stream's jb_mutex. */
PJ_DEF(void) sipconf_jbuf_pause(pjmedia_jbuf *jb)
{
    jb_framelist_t *fl = &jb->jb_framelist;
    if (fl->size == 0)
        SIPCONF_GIVE_BACK(jb, jb->sipconf_adv);
    jb->sipconf_adv = 0;
    fl->sipconf_anchored = PJ_FALSE;
}
PATCH
    cat >> "$JBUF_C" <<'PATCH'

/* sipconf: after an empty read the stream conceals the rest of its read (`frames` more of the
 * buffer's frames) and reads no further: in mode 2 those slots are concealed in place too. */
PJ_DEF(void) sipconf_jbuf_concealed(pjmedia_jbuf *jb, unsigned frames)
{
    jb_framelist_t *fl = &jb->jb_framelist;
    for (; frames && jb->sipconf_mode == 2 && jb->sipconf_adv && fl->size == 0
           && jb->sipconf_spell < SIPCONF_SPELL_MAX; frames--) {
        fl->origin++;
        fl->head = (fl->head + 1) % fl->max_count;
        jb->sipconf_adv++;
        jb->sipconf_spell++;
    }
}
PATCH
    JBUF_H=$SRC/pjmedia/include/pjmedia/jbuf.h
    cat >> "$JBUF_H" <<'PATCH'

/* sipconf (scripts/build-pjproject.sh) */
PJ_DECL(void) sipconf_jbuf_mode(pjmedia_jbuf *jb, int mode);
PJ_DECL(void) sipconf_jbuf_pause(pjmedia_jbuf *jb);
PJ_DECL(void) sipconf_jbuf_concealed(pjmedia_jbuf *jb, unsigned frames);
PATCH
    pat='^                    stream->sipconf_dtx_skip += (d - stream->sipconf_rx_span) / ts_span;'
    [ "$(grep -c "$pat" "$STREAM_C")" = 1 ] || die "could not patch $STREAM_C ($pat)"
    sed -i "s|$pat|                {  /* sipconf: a DTX pause */\n&\n                    sipconf_jbuf_pause(c_strm->jb);\n                }|" "$STREAM_C"
    grep -q '^                    sipconf_jbuf_pause(c_strm->jb);' "$STREAM_C" || die "could not patch $STREAM_C"
    pat='^            /\* Jitter buffer is empty. If this is the first "empty" state,'
    [ "$(grep -c "$pat" "$STREAM_C")" = 1 ] || die "could not patch $STREAM_C ($pat)"
    awk '
    /^            \/\* Jitter buffer is empty. If this is the first "empty" state,/ { empty = 1 }
    { print }
    empty && /^                samples_count \+= samples_needed;/ {
        print "                sipconf_jbuf_concealed(c_strm->jb,  /* sipconf */"
        print "                    (samples_needed + samples_per_frame - 1) / samples_per_frame - 1);"
        empty = 0 }' "$STREAM_C" > "$STREAM_C.new" && mv "$STREAM_C.new" "$STREAM_C"
    grep -q '^                sipconf_jbuf_concealed(c_strm->jb,' "$STREAM_C" || die "could not patch $STREAM_C"
    [ "$(grep -c 'sipconf' "$JBUF_C")" -ge 12 ] || die "could not patch $JBUF_C"
    [ "$(grep -c 'SIPCONF_SPELL_MAX' "$JBUF_C")" = 3 ] || die "could not patch $JBUF_C"
    [ "$(grep -c 'SIPCONF_STEP_MS' "$JBUF_C")" = 2 ] || die "could not patch $JBUF_C"
fi
if ! grep -q 'sipconf_stream_playout' "$STREAM_C"; then
    cat >> "$STREAM_C" <<'PATCH'

/* sipconf: the jitter buffer's playout mode (mixer_ext/legs.c); from the thread that reads. */
PJ_DEF(void) sipconf_stream_playout(pjmedia_stream *stream, int mode)
{
    if (stream && stream->base.jb)
        sipconf_jbuf_mode(stream->base.jb, mode);
}

/* sipconf: the next frame in the jitter buffer dropped (the delay a frame shorter); 1 if one
 * was there. */
PJ_DEF(unsigned) sipconf_stream_drop(pjmedia_stream *stream)
{
    pjmedia_stream_common *c_strm = &stream->base;
    unsigned n = 0;
    if (!c_strm->jb)
        return 0;
    pj_mutex_lock(c_strm->jb_mutex);
    n = pjmedia_jbuf_remove_frame(c_strm->jb, 1);
    pj_mutex_unlock(c_strm->jb_mutex);
    return n;
}
PATCH
fi
if ! grep -q 'sipconf_stream_head' "$STREAM_C"; then
    # The RTP timestamp of the frame the jitter buffer reads next (mixer_ext/legs.c: the playout
    # delay is how long after that frame could have come it is played). The buffer numbers its
    # frames timestamp / frame span less the frames DTX skipped: that, backwards.
    pat='^    pj_bool_t                sipconf_rx_seen;'
    [ "$(grep -c "$pat" "$STREAM_C")" = 1 ] || die "could not patch $STREAM_C ($pat)"
    sed -i "s|$pat|&\n    unsigned                 sipconf_ts_span;   /* sipconf: a frame's timestamps */|" "$STREAM_C"
    pat='^            ext_seq = (unsigned)(frames\[i\].timestamp.u64 / ts_span)$'
    [ "$(grep -c "$pat" "$STREAM_C")" = 1 ] || die "could not patch $STREAM_C ($pat)"
    sed -i "s|$pat|            stream->sipconf_ts_span = ts_span;  /* sipconf */\n&|" "$STREAM_C"
    cat >> "$STREAM_C" <<'PATCH'

/* sipconf: the RTP timestamp of the frame the jitter buffer reads next; PJ_FALSE if none. */
PJ_DEF(pj_bool_t) sipconf_stream_head(pjmedia_stream *stream, pj_uint32_t *ts)
{
    pjmedia_stream_common *c_strm = &stream->base;
    int origin = 0;
    pj_bool_t ok = PJ_FALSE;
    if (!c_strm->jb)
        return PJ_FALSE;
    pj_mutex_lock(c_strm->jb_mutex);
    if (stream->sipconf_ts_span && sipconf_jbuf_origin(c_strm->jb, &origin)) {
        *ts = ((pj_uint32_t)origin + stream->sipconf_dtx_skip) * stream->sipconf_ts_span;
        ok = PJ_TRUE;
    }
    pj_mutex_unlock(c_strm->jb_mutex);
    return ok;
}
PATCH
    cat >> "$JBUF_C" <<'PATCH'

/* sipconf: the index of the frame read next (PJ_FALSE before the first). */
PJ_DEF(pj_bool_t) sipconf_jbuf_origin(pjmedia_jbuf *jb, int *origin)
{
    if (jb->jb_framelist.origin == INVALID_OFFSET)
        return PJ_FALSE;
    *origin = jb->jb_framelist.origin;
    return PJ_TRUE;
}
PATCH
    echo 'PJ_DECL(pj_bool_t) sipconf_jbuf_origin(pjmedia_jbuf *jb, int *origin);' \
        >> "$SRC/pjmedia/include/pjmedia/jbuf.h"
    [ "$(grep -c 'sipconf_ts_span' "$STREAM_C")" = 4 ] || die "could not patch $STREAM_C"
fi

cd "$SRC"
./configure --prefix="$PREFIX" --enable-shared \
    --disable-video --disable-sound --disable-libyuv --disable-libwebrtc \
    --with-external-speex --with-external-gsm --with-external-srtp --enable-speex-resample \
    --disable-ilbc-codec --disable-g7221-codec --enable-epoll \
    CFLAGS="-O2 -fPIC" CXXFLAGS="-O2 -fPIC" LDFLAGS="-Wl,-rpath,$PREFIX/lib" >"$BUILD/configure.log" 2>&1 \
    || { tail -n 30 "$BUILD/configure.log" >&2; die "configure failed (log: $BUILD/configure.log)"; }

# --- 5. build and install ----------------------------------------------------------------
make dep >"$BUILD/make.log" 2>&1 && make -j"$JOBS" >>"$BUILD/make.log" 2>&1 \
    || { tail -n 30 "$BUILD/make.log" >&2; die "make failed (log: $BUILD/make.log)"; }
rm -rf "$PREFIX"
make install >>"$BUILD/make.log" 2>&1 || { tail -n 30 "$BUILD/make.log" >&2; die "make install failed"; }

# The SWIG binding, against the installed shared libraries, built with the venv's Python.
"$PY" -m pip install -q setuptools >&2
cd "$SRC/pjsip-apps/src/swig/python"
PATH="$VENV/bin:$PATH" make PYTHON_EXE="$PY" >"$BUILD/swig.log" 2>&1 \
    || { tail -n 30 "$BUILD/swig.log" >&2; die "building the pjsua2 Python binding failed (log: $BUILD/swig.log)"; }
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
cp pjsua2.py "$SITE/"
cp build/lib*/_pjsua2*.so "$SITE/"

# --- 6. check and stamp ------------------------------------------------------------------
"$PY" - <<'PYCHK' || die "the built pjsua2 module does not load"
import pjsua2
ep = pjsua2.Endpoint()
ep.libCreate()
cfg = pjsua2.EpConfig()
cfg.logConfig.level = cfg.logConfig.consoleLevel = 0
ep.libInit(cfg)
print("pjsua2", ep.libVersion().full, "max calls", cfg.uaConfig.maxCalls)
ep.libDestroy()
PYCHK
echo "$STAMP_WANT" > "$STAMP"
log "done: pjproject $VERSION in $PREFIX, pjsua2 in $SITE"
