"""Probe kinds. Each kind is one module; ``KINDS`` is the only list of them."""

from probes._result import Outcome, ProbeResult

__all__ = ["Outcome", "ProbeResult"]
