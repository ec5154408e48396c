"""The service probes' part of /metrics, in the text format."""

from __future__ import annotations

from monitor.metrics.labels import Texts
from monitor.metrics.text import families_text
from monitor.metrics.text import number as _num
from monitor.status.services import ServiceTable

# (name, type, help) in output order, as in ``monitor.metrics.sites``.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("vcmon_probe_info", "gauge",
     "Service probes of a site: kind, port and DSCP, by probe name."),
    ("vcmon_probe_up", "gauge",
     "1 while the service answers, 0 after down_after failed probes in a row."),
    ("vcmon_probe_success", "gauge", "1 if the service's last probe got an answer, 0 if not."),
    ("vcmon_probe_duration_seconds", "gauge",
     "How long the last answered probe took: connect, handshake or response time."),
    ("vcmon_probe_attempts", "counter", "Service probes run, counted when they resolve."),
    ("vcmon_probe_failures", "counter",
     "Service probes without an answer, by reason: timeout, refused, unreachable, "
     "send_error, or what was wrong with the answer (cert_expired, http_status …)."),
    ("vcmon_probe_status_code", "gauge", "The status code of the last SIP or HTTP answer."),
    ("vcmon_tls_cert_expiry_seconds", "gauge",
     "Seconds until the TLS certificate expires (negative once expired)."),
    ("vcmon_tls_handshake_seconds", "gauge", "Time of the last TLS handshake."),
)


def render_services(table: ServiceTable, texts: dict[str, Texts], now: float) -> str:
    """The service probe families in the text format; read-only, like ``render_sites``."""
    out: dict[str, list[str]] = {name: [] for name, _, _ in FAMILIES}
    for key, state in list(table.probes.items()):
        found = texts.get(key)
        if found is None:  # a probe a reload added while this page was being written
            continue
        labels, info = found
        out["vcmon_probe_info"].append(f"vcmon_probe_info{{{labels},{info}}} 1")
        if state.up is not None:
            out["vcmon_probe_up"].append(f"vcmon_probe_up{{{labels}}} {int(state.up)}")
        if state.success is not None:
            out["vcmon_probe_success"].append(
                f"vcmon_probe_success{{{labels}}} {int(state.success)}")
        out["vcmon_probe_attempts"].append(f"vcmon_probe_attempts_total{{{labels}}} "
                                           f"{state.attempts}")
        for reason, count in sorted(dict(state.failures).items()):
            out["vcmon_probe_failures"].append(
                f'vcmon_probe_failures_total{{{labels},reason="{reason}"}} {count}')
        for name, value in (("vcmon_probe_duration_seconds", state.duration),
                            ("vcmon_probe_status_code", state.status_code),
                            ("vcmon_tls_handshake_seconds", state.handshake)):
            if value is not None:
                out[name].append(f"{name}{{{labels}}} {_num(float(value))}")
        if state.cert_not_after is not None:
            out["vcmon_tls_cert_expiry_seconds"].append(
                f"vcmon_tls_cert_expiry_seconds{{{labels}}} {_num(state.cert_not_after - now)}")
    return families_text(FAMILIES, out)
