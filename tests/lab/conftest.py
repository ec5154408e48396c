"""Labs for tests: a test-only name and address block, always taken down again."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Iterator

import pytest

from monitor.lab import control
from monitor.lab.netlab import Lab


def make_lab() -> Lab:
    """A lab named vcmt-XXXX on a random /24 of 198.19.128.0/17: never the user's
    vcmon-lab, whose addresses start at the bottom of 198.18.0.0/15."""
    block = 198 << 24 | 19 << 16 | (128 + secrets.randbelow(128)) << 8
    return Lab(name=f"vcmt-{secrets.token_hex(3)}",
               network=ipaddress.IPv4Network((block, 24)))


@pytest.fixture
def lab_names() -> Iterator[Callable[[], Lab]]:
    """Hands out test labs; each one is taken down at teardown, whatever happened."""
    made: list[Lab] = []

    def make() -> Lab:
        made.append(make_lab())
        return made[-1]

    yield make
    for lab in made:
        control.down(lab)
        assert control.responder_pids(lab) == [] and not lab.run_dir.exists()
