"""The inventory's ``diagnosis:`` section: when vcmon traces the path to a site, and how
many packets it may spend doing so.

A trace is an MTR-style snapshot (``probes.trace``): ``cycles`` rounds of one echo
request per hop. vcmon takes one when a site becomes degraded or down, when an operator
asks for one, and now and then to learn each site's normal path (its baseline). Every
trace shares one budget: at most ``packets_per_second`` echo requests in any second, and
at most ``max_concurrent`` traces at once.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, model_validator

from monitor.inventory.fields import DURATION, between

# A path of the province's network is 4 to 12 hops from the monitor; 8 hops a second per
# trace at the least, so that a trace of a 12-hop path fits a budget share in 2 seconds.
MIN_SHARE = 8
MAX_HOPS = 30

Cycles = Annotated[int, between(1, 100, "cycles")]
Concurrent = Annotated[int, between(1, 16, what="number of traces at once")]
Spacing = Annotated[float, DURATION, between(0, 86400, "seconds")]
Budget = Annotated[float, between(MIN_SHARE, 1000, "packets per second")]
# a day at the most: a baseline older than that says little about today's routing
BaselineInterval = Annotated[float, DURATION, between(600, 7 * 86400, "seconds")]


class DiagnosisSettings(BaseModel):
    """``diagnosis:``; absent, diagnosis runs with these defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    enabled: bool = True
    # 10 rounds: one lost of 10 blames nobody, two do (probes.trace.first_bad_hop)
    cycles: Cycles = 10
    max_concurrent: Concurrent = 2
    # a flapping site is traced once per this much time, whatever its state changes
    min_spacing: Spacing = 300.0
    # 40 echo requests a second in all: under 1 % of a 2 Mb/s commune link at 84 bytes each,
    # and far below a router's 1,000 ICMP errors a second (net.ipv4.icmp_msgs_per_sec)
    packets_per_second: Budget = 40.0
    # each site's normal path is learnt once per this time, the sites spread over it
    baseline_interval: BaselineInterval = 86400.0

    @model_validator(mode="after")
    def _share_fits_a_path(self) -> DiagnosisSettings:
        share = self.packets_per_second / self.max_concurrent
        if share < MIN_SHARE:
            raise ValueError(
                f"{self.packets_per_second:g} packets per second shared by "
                f"{self.max_concurrent} traces at once leaves {share:g} per trace, fewer "
                f"than the {MIN_SHARE} a path needs; raise packets_per_second to at least "
                f"{MIN_SHARE * self.max_concurrent} or lower max_concurrent")
        return self

    @property
    def share(self) -> float:
        """Echo requests a second that one trace may send."""
        return self.packets_per_second / self.max_concurrent
