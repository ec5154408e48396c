"""The inventory: which sites exist, how they hang together, and how each one is probed.

Loading reports every problem in a file at once, each with its file, line and field,
so that an operator fixes an inventory in one pass rather than one error per restart.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from monitor.inventory.calendar import Schedule, schedule_references
from monitor.inventory.diagnosis import DiagnosisSettings
from monitor.inventory.fields import (
    DURATION,
    Provision,
    Slug,
    Tier,
    between,
    check_address,
    check_listen,
    slug,
)
from monitor.inventory.identity import Identity, check_group, check_user, resolve
from monitor.inventory.links import Found, link_problems
from monitor.inventory.mqtt import MqttSettings
from monitor.inventory.problems import (
    Loc,
    explain,
    field_path,
    show,
    unknown_name,
)
from monitor.inventory.problems import show_number as _num
from monitor.inventory.reading import clean_name, clean_text
from monitor.inventory.reports import ReportSettings
from monitor.inventory.series import SeriesSettings, series_references
from monitor.inventory.shard import Shard
from monitor.inventory.thresholds import HealthSettings, ThresholdOverrides, Thresholds
from monitor.inventory.web import WebSettings
from probes import KINDS, Dscp, ServiceSpec

# Validated by the Config model itself, but reported from the raw document by the loader,
# which can do so even when other parts of the file are invalid, and knows the lines.
RECHECKED = frozenset({"site_links", "probe_settings", "schedule_references",
                       "series_references"})
LOADER_FIELDS = frozenset({"source"})
# The source of the embedded Bắc Ninh inventory: a daemon running it is a demo, and
# every sink says so (board, API, metrics, MQTT, reports).
DEMO_SOURCE = "<embedded demo>"


def _known_kind(kind: str) -> str:
    # a site's continuous probe is a packet engine; the others probe a service
    engines = [name for name, each in KINDS.items() if each.engine is not None]
    if kind not in engines:
        hint = "; list service probes under probes:" if kind in KINDS else ""
        raise ValueError(unknown_name("probe kind", kind, engines) + hint)
    return kind


Kind = Annotated[str, AfterValidator(_known_kind)]
Interval = Annotated[float, DURATION, between(0.01, 3600, "seconds")]
Timeout = Annotated[float, DURATION, between(0.001, 60, "seconds")]
Burst = Annotated[int, between(1, 100, "packets")]
BurstSpacing = Annotated[float, DURATION, between(0, None, "seconds")]
# 16 bytes carry the engine's cookie and counter; 1472 fills one 1500-byte Ethernet frame
PayloadSize = Annotated[int, between(16, 1472, "bytes")]
# a window holds every sample it covers; a day of 1/s samples per site is the ceiling
Window = Annotated[float, DURATION, between(0.01, 86400, "seconds")]
DownAfter = Annotated[int, between(1, None, "packets")]
ResolveInterval = Annotated[float, DURATION, between(1, None, "seconds")]


class ServiceProbe(ServiceSpec):
    """One entry of a ``probes:`` list: when and how often, then the kind's own settings."""

    # the `probe` label of its series; two probes of one site need different names
    name: Annotated[str, slug("probe name", "sip-tcp")] | None = None
    interval: Interval = 10.0
    timeout: Timeout = 2.0
    down_after: DownAfter = 3

    @field_validator("timeout")
    @classmethod
    def _ends_before_next(cls, timeout: float, info: ValidationInfo) -> float:
        interval = info.data.get("interval")
        if interval is not None and timeout > interval:
            raise ValueError(f"the timeout of {_num(timeout)} s is longer than the interval of "
                             f"{_num(interval)} s; lower timeout or raise interval")
        return timeout

    @property
    def label(self) -> str:
        return self.name or self.kind


def _entry_kind(entry: Any) -> str | None:
    kind = entry.get("kind") if isinstance(entry, dict) else getattr(entry, "kind", None)
    return kind if isinstance(kind, str) else None


def _known_service_kind(entry: Any) -> Any:
    if isinstance(entry, dict) and "kind" not in entry:
        raise ValueError(f"the probe has no kind; add kind: with one of {', '.join(KINDS)}")
    kind = _entry_kind(entry)
    if kind is not None and kind not in KINDS:
        raise ValueError(unknown_name("probe kind", kind, list(KINDS)))
    return entry


