"""TLS, client certificates and basic auth on the HTTP endpoints, with real clients.

The daemon runs in this process with a web.yml in the exporter-toolkit's shape; the
clients are aiohttp and curl, over TLS with certificates from a trustme test CA.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import structlog
from prometheus_client import CollectorRegistry

from monitor.daemon import Daemon
from monitor.inventory import ConfigError, load_config, parse_config
from monitor.inventory.web import WebUsers
from tests.conftest import free_port
from tests.mqtt.broker import skip_unless_mosquitto
from tests.mqtt.common import sample, until
from tests.mqtt.test_mqtt_security import SECRET, password_broker, tls_files

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")

PASSWORD = "mật-khẩu-Prometheus-7"
OTHER = "second-user-pw"
# cost 4: the tests check logins by the dozen; the timing test uses a real cost
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
# htpasswd and the exporter-toolkit's docs write $2y$: the same algorithm as $2b$
OTHER_HASH = "$2y$" + bcrypt.hashpw(OTHER.encode(), bcrypt.gensalt(rounds=4)).decode()[4:]
SITES = ("defaults: {interval: 50ms, timeout: 200ms}\nsites:\n"
         "  - {id: s1, name: Điểm cầu 1, tier: commune, address: 127.0.60.1}\n")
GUARDED = ("/metrics", "/api/v1/sites", "/api/v1/sites/s1", "/api/v1/summary",
           "/api/v1/openapi.yaml", "/", "/no-such-page")


def web_yml(files: dict[str, Path], *, users: str = "", tls: str = "") -> str:
    """HTTPS with the test CA's certificate for 127.0.0.1; ``tls``: more of its lines."""
    text = (f"tls_server_config:\n  cert_file: {files['server']}\n"
            f"  key_file: {files['server-key']}\n{tls}")
    if users:
        text += f"basic_auth_users:\n{users}"
    return text


def write_config(folder: Path, web: str, *, extra: str = "") -> Path:
    (folder / "web.yml").write_text(web)
    (folder / "web.yml").chmod(0o640)
    path = folder / "sites.yaml"
    path.write_text(f"web:\n  config_file: {folder / 'web.yml'}\n{extra}" + SITES)
    return path


@asynccontextmanager
async def serving(path: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(load_config(path), config_path=str(path), registry=CollectorRegistry(),
                    listen=f"127.0.0.1:{free_port()}")
    await daemon.startup()
    try:
        yield daemon
    finally:
        await daemon.shutdown()


def basic(user: str, password: str) -> dict[str, str]:
    """The Authorization header of a basic-auth login (aiohttp 3.14 deprecates BasicAuth)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def client_context(files: dict[str, Path], cert: str | None = None,
                   ca: str = "ca") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=files[ca])
    if cert is not None:
        context.load_cert_chain(files[cert], files[f"{cert}-key"])
    return context


def url(daemon: Daemon, path: str, scheme: str = "https") -> str:
    return f"{scheme}://{daemon.listen}{path}"


async def status_of(daemon: Daemon, path: str, context: ssl.SSLContext | None,
                    auth: dict[str, str] | None = None, method: str = "GET") -> int:
    connector = aiohttp.TCPConnector(ssl=context if context is not None else False,
                                     force_close=True)
    scheme = "https" if context is not None else "http"
    async with (aiohttp.ClientSession(connector=connector) as http,
                http.request(method, url(daemon, path, scheme), headers=auth) as response):
        await response.read()
        return response.status


async def curl(*args: str) -> tuple[int, str]:
    """curl's exit code and the HTTP status it printed."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--output", "/dev/null", "--write-out", "%{http_code}",
        "--max-time", "20", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="tests/run.sh installs curl")


