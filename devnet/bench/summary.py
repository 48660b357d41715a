"""Gather several `qchain bench` reports into the tables of docs/BENCHMARKS.md.

    python -m devnet.bench.summary DIR [DIR ...]

Prints one markdown table row per report: its configuration and its saturation point
(the load point with the highest committed rate), then the idle key burn of every
report, then, for runs at a key-rate profile other than `lab`, what each window spent
against the profile's rate and whether it was in steady state.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from devnet.bench.report import KEY_RATE_HEADER, POINT_HEADER, fmt, key_rate_row, point_row, table


def _label(r: dict[str, Any]) -> str:
    c = r["config"]
    parts = [f"n={c['validators']}", c["scheme"], c["tx"], f"kms {c['kms_rate']}"]
    if c["faults"]:
        parts.append(f"{c['faults']} crashed")
    if c["baseline"]:
        parts.append("BASELINE fixed key")
    return ", ".join(parts)


def summary(reports: list[dict[str, Any]]) -> str:
    rows = []
    for r in reports:
        for p in r["points"]:
            rows.append([_label(r), *point_row(p)])
    idle_rows = [
        [_label(r), name, fmt(i["blocks_per_s"]), fmt(i["keys_per_link_per_s"])]
        for r in reports
        for name, i in r["idle"].items()
    ]
    key_rows = [
        [_label(r), *key_rate_row(p)]
        for r in reports
        for p in r["points"]
        if "key_rate" in p and r["config"]["kms_rate"] != "lab"
    ]
    tables = [
        table(["run", *POINT_HEADER], rows),
        table(["run", "window", "blocks/s", "keys/s/link"], idle_rows),
    ]
    if key_rows:
        tables.append(table(["run", *KEY_RATE_HEADER], key_rows))
    return "\n\n".join(tables)


def main() -> int:
    reports = [json.loads((Path(d) / "report.json").read_text()) for d in sys.argv[1:]]
    print(summary(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