# One model per kind: the schedule fields above with the kind's settings from KINDS.
def _own_fields(settings: type[ServiceSpec]) -> dict[str, Any]:
    """What a kind's settings say over ``ServiceProbe``'s: its own defaults of the common
    fields (twamp's DSCP is EF, not the site's), and its durations ("spacing: 20ms"),
    parsed and range-checked as every duration is."""
    fields = settings.model_fields
    own = {name: (fields[name].annotation, fields[name]) for name in ServiceProbe.model_fields
           if name in settings.__annotations__}
    own.update({name: (Annotated[float, DURATION, between(low, high, "seconds")],
                       fields[name].default)
                for name, (low, high) in getattr(settings, "durations", {}).items()})
    return own


SERVICE_MODELS: dict[str, type[ServiceProbe]] = {
    name: create_model(f"{name.title()}Probe", __base__=(ServiceProbe, kind.settings),
                       kind=(Literal[name], ...),  # type: ignore[arg-type]
                       **_own_fields(kind.settings))
    for name, kind in KINDS.items()
}
# importable by name (monitor.inventory.schema.TcpProbe …), as pickle needs: the daemon gets its
# inventory from a forked child (monitor/inventory/isolated.py)
for _model in SERVICE_MODELS.values():
    _model.__module__ = __name__
    globals()[_model.__name__] = _model
if TYPE_CHECKING:
    _Entry = ServiceProbe
else:
    _Entry = Annotated[
        Union[tuple(Annotated[model, Tag(name)] for name, model in SERVICE_MODELS.items())],  # noqa: UP007 - built from a tuple
        Discriminator(_entry_kind), BeforeValidator(_known_service_kind)]


def _as_tuple(entries: object) -> object:
    # a tuple, so that settings holding it stay hashable (they are cached by value)
    if isinstance(entries, list | tuple):
        return tuple(entries)
    raise ValueError(f"expected a list, found {show(entries)}; write one '- ' line per probe")


def _distinct_names(entries: tuple[ServiceProbe, ...]) -> tuple[ServiceProbe, ...]:
    seen: set[str] = set()
    for entry in entries:
        if entry.label in seen:
            raise ValueError(f'two probes are named "{entry.label}"; give each its own name:, '
                             f"e.g. name: {entry.label}-{len(seen) + 1}")
        seen.add(entry.label)
    return entries


ServiceProbes = Annotated[tuple[_Entry, ...], BeforeValidator(_as_tuple),
                          AfterValidator(_distinct_names)]


class ProbeSettings(BaseModel):
    """How one site is probed: ``defaults:``, or the defaults merged with a site's ``probe:``."""

    # validate_default: the rules between fields also hold when some of them are defaulted
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)

    kind: Kind = "icmp"
    interval: Interval = 1.0
    timeout: Timeout = 1.0
    burst: Burst = 1
    burst_spacing: BurstSpacing = 0.02
    payload_size: PayloadSize = 56
    window: Window = 60.0
    down_after: DownAfter = 3
    resolve_interval: ResolveInterval = 300.0
    dscp: Dscp = 0
    probes: ServiceProbes = ()

    @field_validator("burst_spacing")
    @classmethod
    def _burst_fits_interval(cls, spacing: float, info: ValidationInfo) -> float:
        burst, interval = info.data.get("burst"), info.data.get("interval")
        # either one missing means it was invalid, and that is reported already
        if burst is not None and interval is not None and (burst - 1) * spacing >= interval:
            raise ValueError(
                f"a burst of {burst} packets {_num(spacing)} s apart takes "
                f"{_num((burst - 1) * spacing)} s, not less than the interval of "
                f"{_num(interval)} s; lower burst or burst_spacing, or raise interval"
            )
        return spacing

    @field_validator("window")
    @classmethod
    def _window_holds_interval(cls, window: float, info: ValidationInfo) -> float:
        interval = info.data.get("interval")
        if interval is not None and window < interval:
            raise ValueError(
                f"the window of {_num(window)} s is shorter than the interval of "
                f"{_num(interval)} s and would hold no probe cycle; raise window or lower interval"
            )
        return window


