"""A sampling profile of a running daemon (py-spy), summed up in a few lines.

``bench_scale.py --profile DIR`` samples vcmon with ``py-spy record --format raw`` (one
line per distinct stack: ``frame;frame;…;frame count``) for the window and prints the
functions where the samples were taken (self) and the frames they passed through
(total), each as a share of the non-idle samples. py-spy is on the package index
(``.venv/bin/pip install py-spy``); it reads the daemon's memory from outside, so the
daemon's own CPU figure in a profiled run is not one to quote.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# py-spy writes a frame as "function (file.py:line)"; the line number is dropped so
# that one function's samples add up.
_LINE = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path, rate: int = 500) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` for ``seconds`` into ``out`` (raw stacks), non-blocking."""
    spy = py_spy()
    if spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", f"{seconds:.0f}",
                             "--rate", str(rate), "--format", "raw", "--nonblocking",
                             "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summary(raw: Path, top: int = 15) -> list[str]:
    """The ``top`` functions by self and by total samples, as lines to print."""
    own: Counter[str] = Counter()
    through: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            through[frame] += count
    if not total:
        return [f"  profile {raw}: no samples"]
    lines = [f"  profile ({raw.name}, {total} samples of the loop thread at work):",
             "    self  %  function"]
    lines += [f"    {n / total * 100:6.1f}  {frame}" for frame, n in own.most_common(top)]
    lines.append("    total %  frame")
    lines += [f"    {n / total * 100:6.1f}  {frame}" for frame, n in through.most_common(top)]
    return lines
