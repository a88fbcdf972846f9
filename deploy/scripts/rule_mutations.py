"""Mutation check of the Prometheus rules: do the promtool unit tests notice a broken rule?

Every rule of every file in deploy/prometheus/rules/ is edited the ways a careless change would
edit it, one edit per mutant: each number in its expression scaled (x0.75, x1.25; 0 -> 1), each
range window halved and doubled, `>=`/`<=` made strict and `> 0` made `>= 0`, `==` made `!=`,
each label matcher dropped, each operand of a top-level `and`/`or`/`unless` dropped, its `for`
halved, doubled and removed, its severity changed; not the edits no test can tell from the rule
(_repeated_one_to_one, rule_mutations). Each mutant runs the test groups of
deploy/prometheus/tests/ that load its rules file and assert on it or on a rule reading it, one
group per `promtool test rules`, until one fails (all mutants in one container, two at a time);
a mutant the tests still pass is a miss. Exit status 1 when any mutant survives. Usage
(deploy/scripts/prometheus-check.sh runs it):

    python deploy/scripts/rule_mutations.py [--image IMAGE] [--jobs N] [--only FILE.yml ...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
SEVERITY_SWAP = {"page": "ticket", "ticket": "page", "warning": "page", "none": "page"}

# A number that is not part of a name, a label value or a range window.
NUMBER = re.compile(r"(?<![\w.\[\"$])(\d+(?:\.\d+)?)(?![\w.\"\]])")
WINDOW = re.compile(r"\[(\d+)([smhdw])(?::[^\]]*)?\]")
MATCHER = re.compile(r"(,?\s*)([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*\"((?:[^\"\\]|\\.)*)\"")
STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"")
# libyaml when present: the test files hold long series (fast tests, slow pure-Python parsing).
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class TestLoader(LOADER):  # type: ignore[misc,valid-type]
    """YAML 1.1 reads a series `values: 0x40` (0, 40 times) as the hex number 64: in the test
    files only decimal numbers are numbers, the rest stay text (quoted when dumped again)."""


TestLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in LOADER.yaml_implicit_resolvers.items()
}
TestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
SET_OP = re.compile(r"\b(and|or|unless)\b(\s+(?:on|ignoring)\s*\([^)]*\))?")


@dataclass(frozen=True)
class Mutant:
    file: str
    rule: str
    what: str
    doc: dict[str, Any]  # the whole rules file, mutated


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _outside_strings(expr: str, start: int) -> bool:
    return not any(m.start() < start < m.end() for m in STRING.finditer(expr))


def _depth_zero(expr: str, start: int) -> bool:
    depth = 0
    for ch in expr[:start]:
        depth += {"(": 1, ")": -1}.get(ch, 0)
    return depth == 0


# Functions that keep every label of their argument (bar the metric name).
LABEL_KEEPING = {
    "rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear", "changes",
    "resets", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "last_over_time", "abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "time",
}  # fmt: skip
# Words that aggregate, or match on fewer labels than all, or take series from one side only.
NOT_ONE_TO_ONE = {"by", "without", "on", "ignoring", "group_left", "group_right", "or", "unless"}


def _repeated_one_to_one(expr: str, matcher: str) -> bool:
    """Whether dropping `matcher` from one selector is equivalent: the expression joins its
    selectors one-to-one on all their labels (no aggregation, no on/ignoring, no or/unless,
    only label-keeping functions) and another selector has the same matcher. A result series
    then needs its exact label set in every selector, so the other selector's copy of the
    matcher already leaves out whatever this one would have (rate(a{f}) / rate(b{f}))."""
    bare = STRING.sub('""', expr)
    words = set(re.findall(r"[a-zA-Z_]\w*", bare))
    calls = set(re.findall(r"([a-zA-Z_]\w*)\s*\(", bare))
    if words & NOT_ONE_TO_ONE or not calls <= LABEL_KEEPING:
        return False
    norm = re.sub(r"\s+", "", matcher)
    same = [re.sub(r"\s+", "", m.group(0).strip(", ")) == norm for m in MATCHER.finditer(expr)]
    return sum(same) > 1


def expr_mutations(expr: str) -> Iterator[tuple[str, str]]:
    """(description, mutated expression) for one PromQL expression."""
    for m in NUMBER.finditer(expr):
        if not _outside_strings(expr, m.start()):
            continue
        value = float(m.group(1))
        for scaled in [1.0] if value == 0 else [value * 0.75, value * 1.25]:
            yield (
                f"{m.group(1)} -> {_fmt(scaled)}",
                expr[: m.start()] + _fmt(scaled) + expr[m.end() :],
            )
    for m in WINDOW.finditer(expr):
        n, unit = int(m.group(1)), m.group(2)
        halves = [f"{n // 2}{unit}"] if n % 2 == 0 else []
        if not halves:
            seconds = n * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
            halves = [f"{seconds // 2}s"]
        for new in [*halves, f"{n * 2}{unit}"]:
            yield (f"[{n}{unit}] -> [{new}]", expr[: m.start(1)] + new + expr[m.end(2) :])
    for op, new in ((">=", ">"), ("<=", "<"), ("==", "!=")):
        for m in re.finditer(re.escape(op), expr):
            yield (f"{op} -> {new}", expr[: m.start()] + new + expr[m.end() :])
    for m in re.finditer(r">(?!=)(\s*)0(?![\w.])", expr):
        yield ("> 0 -> >= 0", expr[: m.start()] + ">=" + expr[m.start() + 1 :])
    for m in MATCHER.finditer(expr):
        if m.group(2) in {"le"} and m.group(3) == "=":
            continue  # the bucket of a histogram: dropping it is not a plausible edit
        if _repeated_one_to_one(expr, m.group(0).strip(", ")):
            continue
        cut = m.group(0)
        new = expr[: m.start()] + expr[m.end() :]
        if not m.group(1):  # the first matcher: drop the comma after it instead
            new = expr[: m.start()] + re.sub(r"^\s*,\s*", "", expr[m.end() :])
        yield (f"drop {cut.strip(', ')}", new)
    ops = [m for m in SET_OP.finditer(expr) if _depth_zero(expr, m.start())]
    if ops:
        bounds = [0, *[x for m in ops for x in (m.start(), m.end())], len(expr)]
        parts = [expr[bounds[i] : bounds[i + 1]] for i in range(0, len(bounds), 2)]
        for i in range(len(parts)):
            if len(parts) < 2:
                break
            kept_parts = parts[:i] + parts[i + 1 :]
            kept_ops = [m.group(0) for j, m in enumerate(ops) if j != (i - 1 if i else 0)]
            text = kept_parts[0]
            for op, part in zip(kept_ops, kept_parts[1:], strict=True):
                text += f"{op}{part}"
            yield (f"drop operand {i + 1} of {len(parts)} of and/or/unless", text)


def _duration(value: str) -> int:
    total = 0
    for n, unit in re.findall(r"(\d+)([smhdw])", value):
        total += int(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    return total


def rule_mutations(rule: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    # An alert that keeps itself firing (`or ALERTS{alertname=<itself>}`) reads its range windows
    # only when it starts, at most a lookback (5m) after the series it watches went: any window
    # longer than that starts it alike. Only a gap in rule evaluation (Prometheus down) shows the
    # window, and promtool evaluates from the first sample on: no test can tell, so no mutant.
    latched = f'alertname="{rule.get("alert")}"' in str(rule["expr"])
    for what, expr in expr_mutations(str(rule["expr"])):
        if latched and what.startswith("["):
            continue
        yield what, {**rule, "expr": expr}
    if "for" in rule:
        seconds = _duration(str(rule["for"]))
        yield f"for {rule['for']} -> {seconds // 2}s", {**rule, "for": f"{seconds // 2}s"}
        yield f"for {rule['for']} -> {seconds * 2}s", {**rule, "for": f"{seconds * 2}s"}
        yield f"for {rule['for']} removed", {k: v for k, v in rule.items() if k != "for"}
    severity = rule.get("labels", {}).get("severity")
    if severity in SEVERITY_SWAP:
        labels = {**rule["labels"], "severity": SEVERITY_SWAP[severity]}
        yield f"severity {severity} -> {labels['severity']}", {**rule, "labels": labels}


def mutants(path: Path) -> Iterator[Mutant]:
    doc = yaml.load(path.read_text(), Loader=LOADER)  # noqa: S506 (a safe loader)
    for g, group in enumerate(doc["groups"]):
        for r, rule in enumerate(group["rules"]):
            name = rule.get("alert") or rule.get("record")
            labels = rule.get("labels", {})
            if "record" in rule and labels:
                name += "{" + ",".join(f"{k}={v}" for k, v in labels.items()) + "}"
            for what, new in rule_mutations(rule):
                copy = {
                    **doc,
                    "groups": [{**gr, "rules": list(gr["rules"])} for gr in doc["groups"]],
                }
                copy["groups"][g]["rules"][r] = new
                yield Mutant(path.name, str(name), what, copy)


NAME = re.compile(r"[a-zA-Z_:][\w:]*")


def rule_names(files: list[Path]) -> dict[str, set[str]]:
    """Each rule's name and the rule names its expression reads (recording rules, ALERTS)."""
    reads: dict[str, set[str]] = {}
    for path in files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                reads.setdefault(name, set()).update(NAME.findall(str(rule["expr"])))
    return reads


