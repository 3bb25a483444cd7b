# sipconf node. Build: docker build -t sipconf .
# It installs through scripts/install.sh, the same script as the README's first command.
# Python dependencies come from pyproject.toml through it; .dockerignore keeps a host checkout's
# built extensions out of the image (they are built here, against the image's pjproject).
# Run on the host network (SIP and a range of RTP ports), serving the host's address:
#   docker run --rm --network host -v sipconf:/var/lib/sipconf sipconf \
#       --sip-host 192.0.2.10 --http-host 127.0.0.1 --answer-url https://app/answer
FROM debian:bookworm-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/sipconf
COPY pyproject.toml setup.py README.md ./
COPY scripts ./scripts
COPY sipconf ./sipconf
COPY mixer_ext ./mixer_ext

# Builds pjproject from Debian's source archive into /opt/sipconf/.venv (the build stays in the
# image; the download cache does not).
RUN ./scripts/install.sh && rm -rf /root/.cache /var/lib/apt/lists/*

# The node runs as an unprivileged user; its spool and recordings live in a volume.
RUN useradd --system --home /var/lib/sipconf --create-home sipconf
USER sipconf
ENV SIPCONF_DATA_DIR=/var/lib/sipconf \
    SIPCONF_HEALTH_URL=http://127.0.0.1:8080/health
VOLUME /var/lib/sipconf

EXPOSE 5080/udp 40000-40999/udp 8080/tcp
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/opt/sipconf/.venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['SIPCONF_HEALTH_URL'], timeout=2)"]
ENTRYPOINT ["/opt/sipconf/.venv/bin/sipconf", "serve"]
CMD ["--sip-host", "127.0.0.1"]
