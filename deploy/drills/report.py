"""Render the drills' JSON report (conftest.py, --drills-json) as the markdown table of
docs/reliability.md.

    python -m drills.report /tmp/readme/drills.json                  # print the table
    python -m drills.report /tmp/readme/drills.json --into docs/reliability.md  # between markers
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

START, END = "<!-- drills:start -->", "<!-- drills:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(report: dict[str, Any], note: str = "") -> str:
    drills = report["drills"]
    passed = sum(d["passed"] for d in drills)
    total = sum(d["seconds"] for d in drills)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"{passed}/{len(drills)} drills passed in {total:.0f} s; image `{report['image']}`; "
        f"rendered {when}{'; ' + note if note else ''}.",
        "",
        "| # | Drill | Figures | Result |",
        "| --- | --- | --- | --- |",
    ]
    for d in drills:
        verdict = "pass" if d["passed"] else "**FAIL**: " + _cell("; ".join(d["failures"]))
        lines.append(f"| {d['number']} | {_cell(d['title'])} | {_cell(d['summary'])} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drills.report", description=__doc__)
    parser.add_argument("report", type=Path)
    parser.add_argument("--into", type=Path, help="replace the table between the drills markers")
    parser.add_argument("--note", default="", help="where the run was made (commit, machine)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    table = render(json.loads(args.report.read_text()), args.note)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    if args.into:
        doc = args.into.read_text()
        pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
        if not pattern.search(doc):
            print(f"{args.into}: no {START} ... {END} markers", file=sys.stderr)
            return 1
        args.into.write_text(pattern.sub(lambda _: f"{START}\n{table}{END}", doc))
    else:
        print(table, end="")
        # Last, so that a log's tail (all a CI summary may keep) names what failed and why.
        for d in json.loads(args.report.read_text())["drills"]:
            if not d["passed"]:
                print(f"FAILED drill {d['number']}: " + "; ".join(d["failures"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
