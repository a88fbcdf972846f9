"""The monitoring profile's files (run by deploy/scripts/prometheus-check.sh, beside promtool):
every alert has a runbook line that exists, a unit test that fires it and one that keeps it
silent; every service of the profile is hardened like the rest of the stack and loopback-only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# heroes.yml, and backups.yml (the backup alerts, runbooks in docs/backups.md).
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.test.yml"))
DOCS = ("observability.md", "backups.md")
COMPOSE = ROOT / "docker-compose.yml"
PROFILE = ("prometheus", "alertmanager", "alert-log", "postgres-exporter")


def alerts() -> list[dict[str, Any]]:
    groups = [g for f in RULES for g in yaml.safe_load(f.read_text())["groups"]]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def cases(name: str) -> list[dict[str, Any]]:
    tests = [t for f in TESTS for t in yaml.safe_load(f.read_text())["tests"]]
    return [c for t in tests for c in t.get("alert_rule_test", []) if c["alertname"] == name]


ALERTS = [rule["alert"] for rule in alerts()]


def test_there_are_the_alerts_the_issue_asks_for() -> None:
    for name in (
        "HeroesErrorBudgetFastBurn", "HeroesErrorBudgetSlowBurn", "HeroesLatencyP99High",
        "HeroesReplicaDown", "HeroesNoReadyReplica", "HeroesDatabaseUnavailable",
        "HeroesDatabasePoolSaturated", "HeroesBackupStale", "HeroesWalArchiveStale",
        "HeroesScrapeTargetMissing",
    ):  # fmt: skip
        assert name in ALERTS


@pytest.mark.parametrize("name", ALERTS)
def test_every_alert_fires_in_a_unit_test_and_stays_silent_in_another(name: str) -> None:
    found = cases(name)
    assert any(c.get("exp_alerts") for c in found), f"{name}: no case where it fires"
    assert any(not c.get("exp_alerts") for c in found), f"{name}: no case where it stays silent"


@pytest.mark.parametrize("rule", alerts(), ids=ALERTS)
def test_every_alert_has_a_severity_and_a_runbook_line(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"page", "warning"}
    runbook = rule["annotations"]["runbook"]
    doc, _, anchor = runbook.partition("#")
    assert doc in {f"docs/{d}" for d in DOCS}, runbook
    assert anchor == rule["alert"].lower(), runbook
    heading = rf"^### {rule['alert']}\n\S"
    assert re.search(heading, (ROOT / doc).read_text(), re.MULTILINE), runbook


@pytest.mark.parametrize("name", PROFILE)
def test_the_profile_is_hardened_and_loopback_only(name: str) -> None:
    service = yaml.safe_load(COMPOSE.read_text())["services"][name]
    assert service["profiles"] == ["monitoring"]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["healthcheck"]["test"]
    assert set(service["deploy"]["resources"]["limits"]) == {"cpus", "memory", "pids"}
    assert service.get("user") != "root"
    for port in service.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), port
