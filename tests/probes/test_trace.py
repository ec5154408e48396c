"""Path diagnosis without a network (loopback at most): the verdict, path comparison,
the report, and how the sockets read an answer."""

from __future__ import annotations

import contextlib
import json
import time

import icmplib
import pytest

from probes.trace import (
    BadHop,
    Hop,
    IcmpPermissionError,
    PathSnapshot,
    _open,
    _RawTransport,
    divergence,
    first_bad_hop,
    render,
    trace_blocking,
)
from tests.netns import route_device

CYCLES = 20


def hop(ttl: int, lost: int = 0, avg_ms: float = 1.0, address: str | None = None) -> Hop:
    """A hop of ``CYCLES`` probes with ``lost`` of them lost and a mean RTT of ``avg_ms``."""
    received = CYCLES - lost
    if received == 0:
        return Hop(ttl, None, CYCLES, 0)
    avg = avg_ms / 1000
    return Hop(ttl, address or f"198.18.0.{ttl}", CYCLES, received, avg, avg, avg * 0.9,
               avg * 1.1, avg * 0.05)


def path(*lost: int) -> list[Hop]:
    return [hop(ttl, n, avg_ms=ttl) for ttl, n in enumerate(lost, 1)]


@pytest.mark.parametrize("faulty", [1, 2, 3, 4])
def test_loss_from_each_hop_to_the_end_blames_that_hop(faulty: int) -> None:
    hops = path(*(8 if ttl >= faulty else 0 for ttl in range(1, 5)))
    bad = first_bad_hop(hops)
    assert bad == BadHop(faulty, f"198.18.0.{faulty}", f"loss 40 % from hop {faulty} on")


def test_a_clean_path_has_no_bad_hop() -> None:
    assert first_bad_hop(path(0, 0, 0, 0)) is None


def test_a_rate_limited_middle_hop_with_clean_later_hops_is_not_blamed() -> None:
    # the router drops 70 % of its own time-exceeded replies, nothing it forwards
    assert first_bad_hop(path(0, 14, 0, 0)) is None


def test_a_rate_limited_hop_before_the_real_fault_is_not_blamed_for_it() -> None:
    assert first_bad_hop(path(0, 14, 0, 6, 7)) == BadHop(4, "198.18.0.4",
                                                         "loss 30 % from hop 4 on")


def test_silent_hops_are_skipped_not_blamed() -> None:
    hops = path(0, 20, 0, 0)
    assert hops[1].silent and hops[1].address is None
    assert first_bad_hop(hops) is None
    # a silent hop inside a lossy stretch neither breaks nor starts it
    lossy = path(0, 6, 20, 7)
    assert first_bad_hop(lossy) == BadHop(2, "198.18.0.2", "loss 30 % from hop 2 on")


def test_loss_only_at_the_destination_blames_the_destination() -> None:
    assert first_bad_hop(path(0, 0, 0, 10)) == BadHop(4, "198.18.0.4", "loss 50 % from hop 4 on")


def test_one_lost_packet_or_a_small_rate_blames_nobody() -> None:
    assert first_bad_hop(path(0, 1, 1, 1)) is None  # 5 % each, 1 lost: below min_lost
    assert first_bad_hop(path(0, 3, 3, 3), loss_threshold=0.2) is None
    assert first_bad_hop(path(0, 3, 3, 3), loss_threshold=0.15) is not None


def test_loss_that_does_not_reach_the_destination_is_not_blamed() -> None:
    assert first_bad_hop(path(0, 8, 8, 0)) is None


def test_a_delay_step_that_persists_is_blamed_where_it_starts() -> None:
    hops = [hop(1, avg_ms=1), hop(2, avg_ms=2), hop(3, avg_ms=47), hop(4, avg_ms=48)]
    assert first_bad_hop(hops) == BadHop(3, "198.18.0.3", "delay +45 ms from hop 3 on")


