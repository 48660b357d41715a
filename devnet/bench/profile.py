"""Profile a running validator with py-spy and summarise the hottest functions.

`profile_pid(pid, seconds, workdir)` records collapsed stacks (`py-spy record --format
raw`), then ranks functions by own time (the leaf of a sample) and by inclusive time (on
the stack of a sample, counted once per sample).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

TOP = 20
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_LINENO = re.compile(r":\d+\)$")


def _frame(raw: str) -> str:
    """`func (path/to/file.py:123)` -> `func (to/file.py)`: aggregated over lines."""
    raw = _LINENO.sub(")", raw.strip())
    name, _, where = raw.partition(" (")
    parts = where.rstrip(")").split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if where else name


def summarise(collapsed: str, top: int = TOP) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        count = int(m["count"])
        frames = [_frame(f) for f in m["stack"].split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    if total == 0:
        return "no samples\n"
    out = [f"{total} samples", "", "own time:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    out += ["", "inclusive time:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(out) + "\n"


def py_spy() -> str:
    local = Path(sys.executable).with_name("py-spy")
    if local.exists():
        return str(local)
    found = shutil.which("py-spy")
    if found is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    return found


def profile_pid(pid: int, seconds: float, workdir: Path) -> str:
    """Record `pid` for `seconds` and return the summary (or why it failed)."""
    out = workdir / f"profile-{pid}.txt"
    cmd = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "100",
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"py-spy failed: {e}\n"
    if done.returncode != 0 or not out.exists():
        return f"py-spy failed ({done.returncode}): {done.stderr.strip()[-500:]}\n"
    text = summarise(out.read_text())
    (workdir.parent / "leader-profile.collapsed").write_text(out.read_text())
    return text
