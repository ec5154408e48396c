"""The /metrics page of an instance: the per-site and per-service families (written
straight to the text format, ``monitor.metrics.sites``) followed by the instance's own
registry. Per-site series carry ``site``, ``tier``, ``district`` and ``provision``;
anything longer (name, parent, address) lives on ``vcmon_site_info`` only, to be joined
in PromQL. Removed sites vanish by themselves because every scrape renders the current
table."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest

from monitor.metrics.labels import LabelCache
from monitor.metrics.paths import render_paths
from monitor.metrics.services import render_services
from monitor.metrics.sites import render_site_chunks
from monitor.metrics.streams import render_streams
from monitor.status.source import Source


class SitePage:
    """The sites' and services' part of /metrics over a ``Source``, with its label
    texts; ``reconfigure`` after the source's tables change (start, reload)."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self.labels = LabelCache()
        self.reconfigure()

    def reconfigure(self) -> None:
        self.labels.fill(self._source.table, self._source.health.services)
        config = self._source.config
        # the sites whose every series is written (inventory ``series: full:``)
        self.full: frozenset[str] = frozenset(
            site.id for site in config.sites if config.series.full_for(site.id, site.tier))

    def chunks(self) -> Iterator[bytes]:
        """In pieces of about a thousand sites' lines of one family; takes no lock
        (see ``monitor.metrics.sites``)."""
        source, labels = self._source, self.labels
        now = source.table.clock()
        for text in render_site_chunks(source.table, source.health, labels.sites, now,
                                       self.full):
            yield text.encode()
        yield render_services(source.health.services, labels.probes, now).encode()
        yield render_paths(source.health).encode()
        yield render_streams(source.health.streams, labels.probes, now).encode()


def render(source: Source, registry: CollectorRegistry) -> bytes:
    """The whole /metrics page at once (tests, and small inventories)."""
    return b"".join([*SitePage(source).chunks(), generate_latest(registry)])
