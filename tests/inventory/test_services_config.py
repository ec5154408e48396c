"""The probes: lists and dscp: in the inventory: shape, inheritance, exact problems."""

from __future__ import annotations

import pytest

from monitor.inventory import ConfigError, parse_config
from monitor.inventory.schema import SERVICE_MODELS
from probes import KINDS

SITES = """
defaults:
  dscp: AF41
  probes:
    - {kind: sip}
    - {kind: tls, name: sip-tls, interval: 30s}
sites:
  - {id: hall, name: Hall, tier: province, address: 127.0.0.1}
  - id: codec
    name: Codec
    tier: district
    parent: hall
    address: 127.0.0.2
    probe: {dscp: EF}
    probes:
      - {kind: tcp, name: h323, port: h323}
      - {kind: icmp, name: icmp-be, dscp: 0, interval: 1s, timeout: 500ms}
  - {id: quiet, name: Quiet, tier: commune, parent: hall, address: 127.0.0.3, probes: []}
"""


def test_a_site_lists_its_own_probes_or_inherits_the_defaults() -> None:
    config = parse_config(SITES)
    hall, codec, quiet = config.sites
    assert [(p.label, p.kind, p.port, p.dscp, p.interval) for p in config.services_for(hall)] == [
        ("sip", "sip", 5060, 34, 10.0), ("sip-tls", "tls", 5061, 34, 30.0)]
    h323, echo = config.services_for(codec)
    # a probe's own dscp, else the site's (probe: dscp:), else the defaults'
    assert (h323.label, h323.port, h323.dscp) == ("h323", 1720, 46)
    assert (echo.label, echo.dscp, echo.interval, echo.timeout) == ("icmp-be", 0, 1.0, 0.5)
    assert config.services_for(quiet) == ()
    assert [config.settings_for(site).dscp for site in config.sites] == [34, 46, 34]


def test_every_kind_of_the_table_is_configurable() -> None:
    assert list(SERVICE_MODELS) == list(KINDS)
    for name, model in SERVICE_MODELS.items():
        assert issubclass(model, KINDS[name].settings)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "sites.yml")
    return [str(problem) for problem in caught.value.problems]


ONE = "sites:\n  - id: a\n    name: A\n    tier: province\n    address: 127.0.0.1\n"


@pytest.mark.parametrize(("entries", "expected"), [
    ("[{kind: sip, transprt: tcp}]",
     'sites.yml:6: sites[0].probes[0].transprt: unknown key "transprt" (did you mean '
     '"transport"?); allowed keys are: kind, dscp, port, transport, name, interval, timeout, '
     "down_after"),
    ("[{kind: h323}]",
     'sites.yml:6: sites[0].probes[0]: unknown probe kind "h323"; allowed probe kinds are: '
     "icmp, tcp, tls, sip, http, twamp"),
    ("[{port: 5060}]",
     "sites.yml:6: sites[0].probes[0]: the probe has no kind; add kind: with one of icmp, tcp, "
     "tls, sip, http, twamp"),
    ("[{kind: tcp}]",
     'sites.yml:6: sites[0].probes[0].port: required key "port" is missing; add it'),
    ("[{kind: tcp, port: sips}]",
     'sites.yml:6: sites[0].probes[0].port: "sips" is not a known service; use a number '
     "1..65535 or one of sip, sip-tls, h323, https, http"),
    ("[{kind: sip, dscp: AF44}]",
     'sites.yml:6: sites[0].probes[0].dscp: "AF44" is not a DSCP name; use EF, AF11..AF43, '
     "CS0..CS7 or a number 0..63"),
    ("[{kind: sip, dscp: 64}]",
     "sites.yml:6: sites[0].probes[0].dscp: 64 is not a DSCP; use a name (EF, AF41, CS5) or a "
     "number 0..63 (the six high bits of the IPv4 TOS / IPv6 traffic class byte)"),
    ("[{kind: sip, interval: 5s, timeout: 6s}]",
     "sites.yml:6: sites[0].probes[0].timeout: the timeout of 6 s is longer than the interval "
     "of 5 s; lower timeout or raise interval"),
    ("[{kind: sip}, {kind: sip, transport: tcp}]",
     'sites.yml:6: sites[0].probes: two probes are named "sip"; give each its own name:, '
     "e.g. name: sip-2"),
    ("[{kind: sip, name: SIP TCP}]",
     'sites.yml:6: sites[0].probes[0].name: "SIP TCP" is not a valid probe name; use 1 to 63 '
     'lowercase ASCII letters, digits, "-" and "_", starting with a letter or digit, '
     "e.g. sip-tcp"),
    ("[{kind: http, url: 10.0.0.5/health}]",
     'sites.yml:6: sites[0].probes[0].url: "10.0.0.5/health" is not an http:// or https:// '
     "URL with a host; write e.g. https://10.0.0.5/api/health"),
    ("sip",
     "sites.yml:6: sites[0].probes: expected a list, found \"sip\"; write one '- ' line per probe"),
])
def test_bad_probe_entries_name_the_field(entries: str, expected: str) -> None:
    assert problems(ONE + f"    probes: {entries}\n") == [expected]


def test_a_service_kind_is_not_a_site_probe_kind_and_dscp_is_checked_in_defaults() -> None:
    assert problems("defaults: {kind: sip, dscp: AF5}\n" + ONE) == [
        'sites.yml:1: defaults.kind: unknown probe kind "sip"; allowed probe kinds are: icmp; '
        "list service probes under probes:",
        'sites.yml:1: defaults.dscp: "AF5" is not a DSCP name; use EF, AF11..AF43, CS0..CS7 or '
        "a number 0..63",
    ]
    assert problems(ONE + "    probe: {dscp: [1]}\n") == [
        "sites.yml:6: sites[0].probe.dscp: [1] is not a DSCP; use a name (EF, AF41, CS5) or a "
        "number 0..63 (the six high bits of the IPv4 TOS / IPv6 traffic class byte)"]


def test_a_bad_default_probe_is_reported_once_in_defaults() -> None:
    assert problems("defaults:\n  probes:\n    - {kind: sip, port: 0}\n" + ONE) == [
        "sites.yml:3: defaults.probes[0].port: 0 is not a port; use a number 1..65535 or a "
        "service name (sip, sip-tls, h323, https, http)"]