def test_a_single_slow_hop_is_not_blamed() -> None:
    # a router answering from its slow path: later hops are not slower
    hops = [hop(1, avg_ms=1), hop(2, avg_ms=60), hop(3, avg_ms=3), hop(4, avg_ms=4)]
    assert first_bad_hop(hops) is None


def test_the_delay_threshold_is_a_parameter() -> None:
    hops = [hop(1, avg_ms=1), hop(2, avg_ms=12), hop(3, avg_ms=13)]
    assert first_bad_hop(hops) is None
    assert first_bad_hop(hops, delay_threshold=0.010) == BadHop(
        2, "198.18.0.2", "delay +11 ms from hop 2 on")


def test_an_unreached_destination_is_blamed_on_where_the_path_ends() -> None:
    dark = [hop(1), hop(2), hop(3, lost=CYCLES)]
    assert first_bad_hop(dark, reached=False) == BadHop(
        3, None, "no reply from hop 3 on; the destination was not reached")
    unreachable = [hop(1), hop(2, lost=3)]
    assert first_bad_hop(unreachable, reached=False) == BadHop(
        2, "198.18.0.2", "the path ends at hop 2; the destination was not reached")


def test_divergence_names_the_first_changed_router() -> None:
    baseline = path(0, 0, 0, 0)
    assert divergence(baseline, baseline) is None
    rerouted = [*baseline[:2], hop(3, address="198.18.9.3"), hop(4, address="198.18.9.4")]
    assert divergence(baseline, rerouted) == 3


def test_divergence_ignores_silent_hops_and_a_shorter_path() -> None:
    baseline = path(0, 0, 0, 0)
    assert divergence(baseline, path(0, 20, 0, 0)) is None
    assert divergence(path(0, 20, 0, 0), [*baseline[:1], hop(2, address="198.18.9.2")]) is None
    assert divergence(baseline, baseline[:2]) is None
    longer = [*baseline[:3], hop(4, address="198.18.9.4"), hop(5, address="198.18.0.4")]
    assert divergence(baseline, longer) == 4


def snapshot(hops: list[Hop], reached: bool = True) -> PathSnapshot:
    return PathSnapshot("198.18.0.4", 1_700_000_000.0, 1.25, CYCLES, CYCLES * len(hops),
                        tuple(hops), reached, first_bad_hop(hops, reached=reached))


def test_render_is_an_mtr_style_table_with_the_verdict() -> None:
    text = render(snapshot([hop(1), hop(2, lost=20), hop(3, lost=6, avg_ms=12.5)]))
    lines = text.splitlines()
    assert lines[0] == "trace to 198.18.0.4: 20 cycles, 1.2 s"
    assert lines[1].split() == ["hop", "address", "loss%", "sent", "last", "avg", "best",
                                "worst", "stddev"]
    assert lines[2].split() == ["1", "198.18.0.1", "0.0", "20", "1.0", "1.0", "0.9", "1.1", "0.1"]
    assert lines[3].split() == ["2", "*", "100.0", "20", "-", "-", "-", "-", "-"]
    assert lines[4].split()[:4] == ["3", "198.18.0.3", "30.0", "20"]
    assert lines[4].split()[5] == "12.5"
    assert lines[5] == "first bad hop: 3 (198.18.0.3): loss 30 % from hop 3 on"


def test_render_says_when_nothing_is_wrong_and_where_a_path_goes_dark() -> None:
    assert render(snapshot([hop(1), hop(2)])).endswith("\nno bad hop")
    dark = render(snapshot([hop(1), hop(2, lost=20)], reached=False))
    assert dark.endswith("\nfirst bad hop: 2: no reply from hop 2 on; the destination was "
                         "not reached")


