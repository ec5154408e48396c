"""Coverage-guided fuzzing of the inventory loader with atheris (libFuzzer), from bytes.

The seeded generator in tests/inventory/test_config_fuzz.py knows what inventories look
like; libFuzzer knows nothing, but follows the branches each input reaches in the
loader, PyYAML's pure-Python parser and vcmon's checks, and so finds inputs no grammar
would write. Every input goes through ``load_config`` as a .yaml and as a .csv file
(bytes, so the UTF-8 checks run too). Same property as the test: a Config, or vcmon's
ConfigError whose every problem names a line or a field; anything else is a crash that
libFuzzer saves as ``crash-<sha1>``. Not part of the default run:

    .venv/bin/pip install -e '.[fuzz]'
    .venv/bin/python tests/bench/fuzz_config_atheris.py -runs=200000 -max_len=4096 \\
        -rss_limit_mb=2048 -timeout=10 /tmp/vcmon-corpus

Every 10,000 inputs it prints those run so far, the time, the slowest input and the peak
RSS (libFuzzer ends the process from C, where no Python code runs after the last one).
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["monitor", "yaml"]):
    from monitor.inventory import Config, ConfigError, load_config

FOLDER = Path(tempfile.mkdtemp(prefix="vcmon-atheris-"))
FILES = (FOLDER / "fuzz.yaml", FOLDER / "fuzz.csv")
SEEDS = Path(__file__).parents[1] / "inventory" / "testdata"
stats = {"inputs": 0, "slowest": 0.0, "started": time.perf_counter()}


def check(path: Path) -> None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            if problem.line is None and not problem.field:
                raise AssertionError(f"a problem without a place: {problem}") from None
        str(exc).encode("utf-8")
    else:
        assert isinstance(config, Config) and config.sites


def test_one_input(data: bytes) -> None:
    start = time.perf_counter()
    for path in FILES:
        path.write_bytes(data)
        check(path)
    stats["inputs"] += 1
    stats["slowest"] = max(stats["slowest"], time.perf_counter() - start)
    if stats["inputs"] % 10_000 == 0:
        report()


def report() -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"atheris: {stats['inputs']} inputs (each as YAML and CSV) in "
          f"{time.perf_counter() - stats['started']:.0f} s; slowest {stats['slowest'] * 1000:.0f}"
          f" ms; peak RSS {rss:.0f} MB", file=sys.stderr)


def main() -> None:
    corpus = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    if corpus:
        # the invalid-*.yml cases and the CSV lists start libFuzzer off from real shapes
        Path(corpus[0]).mkdir(parents=True, exist_ok=True)
        for seed in SEEDS.iterdir():
            target = Path(corpus[0]) / seed.name
            if not target.exists():
                target.write_bytes(seed.read_bytes())
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
