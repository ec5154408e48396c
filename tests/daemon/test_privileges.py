"""Least privilege, checked on real daemon processes through /proc/PID/status.

Each daemon runs in a network namespace of its own, whose net.ipv4.ping_group_range
the test sets, so that the outcome does not depend on the host's sysctl; its sites
are that namespace's loopback addresses.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, stop_process
from tests.netns import NetNamespace, skip_unless_available

VCMON = Path(sys.executable).with_name("vcmon")
ROOT = Path(__file__).resolve().parents[2]
NET_RAW = f"{1 << 13:016x}"
NONE = f"{0:016x}"
# nobody: uid 65534, group nogroup 65534 (Debian)
NOBODY = "65534\t65534\t65534\t65534"
DGRAM_RANGE = "0 2147483647"
NO_DGRAM_RANGE = "1 0"  # the kernel's default: no group may open ping sockets

pytestmark = [skip_unless_available,
              pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux")]


def inventory(port: int, *, user: str | None = None, third: bool = False) -> str:
    head = f"listen: 127.0.0.1:{port}\ndefaults: {{interval: 20ms, timeout: 200ms}}\n"
    if user is not None:
        head += f"user: {user}\n"
    sites = ("  - {id: s1, name: S1, tier: commune, address: 127.0.0.1}\n"
             "  - {id: s2, name: S2, tier: commune, address: '::1'}\n")
    if third:  # another payload size: a new engine, so new sockets after the drop
        sites += ("  - {id: s3, name: S3, tier: commune, address: 127.0.0.3,"
                  " probe: {payload_size: 200}}\n")
    return head + "sites:\n" + sites


@pytest.fixture
def folder() -> Iterator[Path]:
    """A directory the daemon can still read after it became nobody (tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="vcmon-priv-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


class Running:
    def __init__(self, ns: NetNamespace, proc: subprocess.Popen[bytes], port: int,
                 log: Path) -> None:
        self.ns, self.proc, self.port, self.log = ns, proc, port, log

    def status(self) -> dict[str, str]:
        lines = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        return {name: value.strip() for name, _, value in (s.partition(":") for s in lines)}

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()
                if line.startswith("{")]

    def received(self) -> dict[str, float]:
        with self.ns.entered():
            url = f"http://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
        return {s.labels["site"]: s.value for f in text_string_to_metric_families(text)
                if f.name == "vcmon_probe_packets_received" for s in f.samples
                if s.name.endswith("_total")}

    def wait_for(self, event: str, seconds: float = 20.0) -> dict[str, object]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = [e for e in self.events() if e["event"] == event]
            if found:
                return found[-1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event} within {seconds} s: {self.log.read_text()}")


@contextmanager
def daemon(folder: Path, ping_range: str, prefix: list[str], *,
           user: str | None = None) -> Iterator[Running]:
    port = free_port()
    config = folder / "sites.yaml"
    config.write_text(inventory(port, user=user))
    log = folder / "vcmon.log"
    with NetNamespace() as ns:
        ns.sysctl("net.ipv4.ping_group_range", ping_range)
        assert ns.route_device("127.0.0.1") == "lo" and ns.route_device("::1") == "lo"
        argv = ns.command([*prefix, str(VCMON), "run", "--config", str(config),
                           "--log-format", "json"])
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            running = Running(ns, proc, port, log)
            running.wait_for("started")
            yield running
        finally:
            stop_process(proc)


def probing(running: Running, sites: tuple[str, ...] = ("s1", "s2")) -> None:
    """Replies keep coming for every site: over 0.5 s at 20 ms, well over 5 each."""
    before = running.received()
    time.sleep(0.5)
    after = running.received()
    for site in sites:
        assert after.get(site, 0) - before.get(site, 0) >= 5, (site, before, after)


def reload_with_a_new_engine(running: Running, folder: Path) -> None:
    (folder / "sites.yaml").write_text(inventory(running.port, user="nobody", third=True))
    os.kill(running.proc.pid, signal.SIGHUP)
    running.wait_for("reloaded")
    deadline = time.monotonic() + 10
    while running.received().get("s3", 0) < 5:
        assert time.monotonic() < deadline, running.log.read_text()
        time.sleep(0.1)


def test_root_with_user_nobody_keeps_only_net_raw_for_raw_sockets(folder: Path) -> None:
    with daemon(folder, NO_DGRAM_RANGE, [], user="nobody") as running:
        status = running.status()
        assert status["Uid"] == NOBODY and status["Gid"] == NOBODY
        assert status["Groups"] == ""
        for field in ("CapEff", "CapPrm", "CapBnd"):
            assert status[field] == NET_RAW, (field, status[field])
        assert status["CapInh"] == NONE and status["CapAmb"] == NONE
        assert status["NoNewPrivs"] == "1"
        dropped = running.wait_for("privileges_dropped")
        assert dropped["capabilities"] == "cap_net_raw" and dropped["user"] == "nobody"
        assert running.wait_for("started")["icmp_socket"] == "raw"
        probing(running)  # IPv4, and IPv6 whose socket opened after the drop
        # a reload with a new payload size opens raw sockets as nobody
        reload_with_a_new_engine(running, folder)
        probing(running, ("s1", "s2", "s3"))
        assert running.status()["CapEff"] == NET_RAW


