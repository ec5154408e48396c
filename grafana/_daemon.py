"""vcmon itself: is the monitor healthy enough to trust what the other dashboards say."""

from __future__ import annotations

from grafana._panels import (
    Json,
    Query,
    Size,
    dashboard,
    override,
    query_variable,
    stat,
    steps,
    timeseries,
    value_texts,
)
from grafana._vcmon import labels

UID = "vcmon-daemon"
INSTANCE = labels('instance=~"$instance"')
RATE = "[$__rate_interval]"
# Targets that are vcmon: `up` and the scrape series carry only job and instance, so they
# are matched to vcmon_build_info. The last hour keeps a stopped daemon on the board.
VCMON_TARGETS = f"last_over_time(vcmon_build_info{INSTANCE}[1h])"


def _rate(counter: str, by: str, legend: str) -> Query:
    return Query(f"sum by ({by}) (rate({counter}{INSTANCE}{RATE}))", legend=legend)


def _quantiles(metric: str, *qs: float) -> list[Query]:
    return [Query(f"histogram_quantile({q}, sum by (le, instance) "
                  f"(rate({metric}_bucket{INSTANCE}{RATE})))",
                  legend=f"{{{{instance}}}} p{q * 100:g}")
            for q in qs]


def _state(title: str, description: str, expr: str, legend: str, good: str,
           bad: str) -> Json:
    return stat(title, description, [Query(expr, legend=legend, instant=True)], Size(4, 4),
                background=True, thresholds=steps("red", (1, "green")),
                mappings=value_texts([(1, good, "green"), (0, bad, "red")]))


def _now() -> list[Json]:
    return [
        _state("Scrape", "Prometheus's last scrape of each vcmon instance.",
               f"up * on(instance, job) group_left(version) {VCMON_TARGETS}",
               "{{instance}} {{version}}", "up", "down"),
        stat("Sites configured", "Sites in the running inventory, all instances.",
             [Query(f"sum(vcmon_sites_configured{INSTANCE})", legend="sites", instant=True)],
             Size(4, 4)),
        _state("Configuration", "Whether the last load or reload (SIGHUP, POST /-/reload) "
               "was accepted; a rejected one keeps the previous inventory running.",
               f"vcmon_config_last_reload_successful{INSTANCE}", "{{instance}}", "loaded",
               "rejected"),
        stat("Loaded", "When the running inventory was loaded.",
             [Query(f"1000 * vcmon_config_last_reload_success_timestamp_seconds{INSTANCE}",
                    legend="{{instance}}", instant=True)], Size(4, 4), unit="dateTimeFromNow"),
        stat("Reloads", "Configuration loads in the selected time range, by result.",
             [Query(f"sum by (result) (increase(vcmon_config_reloads_total{INSTANCE}"
                    "[$__range]))", legend="{{result}}", instant=True)], Size(4, 4),
             extra={"decimals": 0}),
        _state("MQTT", "Whether vcmon is connected to its MQTT broker.",
               f"vcmon_mqtt_connected{INSTANCE}", "{{instance}}", "connected", "disconnected"),
    ]


def _graphs() -> list[Json]:
    return [
        timeseries("Probe rate", "Probes sent by the scheduler, and probes resolved "
                   "(answered or timed out). Sent flat at zero: the loop is stalled.",
                   [_rate("vcmon_scheduler_sends_total", "instance", "{{instance}} sent"),
                    _rate("vcmon_probe_packets_sent_total", "instance", "{{instance}} resolved"),
                    _rate("vcmon_probe_packets_received_total", "instance",
                          "{{instance}} answered")],
                   Size(12, 8), unit="pps"),
        timeseries("Scheduler lag", "How late the sender woke for the earliest probe due; "
                   "skipped cycles (right axis) mean the daemon stalled for over an interval.",
                   [*_quantiles("vcmon_scheduler_lag_seconds", 0.5, 0.99),
                    _rate("vcmon_scheduler_skipped_cycles_total", "instance", "skipped cycles")],
                   Size(12, 8), unit="s",
                   overrides=[override("skipped cycles", ("unit", "cps"),
                                       ("custom.axisPlacement", "right"))]),
        timeseries("Scrape time", "How long Prometheus's scrape of vcmon took, and vcmon's "
                   "own time to render /metrics.",
                   [Query(f"scrape_duration_seconds and on(instance, job) {VCMON_TARGETS}",
                          legend="{{instance}} scrape"),
                    *_quantiles("vcmon_metrics_render_seconds", 0.99)],
                   Size(12, 8), unit="s"),
        timeseries("Probe errors by reason", "Probes that ended in an ICMP error "
                   "(unreachable, TTL exceeded) or could not be sent.",
                   [_rate("vcmon_probe_errors_total", "reason", "{{reason}}")],
                   Size(12, 8), unit="pps"),
        timeseries("ICMP ignored", "ICMP packets read and ignored: foreign, late, duplicate, "
                   "malformed, wrong cookie. Many late ones: timeouts too short.",
                   [_rate("vcmon_icmp_packets_ignored_total", "reason", "{{reason}}")],
                   Size(12, 8), unit="pps"),
        timeseries("MQTT queue", "Events waiting for the broker; the queue is bounded, so "
                   "probing never waits on MQTT.",
                   [Query(f"vcmon_mqtt_queue_depth{INSTANCE}", legend="{{instance}}")],
                   Size(12, 8), unit="short"),
        timeseries("MQTT messages", "Messages the broker acknowledged, and messages dropped "
                   "because the queue was full, by kind.",
                   [_rate("vcmon_mqtt_published_total", "kind", "published {{kind}}"),
                    _rate("vcmon_mqtt_dropped_total", "kind", "dropped {{kind}}")],
                   Size(12, 8), unit="cps"),
        timeseries("MQTT trouble", "Reconnection attempts, and publishes that failed before "
                   "the broker acknowledged them (queued ones are sent again).",
                   [_rate("vcmon_mqtt_reconnects_total", "instance", "{{instance}} reconnects"),
                    _rate("vcmon_mqtt_publish_errors_total", "instance",
                          "{{instance}} publish errors")],
                   Size(12, 8), unit="cps"),
    ]


def build() -> Json:
    return dashboard(
        UID, "vcmon: the monitor itself", "Probe rate, scheduler lag, scrape time, probe "
        "errors, configuration reloads and MQTT of every vcmon instance.",
        variables=[query_variable("instance", "Instance", "label_values(vcmon_build_info, "
                                  "instance)", multi=True, include_all=True)],
        panels=[*_now(), *_graphs()],
        time_from="now-6h")
