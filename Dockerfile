# vcmon in a container.
#   docker build -t vcmon .
#   docker run --rm -p 9470:9470 --sysctl net.ipv4.ping_group_range="0 2147483647" vcmon
# With your own inventory:
#   docker run --rm -p 9470:9470 --sysctl net.ipv4.ping_group_range="0 2147483647" \
#       -v /etc/vcmon:/etc/vcmon:ro vcmon run --config /etc/vcmon/sites.yaml --listen 0.0.0.0:9470
# The process runs as an unprivileged user on ICMP datagram sockets, which that sysctl
# allows inside the container's own network namespace: no CAP_NET_RAW needed.
FROM python:3.11-slim-bookworm

WORKDIR /opt/vcmon
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY probes ./probes
RUN pip install --no-cache-dir . \
    && useradd --system --no-create-home --shell /usr/sbin/nologin vcmon

USER vcmon
EXPOSE 9470
ENTRYPOINT ["vcmon"]
CMD ["run", "--listen", "0.0.0.0:9470"]
