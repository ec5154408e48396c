"""When a link counts as degraded: thresholds, and how long a state must hold.

Defaults follow interactive-video guidance (Cisco's video baseline, ITU-T Y.1541
class 0): one-way latency ≤ 150 ms, jitter ≤ 30 ms, loss ≤ 1 %. vcmon measures
round trips, so the RTT threshold is twice the one-way budget (300 ms), which
assumes a symmetric path.
"""

from __future__ import annotations

import contextlib
import math
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from monitor.inventory.fields import DURATION, Tier
from monitor.inventory.problems import show

THRESHOLD_NAMES = ("rtt", "jitter", "loss", "mos")


def parse_ratio(value: object) -> float:
    """A ratio from ``0.01`` or ``"1%"``."""
    ratio = math.nan
    if isinstance(value, str):
        text = value.strip()
        with contextlib.suppress(ValueError):
            ratio = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ratio = float(value)
    if not 0 <= ratio <= 1:
        raise ValueError(f"{show(value)} is not a ratio; write 0.01 or 1% (0 to 100 %)")
    return ratio


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"{value:g} must be above 0; write e.g. 300ms")
    return value


def _mos_scale(value: float) -> float:
    if not 1 <= value <= 4.5:
        raise ValueError(f"{value:g} is not on the MOS scale; use 1 to 4.5, e.g. 3.6")
    return value


Seconds = Annotated[float, DURATION, AfterValidator(_positive)]
Ratio = Annotated[float, BeforeValidator(parse_ratio)]
Mos = Annotated[float, AfterValidator(_mos_scale)]
Count = Annotated[int, Field(ge=1, le=1000)]


class Thresholds(BaseModel):
    """A link is degraded when its window's average RTT, jitter or loss is above these,
    or its MOS below."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    rtt: Seconds = 0.300
    jitter: Seconds = 0.030
    loss: Ratio = 0.01
    # R ≈ 70: the E-model's boundary between "some users dissatisfied" and "many"
    mos: Mos = 3.6


class ThresholdOverrides(BaseModel):
    """Per tier or per site: each field set here replaces the inherited one."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    rtt: Seconds | None = None
    jitter: Seconds | None = None
    loss: Ratio | None = None
    mos: Mos | None = None

    def apply(self, base: Thresholds) -> Thresholds:
        return base.model_copy(update=self.model_dump(exclude_none=True))


class HealthSettings(BaseModel):
    """The ``health:`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    thresholds: Thresholds = Field(default_factory=Thresholds)
    tiers: dict[Tier, ThresholdOverrides] = Field(default_factory=dict)
    # thresholds are judged on the site's statistics window this often
    evaluate_every: Seconds = 5.0
    # hysteresis: consecutive bad evaluations to become degraded, good ones to leave it
    enter_after: Count = 3
    leave_after: Count = 3
    # consecutive replies before a down site counts as back
    recover_after: Count = 2
    # At 1 probe/s a 60 s window holds 60 packets: one lost packet is 1.7 % loss, above
    # the 1 % threshold. Requiring two keeps a single lost packet from flapping a site.
    min_lost: Count = 2
    # fewer replies than this in the window say nothing about RTT, jitter or MOS
    min_replies: Count = 5

    def thresholds_for(self, tier: Tier, site: ThresholdOverrides | None) -> Thresholds:
        base = self.thresholds
        tier_overrides = self.tiers.get(tier)
        if tier_overrides is not None:
            base = tier_overrides.apply(base)
        return base if site is None else site.apply(base)
