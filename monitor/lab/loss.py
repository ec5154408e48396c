"""Packet-loss models for lab sites: independent (Bernoulli) and bursty (Gilbert–Elliott).

Real WAN loss comes in bursts (a congested uplink, a radio fade), which hurts video
far more than the same loss rate spread evenly; the lab offers both so that the
difference can be seen on the dashboards.
"""

from __future__ import annotations

import random
from typing import Protocol


class LossModel(Protocol):
    def lost(self) -> bool:
        """Whether the next packet is dropped."""
        ...


class Bernoulli:
    """Each packet is lost with probability ``loss``, independently of the others."""

    __slots__ = ("_random", "loss")

    def __init__(self, loss: float, rng: random.Random) -> None:
        self.loss = loss
        self._random = rng.random

    def lost(self) -> bool:
        return self._random() < self.loss


class GilbertElliott:
    """A two-state Markov chain: Good and Bad, each with its own loss probability.

    Before each packet the chain moves Good→Bad with probability ``p`` and Bad→Good
    with probability ``r``; the packet is then lost with ``loss_good`` or ``loss_bad``.
    Stationary P(Bad) = p / (p + r).
    """

    __slots__ = ("_random", "bad", "loss_bad", "loss_good", "p", "r")

    def __init__(self, p: float, r: float, rng: random.Random, *,
                 loss_good: float = 0.0, loss_bad: float = 1.0) -> None:
        if not (0 < p <= 1 and 0 < r <= 1):
            raise ValueError(f"transition probabilities must be in (0, 1]: p={p}, r={r}")
        self.p, self.r = p, r
        self.loss_good, self.loss_bad = loss_good, loss_bad
        self._random = rng.random
        # Start in the stationary distribution, so short runs show the long-run rate.
        self.bad = self._random() < self.bad_share

    @classmethod
    def with_bursts(cls, loss: float, burst: float, rng: random.Random) -> GilbertElliott:
        """The simple Gilbert model (Bad loses every packet, Good none) with long-run loss
        ``loss`` and a mean loss burst of ``burst`` packets: r = 1/burst, p = loss·r/(1−loss)."""
        r = 1.0 / burst
        return cls(loss * r / (1.0 - loss), r, rng)

    @property
    def bad_share(self) -> float:
        return self.p / (self.p + self.r)

    @property
    def loss_rate(self) -> float:
        """The long-run share of packets lost."""
        return (1 - self.bad_share) * self.loss_good + self.bad_share * self.loss_bad

    @property
    def loss_after_loss(self) -> float:
        """P(packet lost | the previous one was lost): the burstiness, which is
        ``loss_rate`` itself when losses are independent."""
        good, bad = 1 - self.bad_share, self.bad_share
        # P(lost, lost) summed over the two packets' states, divided by P(lost).
        both = (good * self.loss_good * ((1 - self.p) * self.loss_good + self.p * self.loss_bad)
                + bad * self.loss_bad * (self.r * self.loss_good + (1 - self.r) * self.loss_bad))
        return both / self.loss_rate

    def lost(self) -> bool:
        rand = self._random
        if self.bad:
            self.bad = rand() >= self.r
        else:
            self.bad = rand() < self.p
        return rand() < (self.loss_bad if self.bad else self.loss_good)


def loss_model(loss: float, burst: float | None, rng: random.Random) -> LossModel:
    """Independent loss when ``burst`` is None, else Gilbert–Elliott with that mean burst."""
    if burst is None or loss <= 0.0:
        return Bernoulli(loss, rng)
    return GilbertElliott.with_bursts(loss, burst, rng)
