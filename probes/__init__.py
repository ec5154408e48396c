"""Probe kinds. Each kind is one module; ``KINDS`` is the only list of them.

This package is the bottom layer: it imports nothing from ``monitor``. What the daemon
and the lab use from it is exported here (or lives in a public module: ``icmp``,
``icmp_packet``, ``icmp_socket``, ``tcp``, ``tls``, ``sip``, ``http``, ``twamp``,
``twamp_stream``, ``twamp_sender``, ``twamp_reflector``, ``emodel``); modules with a
leading underscore are private to the package.
"""

from typing import Any

from probes import http, sip, tcp, tls
from probes._ip import DOTTED_QUAD, ip_version
from probes._result import Outcome, ProbeResult
from probes._service import Dscp, EchoSpec, ProbeFn, ProbeKind, ServiceSpec, parse_dscp, tos_byte
from probes.icmp import IcmpEngine
from probes.twamp_sender import StreamResult, TwampSender, TwampSpec

# The probe kinds by the name inventories use; config validation and dispatch both read
# it. An engine kind (icmp) can be a site's continuous probe (``kind:``); every kind can
# be listed under ``probes:``.
KINDS: dict[str, ProbeKind[Any]] = {
    "icmp": ProbeKind(EchoSpec, engine=IcmpEngine),
    "tcp": ProbeKind(tcp.TcpSpec, tcp.probe),
    "tls": ProbeKind(tls.TlsSpec, tls.probe),
    "sip": ProbeKind(sip.SipSpec, sip.probe),
    "http": ProbeKind(http.HttpSpec, http.probe),
    "twamp": ProbeKind(TwampSpec, stream=TwampSender),
}

__all__ = [
    "DOTTED_QUAD",
    "KINDS",
    "Dscp",
    "IcmpEngine",
    "Outcome",
    "ProbeFn",
    "ProbeKind",
    "ProbeResult",
    "ServiceSpec",
    "StreamResult",
    "TwampSender",
    "TwampSpec",
    "ip_version",
    "parse_dscp",
    "tos_byte",
]
