"""Probe kinds. Each kind is one module; ``KINDS`` is the only list of them."""

from probes._result import Outcome, ProbeResult
from probes.icmp import IcmpEngine

# The probe kinds by the name inventories use; config validation and dispatch both read it.
KINDS: dict[str, type[IcmpEngine]] = {"icmp": IcmpEngine}

__all__ = ["KINDS", "Outcome", "ProbeResult"]
