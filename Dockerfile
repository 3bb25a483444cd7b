# sipconf node. Build: docker build -t sipconf .
# Run on the host network (SIP and a range of RTP ports), serving the host's address:
#   docker run --rm --network host sipconf --sip-host 192.0.2.10 --answer-url https://app/answer
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
RUN ./scripts/install.sh && rm -rf /root/.cache

EXPOSE 5080/udp 40000-40999/udp
ENTRYPOINT ["/opt/sipconf/.venv/bin/sipconf", "serve"]
CMD ["--sip-host", "127.0.0.1"]
