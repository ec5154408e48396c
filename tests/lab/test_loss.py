"""Loss models against their analytic values, with fixed seeds."""

from __future__ import annotations

import itertools
import random

import pytest

from monitor.lab.loss import Bernoulli, GilbertElliott, loss_model

DRAWS = 200_000


def run_lengths(lost: list[bool]) -> list[int]:
    return [len(list(group)) for is_lost, group in itertools.groupby(lost) if is_lost]


def loss_after_loss(lost: list[bool]) -> float:
    return sum(a and b for a, b in itertools.pairwise(lost)) / sum(lost[:-1])


def test_bernoulli_rate_and_no_bursts() -> None:
    model = Bernoulli(0.03, random.Random(1))
    lost = [model.lost() for _ in range(DRAWS)]
    # binomial standard error of the rate: sqrt(0.03 * 0.97 / 200000) = 0.00038
    assert sum(lost) / DRAWS == pytest.approx(0.03, abs=4 * 0.00038)
    # independent: a loss says nothing about the next packet
    assert loss_after_loss(lost) == pytest.approx(0.03, abs=0.01)
    assert sum(run_lengths(lost)) / len(run_lengths(lost)) == pytest.approx(1 / 0.97, abs=0.03)


@pytest.mark.parametrize(("loss", "burst"), [(0.02, 3.0), (0.05, 8.0), (0.10, 1.5)])
def test_simple_gilbert_long_run_loss_and_mean_burst(loss: float, burst: float) -> None:
    model = GilbertElliott.with_bursts(loss, burst, random.Random(2))
    assert model.loss_rate == pytest.approx(loss)
    assert model.loss_after_loss == pytest.approx(1 - 1 / burst)
    lost = [model.lost() for _ in range(DRAWS)]
    runs = run_lengths(lost)
    # Bursts are geometric with mean 1/r; their count and the rate vary more than a
    # binomial's, hence the looser bounds (about 4 standard errors at these sizes).
    assert sum(lost) / DRAWS == pytest.approx(loss, rel=0.12)
    assert sum(runs) / len(runs) == pytest.approx(burst, rel=0.08)
    assert loss_after_loss(lost) == pytest.approx(1 - 1 / burst, abs=0.03)


def test_gilbert_elliott_with_loss_in_both_states() -> None:
    model = GilbertElliott(0.01, 0.2, random.Random(3), loss_good=0.005, loss_bad=0.6)
    # P(Bad) = 0.01 / 0.21; loss = 0.2/0.21 * 0.005 + 0.01/0.21 * 0.6
    assert model.loss_rate == pytest.approx((0.2 * 0.005 + 0.01 * 0.6) / 0.21)
    lost = [model.lost() for _ in range(DRAWS)]
    assert sum(lost) / DRAWS == pytest.approx(model.loss_rate, rel=0.1)
    assert loss_after_loss(lost) == pytest.approx(model.loss_after_loss, abs=0.04)
    # bursty: a loss makes the next one far likelier than the average
    assert model.loss_after_loss > 8 * model.loss_rate


def test_gilbert_elliott_rejects_impossible_transitions() -> None:
    with pytest.raises(ValueError, match="transition probabilities"):
        GilbertElliott(0.0, 0.5, random.Random())


def test_loss_model_picks_the_model() -> None:
    rng = random.Random(4)
    assert isinstance(loss_model(0.02, None, rng), Bernoulli)
    assert isinstance(loss_model(0.0, 4.0, rng), Bernoulli)  # nothing to burst
    assert isinstance(loss_model(0.02, 4.0, rng), GilbertElliott)
    assert not any(loss_model(0.0, None, rng).lost() for _ in range(1000))
    assert all(loss_model(1.0, None, rng).lost() for _ in range(1000))


def test_same_seed_same_losses() -> None:
    first = GilbertElliott.with_bursts(0.05, 4, random.Random("7:site"))
    second = GilbertElliott.with_bursts(0.05, 4, random.Random("7:site"))
    assert [first.lost() for _ in range(5000)] == [second.lost() for _ in range(5000)]