@needs_curl
async def test_basic_auth_over_tls_guards_every_endpoint(tmp_path: Path) -> None:
    files = tls_files(tmp_path)
    users = f"  alice: {HASH}\n  bob: {OTHER_HASH}\n"
    async with serving(write_config(tmp_path, web_yml(files, users=users))) as daemon:
        tls = client_context(files)
        alice = basic("alice", PASSWORD)
        for path in GUARDED:
            assert await status_of(daemon, path, tls) == 401, path
            assert await status_of(daemon, path, tls, basic("alice", OTHER)) == 401
            assert await status_of(daemon, path, tls, basic("carol", PASSWORD)) \
                == 401
            expected = 404 if path == "/no-such-page" else 200
            assert await status_of(daemon, path, tls, alice) == expected, path
        assert await status_of(daemon, "/metrics", tls, basic("bob", OTHER)) == 200
        # the same password twice: the second is remembered, not checked by bcrypt again
        assert daemon.config.web.users is not None
        assert daemon.config.web.users.remembered("alice", PASSWORD)
        assert not daemon.config.web.users.remembered("alice", OTHER)
        # the health endpoints answer without a login (over TLS all the same)
        assert await status_of(daemon, "/-/healthy", tls) == 200
        assert await status_of(daemon, "/-/ready", tls) in (200, 503)
        # writes too
        assert await status_of(daemon, "/-/reload", tls, method="POST") == 401
        assert await status_of(daemon, "/-/reload", tls, alice, method="POST") == 200
        connector = aiohttp.TCPConnector(ssl=tls)
        async with (aiohttp.ClientSession(connector=connector) as http,
                    http.get(url(daemon, "/metrics")) as response):
            assert response.headers["WWW-Authenticate"] == 'Basic realm="vcmon", charset="UTF-8"'
        # plain HTTP, or a client that does not trust the server's CA, gets nowhere
        with pytest.raises(aiohttp.ClientError):
            await status_of(daemon, "/-/healthy", None)
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await status_of(daemon, "/-/healthy", client_context(files, ca="stranger"), alice)
        ca = ("--cacert", str(files["ca"]))
        target = url(daemon, "/metrics")
        assert await curl(*ca, "--user", f"alice:{PASSWORD}", target) == (0, "200")
        assert await curl(*ca, "--user", "alice:wrong", target) == (0, "401")
        assert await curl(*ca, "--user", f"mallory:{PASSWORD}", target) == (0, "401")
        assert await curl(*ca, target) == (0, "401")


@needs_curl
async def test_client_certificates_are_required_and_verified(tmp_path: Path) -> None:
    files = tls_files(tmp_path)
    tls = f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {files['ca']}\n"
    async with serving(write_config(tmp_path, web_yml(files, tls=tls))) as daemon:
        assert await status_of(daemon, "/metrics", client_context(files, "client")) == 200
        # no certificate: TLS 1.3 lets the client finish its side, then the server refuses
        with pytest.raises(aiohttp.ClientError):
            await status_of(daemon, "/metrics", client_context(files))
        # a client certificate that another CA signed
        (tmp_path / "other").mkdir()
        other = tls_files(tmp_path / "other")
        foreign = client_context(files)
        foreign.load_cert_chain(other["client"], other["client-key"])
        with pytest.raises(aiohttp.ClientError):
            await status_of(daemon, "/metrics", foreign)
        ca = ("--cacert", str(files["ca"]))
        target = url(daemon, "/metrics")
        client = ("--cert", str(files["client"]), "--key", str(files["client-key"]))
        assert await curl(*ca, *client, target) == (0, "200")
        code, status = await curl(*ca, target)
        # no HTTP answer at all: 35 (handshake), 52 (empty reply) or 56 (the server's
        # "certificate required" alert), by the timing of the TLS 1.3 exchange
        assert code in (35, 52, 56) and status == "000", (code, status)


async def test_reload_can_be_disabled_and_logins_follow_reloads(tmp_path: Path) -> None:
    files = tls_files(tmp_path)
    path = write_config(tmp_path, web_yml(files, users=f"  alice: {HASH}\n"),
                        extra="  enable_lifecycle: false\n")
    async with serving(path) as daemon:
        tls = client_context(files)
        alice, bob = basic("alice", PASSWORD), basic("bob", OTHER)
        assert await status_of(daemon, "/-/reload", tls, method="POST") == 401
        assert await status_of(daemon, "/-/reload", tls, alice, method="POST") == 403
        # SIGHUP (here: the same call) still reloads; the new web.yml has bob, not alice
        (tmp_path / "web.yml").write_text(web_yml(files, users=f"  bob: {OTHER_HASH}\n"))
        assert await daemon.reload() == []
        assert await status_of(daemon, "/metrics", tls, alice) == 401
        assert await status_of(daemon, "/metrics", tls, bob) == 200
        # a broken web.yml is a failed reload: bob still gets in
        (tmp_path / "web.yml").write_text(web_yml(files, users="  bob: hunter2\n"))
        problems = await daemon.reload()
        assert len(problems) == 1 and "not a bcrypt hash" in problems[0]
        assert "hunter2" not in problems[0]
        assert await status_of(daemon, "/metrics", tls, bob) == 200


