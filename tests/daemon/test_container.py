"""What the container image is made of and runs, without a Docker engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    done = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def _dockerfile_json(instruction: str) -> list[str]:
    """The JSON-form arguments of the Dockerfile's last ``instruction`` line."""
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    found = [line for line in lines if line.startswith(instruction + " ")]
    text = found[-1][len(instruction):].strip()
    if instruction == "HEALTHCHECK":
        text = text.split("CMD", 1)[1].strip()
    args: list[str] = json.loads(text)
    return args


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with only the wheel and what it requires, as the image."""
    work = tmp_path_factory.mktemp("image")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir",
                    str(work / "wheels"), str(ROOT)], check=True, timeout=300)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    wheel = next((work / "wheels").glob("vcmon-*.whl"))
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    str(wheel)], check=True, timeout=600)
    return venv


def test_the_wheel_carries_the_embedded_inventory(wheel_venv: Path) -> None:
    done = subprocess.run([str(wheel_venv / "bin" / "vcmon"), "inventory"], capture_output=True,
                          text=True, timeout=60, check=True, cwd="/")
    assert "Total: 240 sites" in done.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="ICMP sockets as on the image's Linux")
def test_the_image_command_serves_and_its_healthcheck_passes(wheel_venv: Path) -> None:
    entry, cmd = _dockerfile_json("ENTRYPOINT"), _dockerfile_json("CMD")
    assert entry == ["vcmon"] and cmd[0] == "run"
    port = free_port()
    # The image listens on 0.0.0.0:9470; here the same command on a free loopback port.
    args = [a.replace("0.0.0.0:9470", f"127.0.0.1:{port}") for a in cmd]
    proc = subprocess.Popen([str(wheel_venv / "bin" / entry[0]), *args, "--log-format", "json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
    try:
        check = [a.replace("127.0.0.1:9470", f"127.0.0.1:{port}")
                 for a in _dockerfile_json("HEALTHCHECK")]
        assert check[0] == "python"
        check[0] = str(wheel_venv / "bin" / "python")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if subprocess.run(check, capture_output=True, timeout=10).returncode == 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the HEALTHCHECK command never passed")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"vcmon_site_info" in response.read()
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


def test_compose_brings_up_the_stack_with_the_shipped_configs() -> None:
    import yaml

    deploy = ROOT / "deploy"
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    services = compose["services"]
    assert sorted(services) == ["alertmanager", "grafana", "mosquitto", "prometheus", "vcmon"]
    assert (deploy / services["vcmon"]["build"]).resolve() == ROOT
    for name, service in services.items():
        # the shipped configs all talk over 127.0.0.1
        assert service["network_mode"] == "host", name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("${VCMON_CONFIG:-"):
                source = source[len("${VCMON_CONFIG:-"):-1]
            if source.startswith("."):
                assert (deploy / source).exists(), (name, source)
    provider = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/vcmon.yml").read_text())
    mounted = [v.split(":")[1] for v in services["grafana"]["volumes"]]
    assert provider["providers"][0]["options"]["path"] in mounted
