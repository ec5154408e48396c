"""Credentials and TLS against a real Mosquitto: refusals are clear, retried, never fatal."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path

import pytest
import structlog
import trustme

from tests.mqtt.broker import Broker, skip_unless_mosquitto
from tests.mqtt.common import config, daemon_for, running, sample, until
from tests.mqtt.subscriber import Subscriber

pytestmark = [
    pytest.mark.services,
    skip_unless_mosquitto,
    pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here"),
]

SECRET = "s3cr3t-ngay-27-3"
WRONG = "wrong-password-0912"


def password_broker(folder: Path) -> Broker:
    passwords = folder / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "vcmon", SECRET],
                   check=True, capture_output=True, timeout=30)
    return Broker(folder, listener_options=f"allow_anonymous false\npassword_file {passwords}")


async def test_rejected_credentials_are_logged_retried_and_do_not_touch_probing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "password").write_text(WRONG + "\n")
    with password_broker(tmp_path) as broker:
        daemon = daemon_for(config(broker.port, sites=3, mqtt=(
            f"  username: vcmon\n  password_file: {tmp_path / 'password'}\n")))
        with structlog.testing.capture_logs() as logs:
            async with running(daemon):
                sends = daemon.scheduler.sends
                await asyncio.sleep(1.0)
                assert daemon.scheduler.sends - sends >= 0.9 * 3 / 0.05, "probing at full rate"
                assert sample(daemon, "vcmon_mqtt_connected") == 0
                # backoff from 50 ms doubling to 200 ms: a handful of tries, not a tight loop
                assert 3 <= sample(daemon, "vcmon_mqtt_reconnects_total") <= 12
        assert sum(e["event"] == "mqtt_credentials_rejected" for e in logs) >= 3
        refusal = next(e for e in logs if e["event"] == "mqtt_credentials_rejected")
        assert refusal["log_level"] == "error"
        # Mosquitto answers a wrong password with 3.1.1's "not authorised" (5), which paho
        # reports in MQTT 5 numbering
        assert refusal["reason"] == "[code:135] Not authorized"
        assert refusal["hint"] == f"check mqtt.username and the password in {tmp_path}/password"
        assert refusal["broker"] == f"127.0.0.1:{broker.port}"
        assert WRONG not in repr(logs) + caplog.text
        assert "not authorised" in broker.log_since_start()


async def test_a_password_from_the_environment_is_accepted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("VCMON_TEST_MQTT_PASSWORD", SECRET)
    with password_broker(tmp_path) as broker:
        daemon = daemon_for(config(broker.port, sites=1, mqtt=(
            "  username: vcmon\n  password_env: VCMON_TEST_MQTT_PASSWORD\n")))
        with structlog.testing.capture_logs() as logs:
            async with running(daemon):
                await until(lambda: sample(daemon, "vcmon_mqtt_connected") == 1, 10,
                            "connected with the password")
        assert SECRET not in repr(logs) + caplog.text


def tls_files(folder: Path) -> dict[str, Path]:
    """A test CA, the broker's certificate for 127.0.0.1, a client certificate, and a
    second CA that signed none of them."""
    ca, stranger = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("vcmon.example.vn")
    files = {name: folder / f"{name}.pem" for name in (
        "ca", "stranger", "server", "server-key", "client", "client-key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    stranger.cert_pem.write_to_path(str(files["stranger"]))
    for name, cert in (("server", server), ("client", client)):
        for i, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(files[name]), append=i > 0)
        cert.private_key_pem.write_to_path(str(files[f"{name}-key"]))
    return files


# paho leaves the socket of a failed TLS handshake to the garbage collector, which
# closes it with a ResourceWarning; nothing leaks, but the warning would fail the test.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*SSLSocket:pytest.PytestUnraisableExceptionWarning")
async def test_tls_with_a_test_ca_and_a_client_certificate(tmp_path: Path) -> None:
    files = tls_files(tmp_path)
    subscriber_port = Broker(tmp_path).port
    with Broker(tmp_path, plain_port=subscriber_port, listener_options=(
            f"cafile {files['ca']}\ncertfile {files['server']}\nkeyfile {files['server-key']}\n"
            "require_certificate true\nallow_anonymous true")) as broker:
        subscriber = Subscriber(tmp_path, subscriber_port, "vcmon/#")
        try:
            await until(lambda: subscriber.subscriptions() == 1, 10, "the subscriber")
            wrong = daemon_for(config(broker.port, sites=1, mqtt=(
                f"  tls: {{ca_file: {files['stranger']}}}\n")))
            with structlog.testing.capture_logs() as logs:
                async with running(wrong):
                    await until(lambda: any(e["event"] == "mqtt_connect_failed" for e in logs),
                                10, "a refused certificate")
            failure = next(e for e in logs if e["event"] == "mqtt_connect_failed")
            assert "CERTIFICATE_VERIFY_FAILED" in failure["reason"]
            assert failure["hint"].startswith("check mqtt.tls.ca_file")

            daemon = daemon_for(config(broker.port, sites=2, mqtt=(
                f"  tls: {{ca_file: {files['ca']}, cert_file: {files['client']}, "
                f"key_file: {files['client-key']}}}\n")))
            async with running(daemon):
                await until(lambda: len([m for m in subscriber.messages()
                                         if m["topic"].endswith("/state")]) >= 2, 10,
                            "both sites' states over TLS")
                assert subscriber.messages("vcmon/status")[-1]["payload"] == "online"
        finally:
            subscriber.close()
