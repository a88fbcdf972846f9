"""Drill 5: schemathesis against the served OpenAPI schema (deploy/drills/schemathesis.toml).

Runs the dev venv's schemathesis (4.x) from the host against the published port, with the first
API token, so that writes are exercised on PostgreSQL. Pass: schemathesis exits 0 with every
operation tested and no failure or error in its JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from drills.common import Context, DrillResult
from drills.stack import log

TITLE = "Fuzzing the OpenAPI schema (schemathesis)"
CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"


@pytest.mark.drill(5, TITLE, stage="shared")
def test_fuzz_openapi(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    st = stack.root / ".venv" / "bin" / "schemathesis"
    url = ctx.refresh_url()
    with tempfile.TemporaryDirectory(prefix="heroes-fuzz-") as tmp:  # .hypothesis etc. land here
        report = Path(tmp) / "report.json"
        cmd = [str(st), "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
               "--report", "json", "--report-json-path", str(report), "--no-color"]  # fmt: skip
        if ctx.fuzz_max_examples:
            cmd += ["--max-examples", str(ctx.fuzz_max_examples)]
        log(f"drill 5: {' '.join(cmd[2:])}")
        env = {
            **os.environ,
            "DRILLS_API_TOKEN": stack.tokens()[0],
            "SCHEMATHESIS_HOOKS": "drills.schemathesis_hooks",
            "PYTHONPATH": str(stack.root / "deploy"),
        }
        proc = subprocess.run(
            cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        data: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    cases = data.get("test_cases", {})
    operations = data.get("operations", {})
    failures = data.get("failures", [])
    errors = data.get("errors", [])
    result.figures.update(
        exit_code=proc.returncode,
        seed=data.get("seed"),
        operations_tested=operations.get("tested"),
        operations_total=operations.get("total"),
        test_cases=cases.get("generated"),
        failures=sum(int(f.get("count", 1)) for f in failures),
        errors=len(errors),
        phases={k: v.get("status") for k, v in data.get("phases", {}).items()},
        seconds=round(float(data.get("running_time", 0.0)), 1),
    )
    f = result.figures
    ok = result.expect(bool(data), "schemathesis wrote no report")
    ok &= result.expect(proc.returncode == 0, f"schemathesis exited {proc.returncode}")
    ok &= result.expect(not failures, f"failures: {failures}")
    ok &= result.expect(not errors, f"errors: {errors}")
    ok &= result.expect(
        bool(f["operations_total"]) and f["operations_tested"] == f["operations_total"],
        f"tested {f['operations_tested']} of {f['operations_total']} operations",
    )
    if not ok:
        print(proc.stdout[-20000:], proc.stderr[-5000:], file=sys.stderr)
    phases = ", ".join(f"{k} {v}" for k, v in f["phases"].items())
    result.summary = (
        f"seed {f['seed']}, token set: {f['test_cases']} test cases on {f['operations_tested']}/"
        f"{f['operations_total']} operations (phases: {phases}); failures {f['failures']}, "
        f"errors {f['errors']}; {f['seconds']} s"
    )