class ProbeOverrides(BaseModel):
    """A site's ``probe:`` section: each field set here replaces the default; None inherits."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: Kind | None = None
    interval: Interval | None = None
    timeout: Timeout | None = None
    burst: Burst | None = None
    burst_spacing: BurstSpacing | None = None
    payload_size: PayloadSize | None = None
    window: Window | None = None
    down_after: DownAfter | None = None
    resolve_interval: ResolveInterval | None = None
    dscp: Dscp | None = None


@functools.lru_cache(maxsize=4096)
def _merged(defaults: ProbeSettings, overrides: ProbeOverrides) -> ProbeSettings:
    return ProbeSettings.model_validate(
        {**defaults.model_dump(), **overrides.model_dump(exclude_none=True)}
    )


def merge_problems(defaults: ProbeSettings, overrides: ProbeOverrides, at: Loc) -> list[Found]:
    try:
        _merged(defaults, overrides)
    except ValidationError as exc:
        found = (described(e, ProbeSettings) for e in exc.errors())
        return [((*at, *loc), message) for loc, message in found]
    return []


Text = Annotated[str, AfterValidator(clean_text)]


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: Text | None = None
    phone: Text | None = None
    email: Text | None = None


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    contractor: Text | None = None
    reference: Text | None = None


class Site(BaseModel):
    """One video-conference endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: Slug
    name: Annotated[str, AfterValidator(clean_name)]
    tier: Tier
    parent: str | None = None
    # after loading: the nearest ancestor-or-self of tier district, else the site itself
    district: str | None = None
    provision: Provision = "vnpt"
    contract: Contract | None = None
    address: Annotated[str, AfterValidator(check_address)]
    contact: Contact | None = None
    probe: ProbeOverrides | None = None
    # None: the default probes; [] none at all
    probes: ServiceProbes | None = None
    thresholds: ThresholdOverrides | None = None

    @field_validator("contract")
    @classmethod
    def _contract_needs_contract_provision(
        cls, contract: Contract | None, info: ValidationInfo
    ) -> Contract | None:
        if contract is not None and info.data.get("provision") == "vnpt":
            raise ValueError(
                "contract details belong to contracted sites only; "
                "set provision: contract, or remove contract"
            )
        return contract

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled (the daemon's inventory comes from a reader child, pickled): the
        # fields set one by one into the fresh instance make a dict that shares its keys
        # with every other site's (CPython's split table, 240 bytes where the pickled
        # dict takes 464: 4 MB at 20,000 sites). The rest as pydantic restores it.
        set_slot = object.__setattr__
        set_slot(self, "__pydantic_fields_set__", state.get("__pydantic_fields_set__", set()))
        set_slot(self, "__pydantic_extra__", state.get("__pydantic_extra__"))
        set_slot(self, "__pydantic_private__", state.get("__pydantic_private__"))
        for name, value in state["__dict__"].items():
            set_slot(self, name, value)


def _with_districts(sites: list[Site]) -> list[Site]:
    by_id = {site.id: site for site in sites}

    def district_of(site: Site) -> str:
        node: Site | None = site
        while node is not None:
            if node.tier == "district":
                return node.id
            node = by_id.get(node.parent) if node.parent else None
        return site.id

    return [
        site if site.district else site.model_copy(update={"district": district_of(site)})
        for site in sites
    ]


class Config(BaseModel):
    """A whole inventory: where to serve metrics, the probe defaults, and the sites."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    listen: Annotated[str, AfterValidator(check_listen)] = "127.0.0.1:9470"
    defaults: ProbeSettings = Field(default_factory=ProbeSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    schedule: Schedule = Field(default_factory=Schedule)
    # no mqtt: section, no MQTT
    mqtt: MqttSettings | None = None
    # None: the daemon writes no scheduled reports (``vcmon report`` still works)
    reports: ReportSettings | None = None
    # None: one instance probes every site; else only its shard (``monitor.inventory.shard``)
    shard: Shard | None = None
    # TLS and basic auth of the HTTP endpoints (a Prometheus web.yml), POST /-/reload
    web: WebSettings = Field(default_factory=WebSettings)
    # path traces on degradation, on request and for baselines (monitor/inventory/diagnosis.py)
    diagnosis: DiagnosisSettings = Field(default_factory=DiagnosisSettings)
    # which sites export every per-site series, not only the default ~20 (docs/metrics.md)
    series: SeriesSettings = Field(default_factory=SeriesSettings)
    # started as root: who vcmon becomes once its sockets are open (monitor/inventory/identity.py)
    user: Annotated[str, AfterValidator(check_user)] | None = None
    group: Annotated[str, AfterValidator(check_group)] | None = None
    sites: list[Site]
    source: str = "<embedded>"

    _by_id: dict[str, Site] = PrivateAttr(default_factory=dict)
    _children: dict[str, list[Site]] = PrivateAttr(default_factory=dict)

    @property
    def demo(self) -> bool:
        """Whether this is the embedded demo inventory, not the province's own."""
        return self.source == DEMO_SOURCE

    @field_validator("sites")
    @classmethod
    def _link_sites(cls, sites: list[Site]) -> list[Site]:
        if not sites:
            raise ValueError("no sites are listed; add at least one site under sites:")
        # vars(): the fields as they are, without a copy of each site's (0.1 s at 20,000)
        found = link_problems([vars(site) for site in sites], lambda i: f"sites[{i}]")
        if found:
            raise _summary("site_links", found)
        return _with_districts(sites)

    @field_validator("group")
    @classmethod
    def _group_needs_user(cls, group: str | None, info: ValidationInfo) -> str | None:
        if group is not None and info.data.get("user") is None:
            raise ValueError("a group is switched to together with a user; set user: too")
        return group

    @property
    def identity(self) -> Identity | None:
        """Who to become after opening the sockets; None: stay who started vcmon."""
        return None if self.user is None else resolve(self.user, self.group)

    @model_validator(mode="after")
    def _index(self) -> Config:
        found = [
            problem
            for i, site in enumerate(self.sites)
            if site.probe is not None
            for problem in merge_problems(self.defaults, site.probe, ("sites", i, "probe"))
        ]
        if found:
            raise _summary("probe_settings", found)
        found = schedule_references(self.schedule.model_dump(), {site.id for site in self.sites})
        if found:
            raise _summary("schedule_references", found)
        found = series_references(self.series.model_dump(), {site.id for site in self.sites})
        if found:
            raise _summary("series_references", found)
        self._by_id = {site.id: site for site in self.sites}
        # only the sites someone hangs from: most are leaves (an empty list each was 3 MB
        # at 20,000 sites)
        self._children = {}
        # Which fields a site set is one of a few combinations: one shared set for each
        # (pydantic copies it before any change), not 728 bytes a site (14 MB at 20,000).
        shared: dict[frozenset[str], set[str]] = {}
        for site in self.sites:
            if site.parent is not None:
                self._children.setdefault(site.parent, []).append(site)
            fields = site.__pydantic_fields_set__
            object.__setattr__(site, "__pydantic_fields_set__",
                               shared.setdefault(frozenset(fields), fields))
        return self

    def settings_for(self, site: Site) -> ProbeSettings:
        """The site's probe settings: the defaults with its ``probe:`` overrides applied."""
        return self.defaults if site.probe is None else _merged(self.defaults, site.probe)

    def services_for(self, site: Site) -> tuple[ServiceProbe, ...]:
        """The site's service probes (its own list, else the defaults'), each with a DSCP:
        its own, else the site's."""
        dscp = self.settings_for(site).dscp
        entries = self.defaults.probes if site.probes is None else site.probes
        return tuple(entry if entry.dscp is not None else entry.model_copy(update={"dscp": dscp})
                     for entry in entries)

    def thresholds_for(self, site: Site) -> Thresholds:
        """Default thresholds, then the site's tier's, then the site's own."""
        return self.health.thresholds_for(site.tier, site.thresholds)

    def site(self, site_id: str) -> Site:
        return self._by_id[site_id]

    def children(self, site_id: str) -> list[Site]:
        """The sites whose parent is ``site_id``, in inventory order; KeyError if it is unknown."""
        if site_id not in self._by_id:
            raise KeyError(site_id)
        return list(self._children.get(site_id, ()))


def described(error: ErrorDetails, root: type[BaseModel],
               hidden: frozenset[str] = frozenset()) -> tuple[Loc, str]:
    """Where an error is and what to do, with the kind that pydantic puts in the path of
    a ``probes:`` entry left out (``probes[1].sip.port`` is ``probes[1].port``)."""
    loc = tuple(error["loc"])
    for i in range(2, len(loc)):
        model = SERVICE_MODELS.get(str(loc[i])) if isinstance(loc[i - 1], int) else None
        if loc[i - 2] == "probes" and model is not None:
            loc = (*loc[:i], *loc[i + 1:])
            if error["type"] == "extra_forbidden" and len(loc) == i + 1:
                return loc, unknown_name("key", str(loc[-1]), list(model.model_fields))
            break
    return loc, explain({**error, "loc": loc}, root, hidden)


def _summary(kind: str, found: list[Found]) -> PydanticCustomError:
    summary = "; ".join(f"{field_path(loc)}: {message}" for loc, message in found)
    return PydanticCustomError(kind, "{summary}", {"summary": summary})
