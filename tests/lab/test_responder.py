"""The lab responder on a real raw socket, in a namespace of the test's own.

The sites' addresses sit on the namespace's ``lo``; the engine probes them from inside
the same namespace, after ``ip route get`` shows them on ``lo`` there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from monitor.lab.profiles import Profile
from monitor.lab.responder import Responder
from monitor.lab.state import LabSite, LabState
from probes import Outcome, ProbeResult
from probes.icmp import IcmpEngine
from tests.netns import NetNamespace, skip_unless_available

pytestmark = skip_unless_available

STATE = LabState(seed=3, sites=[
    LabSite(id="district", address="198.19.201.4", profile=Profile(delay=0.05)),
    LabSite(id="commune", address="198.19.201.5", parent="district",
            profile=Profile(delay=0.02, jitter=0.01)),
])
NOT_A_SITE = "198.19.201.9"


@pytest.fixture
def namespace() -> Iterator[NetNamespace]:
    with NetNamespace() as ns:
        ns.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        for address in [site.address for site in STATE.sites] + [NOT_A_SITE]:
            ns.ip("address", "add", f"{address}/32", "dev", "lo")
            assert ns.route_device(address) == "lo"
        yield ns


class Lab:
    """A responder and an engine in the test's namespace; results by site."""

    def __init__(self, namespace: NetNamespace) -> None:
        self.namespace = namespace
        self.responder = Responder(STATE)
        self.results: list[ProbeResult] = []
        self.engine = IcmpEngine(self.results.append, mode="raw")

    async def ping(self, address: str, count: int, wait: float = 0.3) -> list[ProbeResult]:
        start = len(self.results)
        for _ in range(count):
            self.engine.send(address, address, wait)
            await asyncio.sleep(0.002)
        for _ in range(200):  # bounded: 2 s at most
            if len(self.results) - start >= count:
                break
            await asyncio.sleep(0.01)
        return self.results[start:]


@pytest.fixture
async def lab(namespace: NetNamespace) -> AsyncIterator[Lab]:
    lab = Lab(namespace)
    with namespace.entered():
        lab.responder.start()
        await lab.engine.start()
    yield lab
    await lab.engine.close()
    lab.responder.close()


async def test_each_site_answers_from_its_address_after_its_delay(lab: Lab) -> None:
    district = await lab.ping("198.19.201.4", 10)
    # the engine matches replies by source address: a reply from any other address
    # would have been ignored and these probes would have timed out
    assert [r.outcome for r in district] == [Outcome.REPLY] * 10
    assert all(0.050 <= (r.rtt or 0) < 0.0515 for r in district), district
    commune = await lab.ping("198.19.201.5", 40)
    rtts = [r.rtt or 0 for r in commune]
    assert all(0.010 <= rtt < 0.0315 for rtt in rtts)
    assert max(rtts) - min(rtts) > 0.01  # jittered
    assert lab.responder.answered == 50


async def test_an_address_that_is_no_site_gets_no_answer(lab: Lab) -> None:
    (result,) = await lab.ping(NOT_A_SITE, 1, wait=0.1)
    assert result.outcome is Outcome.TIMEOUT
    assert lab.responder.not_lab == 1


async def test_replies_on_the_way_are_lost_when_the_link_goes_down(lab: Lab) -> None:
    for _ in range(5):
        lab.engine.send("commune", "198.19.201.5", 0.3)
    await asyncio.sleep(0.005)  # the requests are in; their replies wait 10-30 ms
    lab.responder.apply(STATE.with_profile("district", Profile(delay=0.05, down=True)))
    await lab.ping("198.19.201.5", 5)
    await asyncio.sleep(0.05)
    assert [r.outcome for r in lab.results] == [Outcome.TIMEOUT] * 10
    assert (lab.responder.answered, lab.responder.dropped_down) == (0, 10)
    lab.responder.apply(STATE)
    assert {r.outcome for r in await lab.ping("198.19.201.5", 3)} == {Outcome.REPLY}
