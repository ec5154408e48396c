"""HTTP probes against a real aiohttp server on loopback, plain and over TLS."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from probes import Outcome, http
from tests.conftest import free_port


def spec(**settings: object) -> http.HttpSpec:
    return http.HttpSpec.model_validate({"kind": "http", **settings})


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def broken(request: web.Request) -> web.Response:
    return web.Response(status=503, text="MCU overloaded")


async def login(request: web.Request) -> web.Response:
    raise web.HTTPFound("/login")


async def serve(context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/broken", broken)
    app.router.add_get("/", login)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    return runner, port


@pytest.fixture
async def plain() -> AsyncIterator[int]:
    runner, port = await serve()
    yield port
    await runner.cleanup()


async def test_status_and_time_to_the_headers(plain: int) -> None:
    url = f"http://127.0.0.1:{plain}/api/health"
    result = await http.probe("s/http", "127.0.0.1", 2.0, spec(url=url))
    assert result.outcome is Outcome.REPLY, result.detail
    assert (result.values or {})["status_code"] == 200
    assert result.rtt is not None and 0 < result.rtt < 1.0


async def test_an_error_status_fails_with_its_code(plain: int) -> None:
    url = f"http://127.0.0.1:{plain}/api/broken"
    result = await http.probe("s/http", "127.0.0.1", 2.0, spec(url=url))
    assert result.outcome is Outcome.FAILED
    assert result.values == {"status_code": 503, "reason": "http_status"}
    assert result.detail == f"GET {url}: HTTP 503"


async def test_a_redirect_is_an_answer_not_followed(plain: int) -> None:
    url = f"http://127.0.0.1:{plain}/"
    result = await http.probe("s/http", "127.0.0.1", 2.0, spec(url=url))
    assert result.outcome is Outcome.REPLY and (result.values or {})["status_code"] == 302


async def test_https_on_the_site_address_verifies_against_the_ca_file(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    runner, port = await serve(context)
    try:
        # no url: https://<address>:<port>/ (here the login redirect)
        trusted = await http.probe("s/http", "127.0.0.1", 2.0,
                                   spec(port=port, ca_file=str(ca_file)))
        untrusted = await http.probe("s/http", "127.0.0.1", 2.0, spec(port=port))
    finally:
        await runner.cleanup()
    assert trusted.outcome is Outcome.REPLY, trusted.detail
    assert (trusted.values or {})["status_code"] == 302
    assert untrusted.outcome is Outcome.FAILED
    assert (untrusted.values or {})["reason"] == "cert_invalid"


async def test_nothing_listening_is_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    result = await http.probe("s/http", "127.0.0.1", 2.0, spec(url=url))
    assert result.outcome is Outcome.REFUSED, result.detail


def test_the_url_names_the_host_probed_and_is_checked() -> None:
    assert spec(url="http://10.1.2.3:8080/x").host("192.0.2.1") == "10.1.2.3"
    assert spec().host("192.0.2.1") == "192.0.2.1"
    assert spec(port=8443).url_for("2001:db8::1") == "https://[2001:db8::1]:8443/"
    with pytest.raises(ValueError, match='"ftp://x" is not an http:// or https:// URL'):
        spec(url="ftp://x")
