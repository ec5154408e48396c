"""The topic tree and the JSON of each message (docs/mqtt.md#topics shows them)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from monitor.inventory import Site
from monitor.status.health import SiteHealth, StateChange, measurements
from monitor.status.streams import StreamState, stream_document
from monitor.status.window import WindowStats


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def reports(self) -> str:
        return f"{self.prefix}/reports"

    # site ids are slugs ([a-z0-9_-]), checked by the inventory: always one topic level
    def state(self, site_id: str) -> str:
        return f"{self.prefix}/sites/{site_id}/state"

    def measurements(self, site_id: str) -> str:
        return f"{self.prefix}/sites/{site_id}/measurements"


def timestamp(unix: float) -> str:
    """RFC 3339 in UTC with milliseconds: what phones and dashboards parse without help."""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _encode(document: dict[str, Any]) -> bytes:
    # Vietnamese names stay readable on a technician's MQTT app instead of \u escapes.
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _site(site: Site) -> dict[str, Any]:
    return {"site": site.id, "name": site.name, "tier": site.tier,
            "district": site.district or site.id, "parent": site.parent,
            "provision": site.provision}


def _streams(streams: list[StreamState], now: float) -> list[dict[str, Any]]:
    documents = [stream_document(stream, now) for stream in streams]
    for document in documents:
        at = document["last_stream_at"]
        document["last_stream_at"] = timestamp(at) if at is not None else None
    return documents


def state_payload(health: SiteHealth, stats: WindowStats | None, now: float,
                  path: dict[str, Any] | None = None,
                  streams: list[StreamState] | None = None) -> bytes:
    """The retained ``sites/<id>/state`` message: status now and the window behind it,
    the site's last traced path once it has one (``monitor.status.paths.path_record``),
    and each TWAMP stream's window, per direction (``streams``, only for sites with one)."""
    document = {
        **_site(health.site),
        "status": health.status.value,
        "reason": health.reason,
        "since": timestamp(health.since),
        "window": measurements(stats) if stats is not None else None,
        "updated": timestamp(now),
    }
    if path is not None:
        document["path"] = path
    if streams:
        document["streams"] = _streams(streams, now)
    return _encode(document)


def event_payload(change: StateChange, run: str, seq: int) -> bytes:
    """One ``events`` message; ``id`` is the same for every copy of the same event."""
    return _encode({
        "id": f"{run}:{seq}",
        "run": run,
        "seq": seq,
        "at": timestamp(change.at),
        **_site(change.site),
        "before": change.before.value,
        "after": change.after.value,
        "reason": change.reason,
        "window": change.measurements or None,
    })


def path_payload(health: SiteHealth, path: dict[str, Any], diagnosis: str, run: str,
                 seq: int, now: float) -> bytes:
    """An ``events`` message with ``"event": "path"``: a trace taken because the site went
    bad (or an operator asked) has found where it breaks. It follows the state change
    that asked for it by the length of one trace; ``id`` as in ``event_payload``."""
    return _encode({
        "id": f"{run}:{seq}",
        "run": run,
        "seq": seq,
        "at": timestamp(now),
        "event": "path",
        **_site(health.site),
        "status": health.status.value,
        "diagnosis": diagnosis,
        "path": path,
    })


def measurement_payload(site: Site, stats: WindowStats, now: float,
                        streams: list[StreamState] | None = None) -> bytes:
    """One periodic ``sites/<id>/measurements`` message: every statistic of the window,
    and each TWAMP stream's window, per direction (``streams``, only for sites with one)."""
    document = {"site": site.id, "at": timestamp(now), **dataclasses.asdict(stats)}
    if streams:
        document["streams"] = _streams(streams, now)
    return _encode(document)
