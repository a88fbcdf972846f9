"""Policy for .github/: the GitHub workflow and .ci/run run the same repo scripts.

The workflow only decides where each check runs; what runs lives in deploy/scripts/. These tests
keep it that way: `run:` steps call repo scripts (plus a tiny whitelist of glue), every `uses:` is
pinned to a full commit SHA with its version in a comment, every job declares `permissions`,
publishing waits for every other job and only happens on main and v* tags, and the set of
deploy/scripts/*.sh called by the workflow is exactly the set called by .ci/run.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github"
WORKFLOW_FILES = sorted([*GITHUB.glob("workflows/*.yml"), *GITHUB.glob("workflows/*.yaml")])
ACTION_FILES = sorted(GITHUB.glob("actions/*/action.yml"))
CI_RUN = ROOT / ".ci" / "run"

# The one script the contract says every check is made of (deploy/scripts/<name>.sh).
CONTRACT_SCRIPTS = {
    "bootstrap.sh",
    "lint.sh",
    "test.sh",
    "migrations-check.sh",
    "hadolint.sh",
    "actionlint.sh",
    "k8s-validate.sh",
    "compose-smoke.sh",
    "bench-proxy.sh",
    "drills.sh",
    "bench.sh",
    "browser-test.sh",
    "docs-check.sh",
    "prometheus-check.sh",
}
# Commands a `run:` step may use besides repo scripts: moving the scanned image between jobs.
GLUE = {("docker", "save"), ("docker", "load")}

REPO_SCRIPT = re.compile(r"^(?:\./)?(deploy/scripts/[\w.-]+\.sh|\.ci/[\w.-]+)$")
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?:\s+#\s*(?P<comment>.*))?$")
VERSION_COMMENT = re.compile(r"^v?\d+\.\d+\.\d+\b")
SEPARATORS = re.compile(r"&&|\|\||[;|]")


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    assert isinstance(on, dict), "`on:` must be a mapping"
    return on


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def steps() -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, step) for every step of every workflow job and local composite action."""
    for path in WORKFLOW_FILES:
        for job_id, job in load(path)["jobs"].items():
            for index, step in enumerate(job.get("steps", [])):
                yield f"{rel(path)}:{job_id}[{index}]", step
    for path in ACTION_FILES:
        for index, step in enumerate(load(path)["runs"].get("steps", [])):
            yield f"{rel(path)}[{index}]", step


