"""Write vcmon's dashboards to grafana/dashboards/, or check that they are up to date.

    python -m grafana.build            # regenerate the JSON files
    python -m grafana.build --check    # exit 1 if a committed file differs from the code
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grafana import _daemon, _district, _overview, _site
from grafana._panels import Json

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
DASHBOARDS: dict[str, Callable[[], Json]] = {
    "overview.json": _overview.build,
    "district.json": _district.build,
    "site.json": _site.build,
    "vcmon.json": _daemon.build,
}


def render(dashboard: Json) -> str:
    # Vietnamese stays readable in diffs; the order is the builders' (already stable).
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    """File name → the JSON text the code generates now."""
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file differs from what the code makes")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = DASHBOARDS_DIR / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if args.check and stale:
        print("out of date (run python -m grafana.build): "
              + ", ".join(str(p) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
