"""TLS probes: handshake time, the certificate's expiry and whether it verifies.

An expired certificate, a name that does not match or an unknown issuer is a finding
(``Outcome.FAILED`` with ``verify`` naming it), never an exception: the handshake is
then repeated without verification, so that the expiry is known in every case.
"""

from __future__ import annotations

import asyncio
import ssl
import time

from probes._result import Outcome, ProbeResult
from probes._service import PORT_NAMES, Attempt, Port, ServiceSpec, client_context, connect

# OpenSSL's X509_V_ERR_* codes that technicians act on differently.
_VERIFY_FINDINGS = {10: "expired", 9: "not_yet_valid", 62: "name_mismatch",
                    18: "untrusted", 19: "untrusted", 20: "untrusted", 21: "untrusted",
                    64: "name_mismatch"}


class TlsSpec(ServiceSpec):
    port: Port = PORT_NAMES["sip-tls"]  # 443 for a web interface
    # PEM file of the CAs to trust (a codec's own CA, a self-signed cert); none: the
    # system's CA store
    ca_file: str | None = None
    # the name the certificate must carry and the SNI sent; none: the site's address
    server_name: str | None = None
    # false: a certificate that does not verify is still reported, but not a failure
    verify: bool = True


async def probe(target: str, address: str, timeout: float, spec: TlsSpec) -> ProbeResult:  # noqa: ASYNC109 - the probe's own time budget, as every kind takes it
    """Connect and handshake; RTT is connect plus handshake time."""
    attempt = Attempt(target, address)
    name = spec.server_name or address
    try:
        context = client_context(spec.ca_file)
    except ValueError as exc:
        return attempt.result(Outcome.FAILED, detail=str(exc))
    try:
        async with asyncio.timeout(timeout):
            writer, handshake = await _handshake(address, spec, context, name)
            cert = writer.get_extra_info("peercert")
            writer.close()
        values: dict[str, float | str] = {"verify": "ok", "handshake_seconds": handshake}
        if cert and "notAfter" in cert:
            values["cert_not_after"] = float(ssl.cert_time_to_seconds(cert["notAfter"]))
        return attempt.result(Outcome.REPLY, attempt.elapsed(), values=values)
    except ssl.SSLCertVerificationError as exc:
        finding = _VERIFY_FINDINGS.get(exc.verify_code, "invalid")
        why = exc.verify_message or exc.reason or str(exc)
    except ssl.SSLError as exc:
        return attempt.result(Outcome.FAILED, detail=f"TLS handshake failed: {exc.reason or exc}",
                              values={"verify": "handshake_failed", "reason": "tls_handshake"})
    except (OSError, TimeoutError) as exc:
        return attempt.failed(exc, f"TLS port {spec.port}")
    return await _unverified(attempt, address, spec, timeout, finding, why)


async def _unverified(attempt: Attempt, address: str, spec: TlsSpec, timeout: float,  # noqa: ASYNC109 - what is left of the probe's budget
                      finding: str, why: str) -> ProbeResult:
    """The certificate's expiry, read by a handshake that does not verify it."""
    values: dict[str, float | str] = {"verify": finding, "reason": f"cert_{finding}"}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        async with asyncio.timeout(max(0.0, timeout - attempt.elapsed())):
            writer, handshake = await _handshake(address, spec, context, spec.server_name)
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            writer.close()
    except (OSError, TimeoutError):
        der, handshake = None, None
    if der:
        # here, not at the top: ~10 MB of memory that only a rejected certificate needs
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        values["cert_not_after"] = cert.not_valid_after_utc.timestamp()
    if handshake is not None:
        values["handshake_seconds"] = handshake
    detail = f"certificate rejected ({finding}): {why}"
    if spec.verify or handshake is None:
        return attempt.result(Outcome.FAILED, detail=detail, values=values)
    return attempt.result(Outcome.REPLY, attempt.elapsed(), detail, values)


async def _handshake(address: str, spec: TlsSpec, context: ssl.SSLContext,
                     name: str | None) -> tuple[asyncio.StreamWriter, float]:
    sock = await connect(address, spec.port, spec.tos)
    started = time.perf_counter()
    # server_hostname: the SNI and the name checked; an IP address is checked against
    # the certificate's IP SANs and sent without SNI (RFC 6066 forbids IP literals)
    _, writer = await asyncio.open_connection(sock=sock, ssl=context, server_hostname=name or "")
    return writer, time.perf_counter() - started
