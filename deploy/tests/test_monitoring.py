"""The monitoring profile's files (run by deploy/scripts/prometheus-check.sh, beside promtool):
every alert has a runbook section that exists, its current value in its description, a unit test
that fires it and one that keeps it silent; recording rules are named level:metric:operations;
every service of the profile is hardened like the rest of the stack and loopback-only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.test.yml"))
# Runbooks: docs/observability.md; the backup alerts (rules/backups.yml) in docs/backups.md.
DOCS = ("docs/observability.md", "docs/backups.md")
COMPOSE = ROOT / "docker-compose.yml"
PROFILE = (
    "prometheus", "alertmanager", "alert-log", "postgres-exporter", "postgres-exporter-role",
    "blackbox-exporter", "node-exporter",
)  # fmt: skip
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def rules() -> list[dict[str, Any]]:
    groups = [g for path in RULES for g in yaml.safe_load(path.read_text())["groups"]]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def cases(name: str) -> list[dict[str, Any]]:
    tests = [t for path in TESTS for t in yaml.load(path.read_text(), Loader=LOADER)["tests"]]  # noqa: S506
    return [c for t in tests for c in t.get("alert_rule_test", []) if c["alertname"] == name]


ALERTS = [rule["alert"] for rule in alerts()]
#: Always firing by design: no silent case can exist.
ALWAYS = {"HeroesWatchdog"}


def test_there_are_the_alerts_the_issue_asks_for() -> None:
    for name in (
        "HeroesErrorBudgetFastBurn", "HeroesErrorBudgetSlowBurn", "HeroesErrorBudgetBurnDay",
        "HeroesErrorBudgetBurnThreeDays", "HeroesSLOMetricAbsent", "HeroesServiceUnreachable",
        "HeroesCertificateExpiresSoon", "HeroesWatchdog", "HeroesPrometheusRuleFailures",
        "HeroesNotificationsFailing", "HeroesPrometheusConfigReloadFailed",
        "HeroesAlertmanagerConfigReloadFailed", "HeroesScrapeJobVanished", "HeroesScrapeJobAbsent",
        "HeroesReplicaDown", "HeroesReplicaGone", "HeroesNoReadyReplica",
        "HeroesDatabaseUnavailable", "HeroesDatabasePoolSaturated", "HeroesPostgresConnectionsHigh",
        "HeroesPostgresDeadlocks", "HeroesPostgresLongTransaction",
        "HeroesPostgresIdleInTransaction", "HeroesVolumeFillingUp", "HeroesOOMKill",
        "HeroesProxyQueueSlow", "HeroesScrapeTargetMissing",
    ):  # fmt: skip
        assert name in ALERTS


@pytest.mark.parametrize("name", ALERTS)
def test_every_alert_fires_in_a_unit_test_and_stays_silent_in_another(name: str) -> None:
    found = cases(name)
    assert any(c.get("exp_alerts") for c in found), f"{name}: no case where it fires"
    if name not in ALWAYS:
        assert any(not c.get("exp_alerts") for c in found), f"{name}: no case where it is silent"


@pytest.mark.parametrize("rule", alerts(), ids=ALERTS)
def test_every_alert_has_a_severity_a_value_and_a_runbook_section(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"page", "ticket", "warning", "none"}
    assert rule["labels"]["component"]
    assert "$value" in rule["annotations"]["description"]
    runbook = rule["annotations"]["runbook_url"]
    doc, _, anchor = runbook.partition("#")
    assert doc in DOCS, runbook
    assert anchor == rule["alert"].lower(), runbook
    assert re.search(rf"^### {rule['alert']}\n\S", (ROOT / doc).read_text(), re.MULTILINE), runbook


@pytest.mark.parametrize("rule", [r for r in rules() if "record" in r], ids=lambda r: r["record"])
def test_recording_rules_are_named_level_metric_operations(rule: dict[str, Any]) -> None:
    parts = rule["record"].split(":")
    assert len(parts) == 3, rule["record"]
    assert all(parts), rule["record"]


@pytest.mark.parametrize("name", PROFILE)
def test_the_profile_is_hardened_and_loopback_only(name: str) -> None:
    service = yaml.safe_load(COMPOSE.read_text())["services"][name]
    assert service["profiles"] == ["monitoring"]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    if service.get("restart") != "no":  # a one-shot (postgres-exporter-role) has no health
        assert service["healthcheck"]["test"]
    assert set(service["deploy"]["resources"]["limits"]) == {"cpus", "memory", "pids"}
    assert service.get("user") != "root"
    for port in service.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), port