def affected(name: str, reads: dict[str, set[str]]) -> set[str]:
    """The rule and every rule that reads it, directly or not (a test of either sees the edit)."""
    out, todo = {name}, [name]
    while todo:
        current = todo.pop()
        for other, names in reads.items():
            if current in names and other not in out:
                out.add(other)
                todo.append(other)
    return out


def needed(names: set[str], reads: dict[str, set[str]]) -> set[str]:
    """The rules these names read, directly or not: all a test asserting on them evaluates (all
    rules for one that reads ALERTS: any alert's state is in it)."""
    out, todo = set(names), list(names)
    while todo:
        current = reads.get(todo.pop(), set())
        for other in reads.keys() if "ALERTS" in current else current & reads.keys():
            if other not in out:
                out.add(other)
                todo.append(other)
    return out


def reduced(doc: dict[str, Any], keep: set[str]) -> str:
    """A rules file with only the rules named in `keep` (every group stays: group_eval_order)."""
    kept = [
        {**g, "rules": [r for r in g["rules"] if (r.get("alert") or r.get("record")) in keep]}
        for g in doc["groups"]
    ]
    return yaml.dump({**doc, "groups": kept}, Dumper=DUMPER, sort_keys=False)


def asserted(group: dict[str, Any]) -> set[str]:
    names = {c["alertname"] for c in group.get("alert_rule_test", [])}
    for case in group.get("promql_expr_test", []):
        names.update(NAME.findall(case["expr"]))
    return names


