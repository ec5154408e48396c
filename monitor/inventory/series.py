"""The inventory's ``series:`` section: which sites export every per-site series.

By default a site exports the ~20 series the dashboards, alerts and reports need
(docs/metrics.md#series-per-site): its RTT histogram is only its sum and count, its
status only the one it is in. A province's few sites are cheap either way, but at
20,000 sites the full set is ~980,000 series and a Prometheus of 4 GB; ``full:`` names
the tiers and the sites that get it all (the histogram's 17 buckets, R-factor, window
packets, every status and threshold as 0 or 1):

    series:
      full:
        tiers: [province, district]
        sites: [bn-tiendu-xa-lac-ve]
"""

from __future__ import annotations

from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field

from monitor.inventory.fields import Tier
from monitor.inventory.links import Found
from monitor.inventory.problems import did_you_mean, show


class FullSeries(BaseModel):
    """The tiers and sites whose every series is exported."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    tiers: list[Tier] = Field(default_factory=list)
    sites: list[str] = Field(default_factory=list)


class SeriesSettings(BaseModel):
    """The ``series:`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    full: FullSeries = Field(default_factory=FullSeries)

    @cached_property
    def _full_sites(self) -> frozenset[str]:
        # asked once per site at every start and reload: the list took 205 ms at
        # 20,000 sites with 1,000 of them named, on the probe loop
        return frozenset(self.full.sites)

    def full_for(self, site_id: str, tier: str) -> bool:
        """Whether this site exports every series, not only the default ~20."""
        return tier in self.full.tiers or site_id in self._full_sites


def series_references(series: object, site_ids: set[str]) -> list[Found]:
    """``series.full.sites`` entries that are not sites of this inventory."""
    full = series.get("full") if isinstance(series, dict) else None
    names = full.get("sites") if isinstance(full, dict) else None
    if not isinstance(names, list):
        return []
    return [(("series", "full", "sites", i),
             f"{show(name)} is not a site id in this inventory; use the id of a listed "
             f"site{did_you_mean(name, sorted(site_ids))}")
            for i, name in enumerate(names) if isinstance(name, str) and name not in site_ids]