async def test_security_headers_from_http_server_config(tmp_path: Path) -> None:
    files = tls_files(tmp_path)
    web = web_yml(files, users=f"  alice: {HASH}\n") + (
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        "    Strict-Transport-Security: max-age=31536000\n")
    async with serving(write_config(tmp_path, web)) as daemon:
        connector = aiohttp.TCPConnector(ssl=client_context(files))
        async with aiohttp.ClientSession(connector=connector) as http:
            for auth, status in ((None, 401), (basic("alice", PASSWORD), 200)):
                async with http.get(url(daemon, "/metrics"), headers=auth) as response:
                    assert response.status == status
                    assert response.headers["X-Frame-Options"] == "deny"
                    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_unknown_users_cost_as_much_as_known_ones() -> None:
    # CPU time of the checking thread: the machine's load does not enter it.
    users = WebUsers({"alice": bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=10))})

    def cpu(user: str) -> float:
        started = time.thread_time()
        for _ in range(3):
            assert not users.verify(user, "wrong")
        return time.thread_time() - started

    known, unknown = cpu("alice"), cpu("nobody-by-this-name")
    assert 0.7 < unknown / known < 1.4, (known, unknown)
    assert known > 3 * 0.01, "cost 10 takes tens of milliseconds per check"


def test_logins_are_remembered_only_when_right() -> None:
    users = WebUsers({"alice": HASH.encode()})
    assert not users.remembered("alice", PASSWORD)
    assert not users.verify("alice", OTHER) and not users.remembered("alice", OTHER)
    assert users.verify("alice", PASSWORD) and users.remembered("alice", PASSWORD)
    # bcrypt reads 72 bytes: a longer password that starts with the right one is refused
    long_hash = bcrypt.hashpw(b"x" * 72, bcrypt.gensalt(rounds=4))
    users = WebUsers({"alice": long_hash})
    assert users.verify("alice", "x" * 72)
    assert not users.verify("alice", "x" * 73)
    assert "$2" not in repr(users)


WEB_PROBLEMS = {
    "basic_auth_users:\n  alice: hunter2\n":
        "web.yml:2: basic_auth_users.alice: this is not a bcrypt hash",
    "basic_auth_users:\n  alice: 123456\n":
        "web.yml:2: basic_auth_users.alice: this is not a bcrypt hash",
    "tls_server_config:\n  cert_file: a.pem\n  key_file: a.pem\n"
    "  client_auth_type: RequireAnyClientCert\n":
        "web.yml:4: tls_server_config.client_auth_type: RequireAnyClientCert accepts client "
        "certificates without checking them",
    "tls_server_config:\n  cert_file: a.pem\n  key_file: a.pem\n  client_ca_file: ca.pem\n":
        "web.yml:1: tls_server_config: client_ca_file is set but client_auth_type is "
        "NoClientCert",
    "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing-key.pem\n":
        "web.yml:1: tls_server_config: cannot load cert_file",
    "http_server_config:\n  http2: true\n":
        'web.yml:2: http_server_config.http2: unknown key "http2"; allowed keys are: headers',
    "http_server_config:\n  headers: {Server: vcmon}\n":
        'web.yml:2: http_server_config.headers: unknown header "Server"',
}


@pytest.mark.parametrize("text", sorted(WEB_PROBLEMS))
def test_web_file_problems_name_file_line_and_field(tmp_path: Path, text: str) -> None:
    (tmp_path / "web.yml").write_text(text)
    inventory = f"web:\n  config_file: {tmp_path / 'web.yml'}\n" + SITES
    with pytest.raises(ConfigError) as caught:
        parse_config(inventory, "sites.yaml")
    message = str(caught.value)
    assert message.startswith("sites.yaml:1: web: ")
    assert f"{tmp_path}/{WEB_PROBLEMS[text]}" in message, message
    # what someone wrote where a hash belongs may be a password: never repeated
    assert "hunter2" not in message and "123456" not in message


