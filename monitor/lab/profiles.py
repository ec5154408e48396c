"""How a lab site behaves (delay, jitter, loss, outages) and ready-made scenarios.

``delay`` is what the site adds to a round trip: the responder answers each echo
request ``delay`` ± uniform(``jitter``) seconds after it arrived, so a probe measures
an RTT of about ``delay`` and a jitter (mean |ΔRTT|) of 2·jitter/3.

TWAMP-light test packets (the EF-marked UDP streams of vcmon's ``twamp`` probes) are
reflected at every lab site, and their two directions can differ: ``fwd_*`` is what a
packet meets on the way to the site (``fwd.loss=2%`` in ``lab set``), ``rev_*`` on the
way back, each a delay ± uniform jitter and an independent loss, so a direction's
jitter (mean |IPDV|) reads 2·jitter/3 as ICMP's does. The round-trip settings above
sit on the way back of every packet, echo reply or reflection alike, unless
``icmp_only``: then they are what a router that deprioritises ICMP does to pings only,
while the streams pass clean (the ``icmp-deprioritised`` setting).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from monitor.inventory import Site
from monitor.inventory.fields import parse_duration


class LabError(Exception):
    """Something the lab cannot do; the message says what and how to fix it."""


class Profile(BaseModel):
    """One lab site's behaviour; ``label`` is its role in the scenario (for reports)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = "custom"
    delay: float = Field(0.0, ge=0.0, le=10.0)
    jitter: float = Field(0.0, ge=0.0, le=10.0)
    loss: float = Field(0.0, ge=0.0, le=1.0)
    # mean length of a loss burst in packets (Gilbert–Elliott); None: independent losses
    burst: float | None = Field(None, ge=1.0, le=1000.0)
    down: bool = False
    # seconds; the site is down in the second half of every period (of wall-clock time,
    # so that anyone can tell the phase)
    flap: float = Field(0.0, ge=0.0, le=86400.0)
    # TWAMP test packets: on the way to the site, and on the way back
    fwd_delay: float = Field(0.0, ge=0.0, le=10.0)
    fwd_jitter: float = Field(0.0, ge=0.0, le=10.0)
    fwd_loss: float = Field(0.0, ge=0.0, le=1.0)
    rev_delay: float = Field(0.0, ge=0.0, le=10.0)
    rev_jitter: float = Field(0.0, ge=0.0, le=10.0)
    rev_loss: float = Field(0.0, ge=0.0, le=1.0)
    # delay, jitter, loss and burst above touch ICMP echo only (deprioritised by routers)
    icmp_only: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        for way in ("", "fwd.", "rev."):
            prefix = way.replace(".", "_")
            jitter, delay = getattr(self, f"{prefix}jitter"), getattr(self, f"{prefix}delay")
            if jitter > delay:
                raise ValueError(
                    f"{way}jitter {_ms(jitter)} exceeds {way}delay {_ms(delay)}: a reply "
                    f"cannot come before its request; raise {way}delay or lower {way}jitter")
        if self.burst is not None and self.loss >= 1.0:
            raise ValueError("burst needs a loss below 100%; lower loss or set burst=off")
        if 0 < self.flap < 0.02:
            raise ValueError(f"flap period {_ms(self.flap)} is too short; use at least 20ms")
        return self

    def describe(self) -> str:
        """The profile as ``lab set`` would write it."""
        words = [f"delay={_ms(self.delay)}", f"jitter={_ms(self.jitter)}",
                 f"loss={self.loss * 100:g}%"]
        if self.burst is not None:
            words.append(f"burst={self.burst:g}")
        if self.flap:
            words.append(f"flap={self.flap:g}s")
        for way in ("fwd", "rev"):
            delay, jitter, loss = (getattr(self, f"{way}_{name}")
                                   for name in ("delay", "jitter", "loss"))
            if delay or jitter or loss:
                words.append(f"{way}.delay={_ms(delay)} {way}.jitter={_ms(jitter)} "
                             f"{way}.loss={loss * 100:g}%")
        if self.icmp_only:
            words.append("icmp-deprioritised")
        if self.down:
            words.append("down")
        return " ".join(words)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}ms"


SETTINGS_HELP = ("delay=40ms jitter=10ms loss=2% burst=4 flap=10s, or down / up "
                 "(burst: mean loss burst in packets, off for independent losses; "
                 "flap: down in the second half of each period, off to stop); "
                 "fwd.delay= fwd.jitter= fwd.loss= rev.delay= rev.jitter= rev.loss= for "
                 "TWAMP streams to and from the site; icmp-deprioritised (delay, jitter "
                 "and loss for pings only) or icmp-deprioritised=off")