def test_a_snapshot_serialises_to_json_with_each_hops_loss() -> None:
    document = json.loads(json.dumps(snapshot([hop(1), hop(2, lost=5)]).to_dict()))
    assert document["hops"][1]["loss"] == 0.25
    assert document["hops"][1]["received"] == 15
    assert document["bad_hop"] == {"ttl": 2, "address": "198.18.0.2",
                                   "why": "loss 25 % from hop 2 on"}
    assert document["reached"] is True and document["error"] is None


@pytest.mark.parametrize(
    ("address", "options", "message"),
    [
        ("example.org", {}, "is not an IP address"),
        ("127.0.0.1", {"cycles": 0}, "cycles must be 1 to 100"),
        ("127.0.0.1", {"cycles": 101}, "cycles must be 1 to 100"),
        ("127.0.0.1", {"max_hops": 65}, "max_hops must be 1 to 64"),
        ("127.0.0.1", {"interval": 0.001}, "interval must be"),
        ("127.0.0.1", {"reply_timeout": 0.0}, "reply_timeout must be above 0"),
        ("127.0.0.1", {"reply_timeout": 6.0}, "reply_timeout must be above 0"),
    ],
)
def test_arguments_out_of_bounds_are_refused_before_any_packet(
    address: str, options: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        trace_blocking(address, **options)


def test_render_of_a_trace_the_kernel_stopped_says_so() -> None:
    stopped = PathSnapshot("198.18.0.4", 1_700_000_000.0, 0.01, 3, 0, (), False, None,
                           "the trace stopped after 0 packets: [Errno 101] Network is "
                           "unreachable")
    assert render(stopped).splitlines()[2:] == [
        "error: the trace stopped after 0 packets: [Errno 101] Network is unreachable",
        "no bad hop found before the trace stopped",
    ]


@pytest.mark.parametrize("mode", ["raw", "dgram"])
def test_an_answer_queued_when_the_wait_runs_out_is_read_not_dropped(mode: str) -> None:
    """Loopback only. icmplib's own receive() discarded a packet read after its time
    limit, so an echo reply already waiting when a cycle's wait ended was lost."""
    try:
        transport = _open("127.0.0.1", False, mode)  # type: ignore[arg-type]
    except IcmpPermissionError as exc:
        pytest.skip(str(exc))
    try:
        sent_at = transport.send(7, 64)
        time.sleep(0.1)  # loopback answers at once: the reply is queued, unread
        # the first read is the answer: our own request looping back through lo is
        # not even queued on a raw socket (its kernel filter)
        answer = transport.receive(0.0)
        assert answer is not None and answer.sequence == 7, answer
        assert answer.kind == "reply" and answer.source == "127.0.0.1"
        assert 0.0 <= answer.at - sent_at < 1.0
    finally:
        transport.close()


@pytest.mark.parametrize(("address", "v6"), [("127.0.0.1", False), ("::1", True)])
def test_a_raw_trace_socket_queues_no_other_sockets_icmp(address: str, v6: bool) -> None:
    """Loopback only. A raw socket sees every ICMP packet on the host: at 20,000 sites,
    40,000 a second that each trace's thread parsed in Python. Its kernel filter keeps
    only its own echo id's replies (and errors)."""
    assert route_device(address) == "lo"
    try:
        transport = _open(address, v6, "raw")
    except IcmpPermissionError as exc:
        pytest.skip(str(exc))
    family = icmplib.ICMPv6Socket if v6 else icmplib.ICMPv4Socket
    try:
        assert isinstance(transport, _RawTransport)
        with contextlib.closing(family(privileged=True)) as other:
            # another socket's pings: 20 requests and 20 replies, none of them ours
            for sequence in range(20):
                other.send(icmplib.ICMPRequest(address, transport._id ^ 0x5A5A, sequence))
            transport.send(3, 64)
            time.sleep(0.1)
            answer = transport.receive(0.0)
            assert answer is not None and answer.sequence == 3 and answer.kind == "reply"
            assert transport.receive(0.0) is None  # nothing else was queued
    finally:
        transport.close()
