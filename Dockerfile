# vcmon in a container.
#   docker build -t vcmon .
#   docker run --rm -p 9470:9470 --sysctl net.ipv4.ping_group_range="0 2147483647" vcmon
# runs the embedded 240-site demo (vcmon run --demo), marked as a demo everywhere.
# With your own inventory (mounted at /etc/vcmon/):
#   docker run --rm -p 9470:9470 --sysctl net.ipv4.ping_group_range="0 2147483647" \
#       -v /etc/vcmon:/etc/vcmon:ro vcmon run --config /etc/vcmon/sites.yaml --listen 0.0.0.0:9470
# The process runs as an unprivileged user on ICMP datagram sockets, which that sysctl
# allows inside the container's own network namespace. Where sysctls cannot be set,
# use raw sockets instead: --cap-add=NET_RAW --user 0 (root inside the container only).
# The same image as a TWAMP-light reflector for vcmon's twamp probes (docs/twamp.md), the
# command in place of run; port 862 is below 1024, which that sysctl lets the user bind:
#   docker run --rm -p 862:862/udp --sysctl net.ipv4.ip_unprivileged_port_start=0 \
#       vcmon reflect --allow 192.0.2.10/32 --listen 0.0.0.0

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY probes ./probes
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# Only the runtime dependencies: the wheel and what it requires, no build tools.
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin vcmon \
    && mkdir -p /etc/vcmon
USER 10001:10001
EXPOSE 9470 862/udp
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9470/-/healthy', timeout=4)"]
ENTRYPOINT ["vcmon"]
CMD ["run", "--demo", "--listen", "0.0.0.0:9470"]