def commands(script: str) -> Iterator[str]:
    """Simple commands of a `run:` block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", script)
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for part in SEPARATORS.split(line):
            if part.strip():
                yield part.strip()


def scripts_called(script: str) -> set[str]:
    names = set()
    for command in commands(script):
        match = REPO_SCRIPT.match(shlex.split(command)[0])
        if match and match.group(1).startswith("deploy/scripts/"):
            names.add(Path(match.group(1)).name)
    return names


def workflow_scripts() -> set[str]:
    names: set[str] = set()
    for _, step in steps():
        if "run" in step:
            names |= scripts_called(step["run"])
    return names


def ci_jobs() -> dict[str, dict[str, Any]]:
    jobs = load(GITHUB / "workflows" / "ci.yml")["jobs"]
    assert isinstance(jobs, dict)
    return jobs


def test_there_is_a_workflow_and_the_local_actions_it_uses() -> None:
    assert GITHUB / "workflows" / "ci.yml" in WORKFLOW_FILES
    for where, step in steps():
        uses = step.get("uses", "")
        if uses.startswith("./"):
            assert (ROOT / uses / "action.yml").is_file(), f"{where}: no {uses}/action.yml"


def test_run_steps_only_call_repo_scripts_or_glue() -> None:
    offenders = []
    for where, step in steps():
        for command in commands(step.get("run", "")):
            words = shlex.split(command)
            if REPO_SCRIPT.match(words[0]) or tuple(words[:2]) in GLUE:
                continue
            offenders.append(f"{where}: {command}")
    assert not offenders, "run: steps must call deploy/scripts/* or .ci/*:\n" + "\n".join(offenders)


def test_every_script_the_workflow_calls_exists_and_is_executable() -> None:
    for name in sorted(workflow_scripts()):
        path = ROOT / "deploy" / "scripts" / name
        assert path.is_file(), f"the workflow calls deploy/scripts/{name}, which does not exist"
        assert path.stat().st_mode & 0o111, f"deploy/scripts/{name} is not executable"


def test_the_workflow_runs_every_contract_script() -> None:
    assert workflow_scripts() == CONTRACT_SCRIPTS


def test_ci_run_and_the_workflow_call_the_same_scripts() -> None:
    assert CI_RUN.is_file(), ".ci/run is missing"
    # Any literal deploy/scripts/<name>.sh on a non-comment line of .ci/run counts as a call, so
    # wrappers such as `step lint deploy/scripts/lint.sh` are fine.
    lines = CI_RUN.read_text(encoding="utf-8").splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    called_here = set(re.findall(r"deploy/scripts/([\w.-]+\.sh)", code))
    assert called_here == workflow_scripts()


def test_every_uses_is_pinned_to_a_full_sha_with_its_version() -> None:
    seen = 0
    for path in [*WORKFLOW_FILES, *ACTION_FILES]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = USES_LINE.match(line)
            if not match:
                continue
            seen += 1
            ref, comment = match["ref"], match["comment"] or ""
            where = f"{rel(path)}:{number}: {ref}"
            if ref.startswith("./"):
                continue
            assert not ref.startswith("docker://"), f"{where}: use an action, not a docker:// step"
            assert SHA_PIN.match(ref), f"{where}: pin to a full 40-hex commit SHA"
            assert VERSION_COMMENT.match(comment), f"{where}: add the version, e.g. `# v1.2.3`"
    assert seen, "no uses: lines found"


def test_workflows_default_to_no_permissions_and_every_job_declares_its_own() -> None:
    for path in WORKFLOW_FILES:
        workflow = load(path)
        assert workflow.get("permissions") == {}, f"{rel(path)}: set top-level `permissions: {{}}`"
        for job_id, job in workflow["jobs"].items():
            assert "permissions" in job, f"{rel(path)}: job {job_id} has no `permissions`"


def test_only_the_publish_job_may_write_and_only_packages() -> None:
    for job_id, job in ci_jobs().items():
        writes = {scope for scope, level in (job["permissions"] or {}).items() if level == "write"}
        assert writes == ({"packages"} if job_id == "publish" else set()), job_id


def test_triggers_and_concurrency() -> None:
    workflow = load(GITHUB / "workflows" / "ci.yml")
    on = triggers(workflow)
    assert "pull_request" in on
    assert on["push"]["branches"] == ["main"]
    assert on["push"]["tags"] == ["v*"]
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in workflow["concurrency"]["group"]


def test_publish_needs_every_other_job_and_runs_only_on_main_and_tags() -> None:
    jobs = ci_jobs()
    publish = jobs["publish"]
    assert set(publish["needs"]) == set(jobs) - {"publish"}
    condition = " ".join(publish["if"].split())
    assert "github.event_name == 'push'" in condition
    assert "github.ref == 'refs/heads/main'" in condition
    assert "startsWith(github.ref, 'refs/tags/v')" in condition
    uses = [step.get("uses", "") for step in publish["steps"]]
    assert any(u.startswith("docker/login-action@") for u in uses)
    for job_id, job in jobs.items():
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("docker/build-push-action@"):
                pushes = step["with"].get("push") is True
                assert pushes == (job_id == "publish"), f"{job_id}: only publish pushes images"


def test_tests_cover_sqlite_and_postgres_17() -> None:
    test = ci_jobs()["test"]
    assert test["strategy"]["matrix"]["backend"] == ["sqlite", "postgres"]
    assert test["services"]["postgres"]["image"] == "postgres:17"
    assert "TEST_DATABASE_URL" in test["env"]


def test_image_job_scans_with_a_severity_gate_and_keeps_an_sbom() -> None:
    image_steps = ci_jobs()["image"]["steps"]
    by_action = {s["uses"].split("@")[0]: s.get("with", {}) for s in image_steps if "uses" in s}
    trivy = by_action["aquasecurity/trivy-action"]
    assert str(trivy["exit-code"]) == "1"
    assert set(trivy["severity"].split(",")) == {"CRITICAL", "HIGH"}
    assert "anchore/sbom-action" in by_action
    assert "type=gha" in by_action["docker/build-push-action"]["cache-from"]


def test_publish_pushes_the_semver_and_sha_tags_computed_by_the_image_job() -> None:
    jobs = ci_jobs()
    meta = next(
        s for s in jobs["image"]["steps"] if s.get("uses", "").startswith("docker/metadata-action@")
    )
    tags = meta["with"]["tags"]
    assert "type=semver,pattern={{version}}" in tags
    assert "type=sha" in tags
    assert meta["with"]["images"] == "ghcr.io/${{ github.repository }}"
    build = next(
        s
        for s in jobs["publish"]["steps"]
        if s.get("uses", "").startswith("docker/build-push-action@")
    )
    assert build["with"]["tags"] == "${{ needs.image.outputs.tags }}"


@pytest.mark.parametrize("ecosystem", ["uv", "docker", "github-actions"])
def test_dependabot_watches(ecosystem: str) -> None:
    config = load(GITHUB / "dependabot.yml")
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert ecosystem in updates
    entry = updates[ecosystem]
    assert "/" in entry.get("directories", [entry.get("directory")])