def load_tests() -> dict[str, dict[str, Any]]:
    return {
        t.name: yaml.load(t.read_text(), Loader=TestLoader)  # noqa: S506 (a safe loader)
        for t in sorted((PROM / "tests").glob("*.test.yml"))
    }


def cost(doc: dict[str, Any], group: dict[str, Any]) -> int:
    """Evaluations promtool runs for a test group: every step up to its last eval_time."""
    cases = group.get("alert_rule_test", []) + group.get("promql_expr_test", [])
    last = max((_duration(str(c.get("eval_time", "0s"))) for c in cases), default=0)
    return last // max(_duration(str(doc.get("evaluation_interval", "1m"))), 1)


def groups(tests: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every test group as a test file of its own (name -> document): <file>-<index>.test.yml,
    loading its rules files from ../rules/<its name>/ (reduced to the rules it evaluates)."""
    out = {}
    for name, doc in tests.items():
        for i, g in enumerate(doc["tests"]):
            split = f"{name.removesuffix('.test.yml')}-{i:02d}.test.yml"
            files = [f"../rules/{split}/{Path(f).name}" for f in doc.get("rule_files", [])]
            out[split] = {**doc, "rule_files": files, "tests": [g]}
    return out


def test_plan(mutant: Mutant, names: set[str], split: dict[str, dict[str, Any]]) -> list[str]:
    """The test groups (one file each) to run a mutant against, in order: of the files that load
    its rules file, first the groups that assert on the mutated rule itself, then those that
    assert on a rule reading it, the cheapest first in each. The first failing group ends the
    run: most mutants die at the first, and promtool evaluates a whole file before it answers."""
    own: list[tuple[int, str]] = []
    others: list[tuple[int, str]] = []
    for name, doc in split.items():
        if not any(Path(f).name == mutant.file for f in doc.get("rule_files", [])):
            continue
        seen = asserted(doc["tests"][0])
        if mutant.rule.split("{")[0] in seen:
            own.append((cost(doc, doc["tests"][0]), name))
        elif seen & names:
            others.append((cost(doc, doc["tests"][0]), name))
    return [name for _, name in sorted(own) + sorted(others)]


def run(image: str, jobs: int, only: list[str] | None) -> int:
    files = sorted((PROM / "rules").glob("*.yml"))
    if only:
        files = [f for f in files if f.name in only]
    all_mutants = [m for f in files for m in mutants(f)]
    every = sorted((PROM / "rules").glob("*.yml"))
    reads = rule_names(every)
    rules = {f.name: yaml.load(f.read_text(), Loader=LOADER) for f in every}  # noqa: S506
    work = Path(tempfile.mkdtemp(prefix="heroes-mutants-"))
    try:
        # groups/: every test group once, as a test file; m<i>: one mutant each, tests/ linking
        # the groups it runs, in order, and rules/<group>/<file> for each: its rules files with
        # only the rules that group evaluates (promtool evaluates every rule loaded at every
        # step: most groups need a few). m0: every group of the checked rules files on the
        # shipped rules, reduced alike (must pass).
        split = groups(load_tests())
        keep = {name: needed(asserted(doc["tests"][0]), reads) for name, doc in split.items()}
        plans = [test_plan(m, affected(m.rule.split("{")[0], reads), split) for m in all_mutants]
        (work / "groups").mkdir()
        for name, doc in split.items():
            text = yaml.dump(doc, Dumper=DUMPER, sort_keys=False)
            (work / "groups" / name).write_text(text)
        checked = {f.name for f in files}
        shipped = [
            name
            for name, doc in split.items()
            if {Path(f).name for f in doc["rule_files"]} & checked
        ]
        lines = []
        for i, (mutant, plan) in enumerate(
            [(None, shipped), *zip(all_mutants, plans, strict=True)]
        ):
            if not plan:
                continue
            (work / f"m{i}" / "tests").mkdir(parents=True)
            for name in plan:
                (work / f"m{i}" / "tests" / name).symlink_to(f"../../groups/{name}")
                (work / f"m{i}" / "rules" / name).mkdir(parents=True)
                for f in split[name]["rule_files"]:
                    file = Path(f).name
                    doc = mutant.doc if mutant and mutant.file == file else rules[file]
                    (work / f"m{i}" / "rules" / name / file).write_text(reduced(doc, keep[name]))
            lines.append(f"m{i} " + " ".join(f"tests/{name}" for name in plan))
        (work / "plan").write_text("\n".join(lines) + "\n")
        # One line of the plan per mutant: its directory and its test files (xargs: $0 and $@).
        # m0 runs every group; a mutant stops at its first failing group.
        script = (
            f'xargs -P {jobs} -L 1 sh -c \'cd "/m/$0" && for f in "$@"; do '
            'promtool test rules "$f" >/dev/null 2>&1 || { echo "$0 fail"; exit 0; }; done; '
            'echo "$0 pass"\' < /m/plan'
        )
        # The container runs as this user but reads through a bind mount: world-readable copies.
        for p in [work, *work.rglob("*")]:
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else 0o644)
        started = time.monotonic()
        name = f"heroes-mutants-{os.getpid()}"
        try:
            result = subprocess.run(
                ["docker", "run", "--rm", "--name", name, "--network", "none",
                 "--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{work}:/m:ro",
                 "--entrypoint", "sh", image, "-c", script],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
        finally:  # an interrupted client leaves its container running: stop it
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        elapsed = time.monotonic() - started
        outcome = dict(line.split() for line in result.stdout.splitlines() if line.strip())
        if outcome.get("m0") != "pass":
            print(f"rule-mutations: the shipped rules fail their tests\n{result.stderr}")
            return 1
        survivors = [
            m for i, (m, p) in enumerate(zip(all_mutants, plans, strict=True), start=1)
            if not p or outcome.get(f"m{i}") == "pass"
        ]  # fmt: skip
        missing = [i for i, p in enumerate(plans, start=1) if p and f"m{i}" not in outcome]
        for m in survivors:
            print(f"SURVIVED {m.file} {m.rule}: {m.what}")
        if missing:
            print(f"rule-mutations: {len(missing)} mutant(s) not run\n{result.stderr[-2000:]}")
            return 1
        print(
            f"rule-mutations: {len(all_mutants)} mutants of {len(files)} rules file(s), "
            f"{len(all_mutants) - len(survivors)} caught, {len(survivors)} missed ({elapsed:.0f} s)"
        )
        return 1 if survivors else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image", default=os.environ.get("PROMETHEUS_IMAGE", "prom/prometheus:v2.53.3")
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", action="append", help="a rules file (its name); repeatable")
    args = parser.parse_args()
    sys.exit(run(args.image, args.jobs, args.only))


if __name__ == "__main__":
    main()
