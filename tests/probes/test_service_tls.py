"""TLS probes against a real TLS server on loopback, with certificates made by trustme:
a good one, an expired one, one for another name, and one from an unknown CA."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from probes import Outcome, tls
from tests.conftest import free_port
from tests.probes.peers import port_of, tcp_peer

NOW = datetime.now(UTC).replace(microsecond=0)
GOOD_UNTIL = NOW + timedelta(days=30)
EXPIRED_AT = NOW - timedelta(days=2)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@asynccontextmanager
async def tls_server(cert: trustme.LeafCert) -> AsyncIterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # until the client closes
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1]


def spec(port: int, **settings: object) -> tls.TlsSpec:
    return tls.TlsSpec.model_validate({"kind": "tls", "port": port, **settings})


async def test_a_good_certificate_verifies_and_reports_its_expiry(
        ca: trustme.CA, ca_file: str) -> None:
    cert = ca.issue_cert("127.0.0.1", not_after=GOOD_UNTIL)
    async with tls_server(cert) as port:
        result = await tls.probe("s/tls", "127.0.0.1", 2.0, spec(port, ca_file=ca_file))
    assert result.outcome is Outcome.REPLY, result.detail
    values = result.values or {}
    assert values["verify"] == "ok"
    assert values["cert_not_after"] == GOOD_UNTIL.timestamp()
    handshake = values["handshake_seconds"]
    assert isinstance(handshake, float) and result.rtt is not None
    assert 0 < handshake < result.rtt < 1.0


async def test_an_expired_certificate_is_a_finding_with_its_expiry(
        ca: trustme.CA, ca_file: str) -> None:
    cert = ca.issue_cert("127.0.0.1", not_before=NOW - timedelta(days=30),
                         not_after=EXPIRED_AT)
    async with tls_server(cert) as port:
        result = await tls.probe("s/tls", "127.0.0.1", 2.0, spec(port, ca_file=ca_file))
    assert result.outcome is Outcome.FAILED
    values = result.values or {}
    assert values["reason"] == "cert_expired" and values["verify"] == "expired"
    assert values["cert_not_after"] == EXPIRED_AT.timestamp() < time.time()
    assert "certificate rejected (expired)" in result.detail


async def test_a_certificate_for_another_name_is_a_finding(
        ca: trustme.CA, ca_file: str) -> None:
    cert = ca.issue_cert("codec.other.example.vn", not_after=GOOD_UNTIL)
    async with tls_server(cert) as port:
        by_address = await tls.probe("s/tls", "127.0.0.1", 2.0, spec(port, ca_file=ca_file))
        by_name = await tls.probe("s/tls", "127.0.0.1", 2.0,
                                  spec(port, ca_file=ca_file,
                                       server_name="codec.other.example.vn"))
    assert by_address.outcome is Outcome.FAILED
    assert (by_address.values or {})["reason"] == "cert_name_mismatch"
    assert (by_address.values or {})["cert_not_after"] == GOOD_UNTIL.timestamp()
    assert by_name.outcome is Outcome.REPLY, by_name.detail


async def test_an_unknown_ca_fails_unless_verification_is_off(ca_file: str) -> None:
    stranger = trustme.CA().issue_cert("127.0.0.1", not_after=GOOD_UNTIL)
    async with tls_server(stranger) as port:
        strict = await tls.probe("s/tls", "127.0.0.1", 2.0, spec(port, ca_file=ca_file))
        lenient = await tls.probe("s/tls", "127.0.0.1", 2.0,
                                  spec(port, ca_file=ca_file, verify=False))
    assert strict.outcome is Outcome.FAILED
    assert (strict.values or {})["reason"] == "cert_untrusted"
    # reported, not failed: the finding and the expiry are still there
    assert lenient.outcome is Outcome.REPLY and lenient.rtt is not None
    assert (lenient.values or {})["verify"] == "untrusted"
    assert (lenient.values or {})["cert_not_after"] == GOOD_UNTIL.timestamp()


async def test_a_plain_tcp_service_fails_the_handshake() -> None:
    async with await tcp_peer(reply=b"SIP/2.0 400 Bad Request\r\n\r\n") as server:
        result = await tls.probe("s/tls", "127.0.0.1", 2.0, spec(port_of(server)))
    assert result.outcome is Outcome.FAILED
    assert (result.values or {})["reason"] == "tls_handshake", result.detail


async def test_refused_and_a_missing_ca_file_are_results_not_exceptions(tmp_path: Path) -> None:
    refused = await tls.probe("s/tls", "127.0.0.1", 2.0, spec(free_port()))
    assert refused.outcome is Outcome.REFUSED
    missing = await tls.probe("s/tls", "127.0.0.1", 2.0,
                              spec(free_port(), ca_file=str(tmp_path / "none.pem")))
    assert missing.outcome is Outcome.FAILED
    assert f"cannot load ca_file {tmp_path / 'none.pem'}" in missing.detail