# What a router that deprioritises ICMP does to pings while EF-marked media pass clean:
# delayed, jittered (2·60/3 = 40 ms, over the 30 ms threshold) and dropped (5 %).
ICMP_DEPRIORITISED: dict[str, Any] = {"delay": 0.080, "jitter": 0.060, "loss": 0.05,
                                      "icmp_only": True}


def _percent(text: str) -> float:
    number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not 0.0 <= number <= 1.0:
        raise ValueError
    return number


def _setting(word: str) -> dict[str, Any]:
    if word == "down":
        return {"down": True}
    if word == "up":
        # back to normal: an "up" site neither stays down nor keeps flapping
        return {"down": False, "flap": 0.0}
    if word == "icmp-deprioritised":
        return dict(ICMP_DEPRIORITISED)
    key, equals, value = word.partition("=")
    try:
        if key == "icmp-deprioritised" and value == "off":
            return {"icmp_only": False}
        if key in ("delay", "jitter", "fwd.delay", "fwd.jitter", "rev.delay",
                   "rev.jitter") and equals:
            return {key.replace(".", "_"): parse_duration(value)}
        if key in ("loss", "fwd.loss", "rev.loss") and equals:
            return {key.replace(".", "_"): _percent(value)}
        if key == "burst" and equals:
            return {"burst": None if value == "off" else float(value)}
        if key == "flap" and equals:
            return {"flap": 0.0 if value == "off" else parse_duration(value)}
    except ValueError:
        raise LabError(f"{word!r}: {value!r} is not a valid {key}; e.g. {SETTINGS_HELP}") from None
    raise LabError(f"{word!r} is not a lab setting; use {SETTINGS_HELP}")


def apply_settings(profile: Profile, words: Sequence[str]) -> Profile:
    """``profile`` with the settings ``words`` (``delay=40ms``, ``down``, …) applied;
    settings not named keep their value."""
    if not words:
        raise LabError(f"no settings given; use {SETTINGS_HELP}")
    changes: dict[str, Any] = {}
    for word in words:
        changes.update(_setting(word.strip()))
    try:
        return Profile.model_validate({**profile.model_dump(), **changes})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'profile'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors())
        raise LabError(f"{' '.join(words)}: {problems}") from None


# --- scenarios -----------------------------------------------------------------------

# Round-trip times of the province's 3-tier network as technicians quote them.
TIER_DELAY_MS = {"province": (2.0, 5.0), "district": (5.0, 15.0), "commune": (15.0, 60.0),
                 "unit": (15.0, 60.0)}
# Healthy links: jitter a small fraction of the delay.
_HEALTHY_JITTER = 0.1
_DEGRADED_SHARE = 0.05

Scenario = Callable[[Sequence[Site], random.Random], dict[str, Profile]]


def _healthy(site: Site, rng: random.Random) -> Profile:
    low, high = TIER_DELAY_MS[site.tier]
    delay = round(rng.uniform(low, high), 1) / 1000
    label = "commune" if site.tier == "unit" else site.tier
    return Profile(label=label, delay=delay, jitter=round(delay * _HEALTHY_JITTER, 4))


def healthy(sites: Sequence[Site], rng: random.Random) -> dict[str, Profile]:
    """Every site answers at its tier's RTT with a little jitter and no loss."""
    return {site.id: _healthy(site, rng) for site in sites}


def conference_day(sites: Sequence[Site], rng: random.Random) -> dict[str, Profile]:
    """Most sites healthy; ~5 % of communes degraded (jitter 40 ms, loss 3 %); one
    district-level uplink down, which silences the communes behind it.

    "Jitter 40 ms" is what vcmon should measure (mean |ΔRTT|), above the 30 ms
    threshold so these links read degraded: uniform ±60 ms noise gives 2·60/3 = 40 ms.
    """
    profiles = healthy(sites, rng)
    districts = [site for site in sites if site.tier == "district"]
    behind: set[str] = set()
    # A lab with a single district keeps it: with it down, nothing but the hall would answer.
    if len(districts) > 1:
        down = rng.choice(districts)
        profiles[down.id] = profiles[down.id].model_copy(update={"label": "down", "down": True})
        behind = {site.id for site in sites if site.district == down.id and site.id != down.id}
        for site_id in behind:
            profiles[site_id] = profiles[site_id].model_copy(update={"label": "behind-down"})
    communes = [site for site in sites
                if site.tier in ("commune", "unit") and site.id not in behind]
    count = min(len(communes), max(1, round(_DEGRADED_SHARE * len(communes))))
    for site in rng.sample(communes, count) if communes else []:
        # Above 60 ms, so that ±60 ms of jitter never asks for a reply before its request.
        delay = round(rng.uniform(65.0, 80.0), 1) / 1000
        profiles[site.id] = Profile(label="degraded", delay=delay, jitter=0.060, loss=0.03)
    return profiles


SCENARIOS: dict[str, Scenario] = {"conference-day": conference_day, "healthy": healthy}
