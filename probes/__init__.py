"""Probe kinds. Each kind is one module; ``KINDS`` is the only list of them."""

from typing import Any

from probes import http, sip, tcp, tls
from probes._result import Outcome, ProbeResult
from probes._service import EchoSpec, ProbeKind
from probes.icmp import IcmpEngine

# The probe kinds by the name inventories use; config validation and dispatch both read
# it. An engine kind (icmp) can be a site's continuous probe (``kind:``); every kind can
# be listed under ``probes:``.
KINDS: dict[str, ProbeKind[Any]] = {
    "icmp": ProbeKind(EchoSpec, engine=IcmpEngine),
    "tcp": ProbeKind(tcp.TcpSpec, tcp.probe),
    "tls": ProbeKind(tls.TlsSpec, tls.probe),
    "sip": ProbeKind(sip.SipSpec, sip.probe),
    "http": ProbeKind(http.HttpSpec, http.probe),
}

__all__ = ["KINDS", "Outcome", "ProbeResult"]