def test_an_empty_web_file_means_no_tls_and_no_login(tmp_path: Path) -> None:
    (tmp_path / "web.yml").write_text("# nothing yet\n")
    config = parse_config(f"web:\n  config_file: {tmp_path / 'web.yml'}\n" + SITES)
    assert config.web.users is None and config.web.tls is None


def test_hash_password_command_makes_a_hash_bcrypt_accepts() -> None:
    vcmon = Path(sys.executable).with_name("vcmon")
    done = subprocess.run([str(vcmon), "hash-password"], input=PASSWORD + "\n",
                          capture_output=True, text=True, timeout=60, check=True)
    hashed = done.stdout.strip()
    assert hashed.startswith("$2b$10$")
    assert WebUsers({"alice": hashed.encode()}).verify("alice", PASSWORD)


async def test_secret_files_readable_by_everyone_are_warned_about(tmp_path: Path) -> None:
    files = tls_files(tmp_path)
    path = write_config(tmp_path, web_yml(files, users=f"  alice: {HASH}\n"))
    files["server-key"].chmod(0o600)
    (tmp_path / "web.yml").chmod(0o644)
    with structlog.testing.capture_logs() as logs:
        async with serving(path):
            pass
    exposed = [e for e in logs if e["event"] == "secret_file_exposed"]
    assert exposed == [{
        "event": "secret_file_exposed", "log_level": "warning", "file": str(tmp_path / "web.yml"),
        "mode": "0644", "holds": "basic-auth password hashes",
        "hint": f"chmod 0640 {tmp_path / 'web.yml'} (owner root, group of vcmon's user) or "
                "0600 for the user vcmon runs as"}]
    (tmp_path / "web.yml").chmod(0o640)
    with structlog.testing.capture_logs() as logs:
        async with serving(path):
            pass
    assert not [e for e in logs if e["event"] == "secret_file_exposed"]


@pytest.mark.services
@skip_unless_mosquitto
async def test_no_secret_reaches_the_logs_or_the_api(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    files = tls_files(tmp_path)
    (tmp_path / "mqtt-password").write_text(SECRET + "\n")
    (tmp_path / "mqtt-password").chmod(0o600)
    with password_broker(tmp_path) as broker:
        mqtt = (f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n  username: vcmon\n"
                f"  password_file: {tmp_path / 'mqtt-password'}\n  reconnect_initial: 50ms\n")
        path = write_config(tmp_path, web_yml(files, users=f"  alice: {HASH}\n"), extra=mqtt)
        seen: list[str] = []
        with structlog.testing.capture_logs() as logs:
            async with serving(path) as daemon:
                await until(lambda: sample(daemon, "vcmon_mqtt_connected") == 1, 10,
                            "the publisher to log in")
                tls, alice = client_context(files), basic("alice", PASSWORD)
                connector = aiohttp.TCPConnector(ssl=tls)
                async with aiohttp.ClientSession(connector=connector) as http:
                    # someone typing the password into the user name field
                    async with http.get(url(daemon, "/metrics"),
                                        headers=basic(PASSWORD, "x")) as response:
                        assert response.status == 401
                        seen.append(await response.text())
                    for path_ in (*GUARDED, "/-/healthy", "/-/ready"):
                        async with http.get(url(daemon, path_), headers=alice) as response:
                            seen.append(await response.text())
                    async with http.post(url(daemon, "/-/reload"), headers=alice) as response:
                        assert response.status == 200
                seen += [repr(daemon.config), daemon.config.model_dump_json(),
                         repr(daemon.config.web.users)]
    seen += [repr(logs), caplog.text]
    assert any("mqtt_connected" in text for text in seen)
    for secret in (SECRET, PASSWORD, HASH, HASH[7:29]):  # [7:29]: the salt
        assert not [text[:200] for text in seen if secret in text], secret


def test_log_lines_never_carry_a_value_named_like_a_secret(
        capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.system.logs import configure_logging

    configure_logging("debug", "json")
    try:
        structlog.get_logger("test").info("careless", password=PASSWORD, authorization="Basic x",
                                          site="s1")
    finally:
        structlog.reset_defaults()
    line = capsys.readouterr().err
    assert PASSWORD not in line and "Basic x" not in line
    assert '"password": "[redacted]"' in line and '"site": "s1"' in line
