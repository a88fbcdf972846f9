"""Drill 41: a damaged backup file in the off-host repository (pgbackrest verify and the restore
test; deploy/postgres/restore-test.sh, docs/backups.md).

A stack with the S3 stand-in's settings takes its full backups to both repositories and passes
its first restore test. Then one object of repo2's newest backup is altered in the store (bytes in
its middle flipped: bit rot, or a bad write). Pass: the next restore test reports repo2's verify
and restore as failed (heroes_backup_verify_success and heroes_backup_restore_test_success 0 for
repo 2, still 1 for repo 1, in the restore test's metrics.prom); ``restore.sh --force
--latest`` still succeeds, from repo1, with every row back.
"""

from __future__ import annotations

import time

import pytest

from drills.common import Context, DrillResult, wait_for
from drills.offsite import standin_stack
from drills.pitr import restore
from drills.stack import DrillError, Stack, log

TITLE = "A damaged file in the off-host repository: verify and restore test say so, restore works"
#: Flips bytes in the middle of the largest object of repo2's newest backup (in the stand-in).
DAMAGE = """
import boto3
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:9000", region_name="us-east-1",
                  aws_access_key_id="x", aws_secret_access_key="x")
objs = s3.list_objects_v2(Bucket="heroes-backups", Prefix="heroes/backup/heroes/")["Contents"]
labels = sorted({o["Key"].split("/")[3] for o in objs if o["Key"].split("/")[3][:2] == "20"})
mine = [o for o in objs
        if o["Key"].split("/")[3] == labels[-1] and "backup.manifest" not in o["Key"]]
victim = max(mine, key=lambda o: o["Size"])["Key"]
body = bytearray(s3.get_object(Bucket="heroes-backups", Key=victim)["Body"].read())
middle = len(body) // 2
body[middle:middle + 64] = bytes(b ^ 0xFF for b in body[middle:middle + 64])
s3.put_object(Bucket="heroes-backups", Key=victim, Body=bytes(body))
print(victim, len(body))
"""


def restore_gauges(stack: Stack) -> dict[str, float]:
    """The restore test's gauges, labelled by repository, from the file node-exporter's
    textfile collector serves (the drills run without the monitoring profile)."""
    text = stack.compose(
        "exec",
        "-T",
        "restore-test",
        "cat",
        "/var/lib/heroes-restore-test/metrics.prom",
        check=False,
    ).stdout
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name.startswith(("heroes_backup_verify_success", "heroes_backup_restore_test_success"))
    }


@pytest.mark.drill(41, TITLE, stage="own-stack", services=("pgbackrest", "restore-test"))
def test_corrupt_offsite(drill_context: Context, result: DrillResult) -> None:
    with standin_stack(drill_context, "corrupt") as stack:
        _drill(result, drill_context, stack)


def _drill(result: DrillResult, ctx: Context, stack: Stack) -> None:
    stack.psql(
        "INSERT INTO hero (name, secret_name)"
        " SELECT 'd41-' || i, 's' FROM generate_series(1, 500) i"
    )
    ok = 'heroes_backup_restore_test_success{repo="2"}'
    first = wait_for(lambda: restore_gauges(stack).get(ok) == 1, timeout=300, interval=5)
    result.expect(first is not None, "the first restore test did not pass within 300 s")
    before = restore_gauges(stack)
    s3 = f"{ctx.stack.project}-s3"
    proc = stack.docker("exec", f"{s3}-s3-1", "python", "-c", DAMAGE, check=False)
    if proc.returncode != 0:
        raise DrillError(f"could not damage the object: {proc.stderr[-800:]}")
    victim = proc.stdout.strip()
    log(f"drill 41: damaged {victim}; the restore test again")
    t0 = time.monotonic()
    stack.compose("exec", "-T", "restore-test", "heroes-pgbackrest-env", "heroes-restore-test",
                  "once", check=False, timeout=900)  # fmt: skip
    test_s = time.monotonic() - t0
    after = restore_gauges(stack)
    rows_before = int(stack.psql("SELECT count(*) FROM hero")[0])
    restore_s, done = restore(stack, "--force", "--latest")
    rows_after = int(stack.psql("SELECT count(*) FROM hero")[0])
    verify2 = after.get('heroes_backup_verify_success{repo="2"}')
    restore2 = after.get(ok)
    result.expect(verify2 == 0, f"verify of repo2 did not report the damage ({verify2})")
    result.expect(restore2 == 0, f"the restore test of repo2 did not fail ({restore2})")
    result.expect(
        after.get('heroes_backup_restore_test_success{repo="1"}') == 1
        and after.get('heroes_backup_verify_success{repo="1"}') == 1,
        f"repo1 reported bad: {after}",
    )
    result.expect(rows_after == rows_before, f"{rows_before} rows before, {rows_after} after")
    result.figures.update(
        damaged=victim, before=before, after=after, restore_test_s=round(test_s, 1),
        restore_s=round(restore_s, 1), rows=rows_after, restore_line=done,
    )  # fmt: skip
    result.summary = (
        f"one object of repo2's newest backup damaged ({victim}): verify repo2 {verify2:.0f}, "
        f"restore test repo2 {restore2:.0f}, repo1 both 1 (test {test_s:.0f}s); restore.sh "
        f"--force --latest {restore_s:.0f}s from repo1, {rows_after}/{rows_before} rows back"
    )