def test_root_with_user_nobody_keeps_nothing_where_ping_sockets_are_allowed(
        folder: Path) -> None:
    with daemon(folder, DGRAM_RANGE, [], user="nobody") as running:
        status = running.status()
        assert status["Uid"] == NOBODY and status["Gid"] == NOBODY
        for field in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
            assert status[field] == NONE, (field, status[field])
        assert status["NoNewPrivs"] == "1"
        assert running.wait_for("privileges_dropped")["capabilities"] == "none"
        assert running.wait_for("started")["icmp_socket"] == "dgram"
        probing(running)
        reload_with_a_new_engine(running, folder)
        probing(running, ("s1", "s2", "s3"))


# setpriv as a service manager would start vcmon: another user, chosen capabilities
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_non_root_with_only_net_raw(folder: Path) -> None:
    prefix = [*AS_NOBODY, "--inh-caps=-all,+net_raw", "--ambient-caps=-all,+net_raw",
              "--bounding-set=-all,+net_raw"]
    with daemon(folder, NO_DGRAM_RANGE, prefix) as running:
        status = running.status()
        assert status["Uid"] == NOBODY
        assert status["CapEff"] == NET_RAW and status["CapBnd"] == NET_RAW
        assert running.wait_for("started")["icmp_socket"] == "raw"
        probing(running)


def test_non_root_without_any_capability_on_ping_sockets(folder: Path) -> None:
    prefix = [*AS_NOBODY, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    with daemon(folder, DGRAM_RANGE, prefix) as running:
        status = running.status()
        assert status["Uid"] == NOBODY
        for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert status[field] == NONE, (field, status[field])
        assert running.wait_for("started")["icmp_socket"] == "dgram"
        probing(running)


def test_a_user_that_cannot_switch_is_told_so(folder: Path) -> None:
    config = folder / "sites.yaml"
    config.write_text(inventory(free_port(), user="daemon"))
    with NetNamespace() as ns:
        ns.sysctl("net.ipv4.ping_group_range", DGRAM_RANGE)
        done = subprocess.run(ns.command([*AS_NOBODY, "--inh-caps=-all", "--bounding-set=-all",
                                          str(VCMON), "run", "--config", str(config)]),
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "vcmon: user: daemon is set, but vcmon runs as uid 65534, which cannot switch" \
        in done.stderr
    assert "Traceback" not in done.stderr


def test_privileges_are_not_dropped_with_a_second_thread_running() -> None:
    # A thread keeps the capabilities it had: the drop refuses rather than half-happen.
    code = ("import threading, time\n"
            "from monitor.inventory.identity import resolve\n"
            "from monitor.system.privileges import drop_privileges\n"
            "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
            "drop_privileges(resolve('nobody', None), ['raw'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT)
    assert done.returncode == 1
    assert "PrivilegeError: cannot drop privileges: 2 threads are running" in done.stderr


# What would hand a string to a shell: a site name or address in it could run commands.
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
               ("subprocess", "getstatusoutput"), ("asyncio", "create_subprocess_shell")}


def shell_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and (func.value.id, func.attr) in SHELL_CALLS):
            found.append(f"{path}:{node.lineno}: {func.value.id}.{func.attr}")
        for keyword in node.keywords:
            literal_false = isinstance(keyword.value, ast.Constant) and not keyword.value.value
            if keyword.arg == "shell" and not literal_false:
                found.append(f"{path}:{node.lineno}: shell=")
    return found


def test_no_shell_anywhere_in_the_daemon_or_the_probes() -> None:
    files = sorted(path for package in ("monitor", "probes")
                   for path in ROOT.joinpath(package).rglob("*.py"))
    assert len(files) > 30
    assert [use for path in files for use in shell_uses(path)] == []


def test_the_shell_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os, subprocess\nos.system('ping ' + name)\n"
                      "subprocess.run(cmd, shell=True)\nsubprocess.run(['ip'], shell=False)\n"
                      "os.popen(cmd)\n")
    assert [use.split(": ")[1] for use in shell_uses(sample)] == [
        "os.system", "shell=", "os.popen"]


USER_PROBLEMS = {
    "user: no-such-user-x\n": 'sites.yaml:1: user: there is no user "no-such-user-x" on this '
                              "host; create it (useradd --system --no-create-home vcmon) or "
                              "name an existing one",
    "user: root\n": 'sites.yaml:1: user: user "root" is root, which gives nothing up; name an '
                    "unprivileged user such as vcmon or nobody, or remove user:",
    "user: '0'\n": 'sites.yaml:1: user: user "0" is root, which gives nothing up; name an '
                   "unprivileged user such as vcmon or nobody, or remove user:",
    "group: nogroup\n": "sites.yaml:1: group: a group is switched to together with a user; "
                        "set user: too",
    "user: nobody\ngroup: no-such-group-x\n": 'sites.yaml:2: group: there is no group '
                                              '"no-such-group-x" on this host; create it or '
                                              "name an existing one",
}


@pytest.mark.parametrize("text", sorted(USER_PROBLEMS))
def test_user_and_group_problems(text: str) -> None:
    from monitor.inventory import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(text + inventory(9470).split("\n", 1)[1], "sites.yaml")
    assert str(caught.value) == USER_PROBLEMS[text]


def test_user_and_group_by_number() -> None:
    from monitor.inventory import parse_config

    config = parse_config("user: '65534'\ngroup: '0'\n" + inventory(9470), "sites.yaml")
    assert config.identity is not None
    assert (config.identity.user, config.identity.uid, config.identity.gid) == (
        "nobody", 65534, 0)
