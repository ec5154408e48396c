"""The ``mqtt:`` section: defaults, every problem with its line, secrets kept out of it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from monitor.inventory import ConfigError, parse_config
from monitor.inventory.mqtt import MqttSettings, MqttSetupError, MqttTls

HALL = "sites: [{id: hall, name: Hội trường Tỉnh ủy, tier: province, address: 127.10.0.1}]\n"


def problems(section: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(section + HALL, "vcmon.yaml")
    return [str(problem) for problem in caught.value.problems]


def test_no_section_means_no_mqtt() -> None:
    assert parse_config(HALL).mqtt is None


def test_defaults() -> None:
    config = parse_config("mqtt: {host: mqtt.bacninh.example.vn}\n" + HALL)
    mqtt = config.mqtt
    assert mqtt is not None
    assert (mqtt.broker_port, mqtt.prefix, mqtt.qos, mqtt.keepalive) == (1883, "vcmon", 1, 30)
    assert mqtt.identifier == f"vcmon-{socket.gethostname()}"
    assert (mqtt.queue_size, mqtt.measurements_every) == (10_000, None)
    assert (mqtt.reconnect_initial, mqtt.reconnect_max) == (1, 60)
    assert mqtt.password() is None


def test_tls_changes_the_default_port() -> None:
    config = parse_config("mqtt: {host: 10.0.0.5, tls: {}}\n" + HALL)
    assert config.mqtt is not None and config.mqtt.broker_port == 8883


def test_every_problem_with_its_line() -> None:
    assert problems(
        "mqtt:\n"
        "  host: mqtt..example\n"
        "  port: 0\n"
        "  prefix: bn/+/vcmon\n"
        "  qos: 0\n"
        "  keepalive: 2s\n"
        "  password_file: /etc/vcmon/mqtt-password\n"
        "  queue_size: 5\n"
        "  measurements_every: 100ms\n"
        "  colour: red\n"
    ) == [
        'vcmon.yaml:2: mqtt.host: "mqtt..example" is not an IPv4/IPv6 address or a valid '
        "hostname; use e.g. 10.0.0.5, 2001:db8::5 or vc-xa.example.vn",
        "vcmon.yaml:3: mqtt.port: 0 is not a TCP port; use 1 to 65535, e.g. 1883 (8883 with TLS)",
        'vcmon.yaml:4: mqtt.prefix: "bn/+/vcmon" is not a topic prefix; + and # are wildcards '
        "and a leading $ is reserved for the broker, e.g. write vcmon",
        "vcmon.yaml:5: mqtt.qos: 0 is not a QoS vcmon can keep its promise with: events are kept "
        "until the broker acknowledges them, which needs 1 (at least once) or 2 (exactly once)",
        "vcmon.yaml:6: mqtt.keepalive: 2 seconds is out of range; use 5 to 65535 seconds",
        "vcmon.yaml:7: mqtt.password_file: a password needs a user name; set username too",
        "vcmon.yaml:8: mqtt.queue_size: 5 messages is out of range; use 10 to 1000000 messages",
        "vcmon.yaml:9: mqtt.measurements_every: 0.1 seconds is out of range; "
        "use 1 to 86400 seconds",
        'vcmon.yaml:10: mqtt.colour: unknown key "colour"; allowed keys are: host, port, prefix, '
        "qos, client_id, keepalive, username, password_file, password_env, tls, queue_size, "
        "measurements_every, reconnect_initial, reconnect_max",
    ]


def test_problems_between_keys() -> None:
    assert problems(
        "mqtt:\n"
        "  host: broker\n"
        "  prefix: /vcmon/\n"
        "  username: vcmon\n"
        "  password_file: /run/credentials/vcmon/mqtt\n"
        "  password_env: 'VCMON MQTT'\n"
        "  tls: {key_file: /etc/vcmon/client.key}\n"
        "  reconnect_initial: 10s\n"
        "  reconnect_max: 1s\n"
    ) == [
        'vcmon.yaml:3: mqtt.prefix: "/vcmon/" is not a topic prefix; write one or more '
        "non-empty levels separated by /, without a leading or trailing /, e.g. vcmon or "
        "bacninh/vcmon",
        'vcmon.yaml:6: mqtt.password_env: "VCMON MQTT" is not an environment variable name; '
        "write e.g. VCMON_MQTT_PASSWORD",
        "vcmon.yaml:7: mqtt.tls.key_file: a client key needs its certificate; set cert_file too",
        "vcmon.yaml:9: mqtt.reconnect_max: 1 s is below reconnect_initial (10 s); raise "
        "reconnect_max or lower reconnect_initial",
    ]
    assert problems(
        "mqtt: {host: broker, username: u, password_file: /p, password_env: P}\n"
    ) == ["vcmon.yaml:1: mqtt.password_env: the password comes from one place; keep "
          "password_file or password_env, not both"]
    assert problems("mqtt: broker\n") == [
        'vcmon.yaml:1: mqtt: expected a mapping of keys, found "broker"; write key: value lines']
    assert problems("mqtt: {port: 1883}\n") == [
        'vcmon.yaml:1: mqtt.host: required key "host" is missing; add it']


def test_password_from_a_file_without_its_line_break(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("mật khẩu 1\n")
    settings = MqttSettings(host="broker", username="vcmon",
                            password_file=str(tmp_path / "password"))
    assert settings.password() == "mật khẩu 1"


def test_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = MqttSettings(host="broker", username="vcmon", password_env="VCMON_TEST_PW")
    monkeypatch.setenv("VCMON_TEST_PW", "pw-27-3")
    assert settings.password() == "pw-27-3"
    monkeypatch.delenv("VCMON_TEST_PW")
    with pytest.raises(MqttSetupError, match=r"VCMON_TEST_PW named by mqtt\.password_env is not"):
        settings.password()


def test_an_unreadable_password_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    settings = MqttSettings(host="broker", username="vcmon", password_file=str(missing))
    with pytest.raises(MqttSetupError) as caught:
        settings.password()
    assert str(caught.value) == (
        f"cannot read the MQTT password from mqtt.password_file {missing} (No such file or "
        "directory); check the path and its permissions")


def test_unloadable_tls_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(MqttSetupError, match=r"cannot load the TLS files of mqtt.tls \(.*ca.pem\)"):
        MqttTls(ca_file=str(tmp_path / "ca.pem")).context()
