"""/proc readings of the processes under test (pid files, ports and children: harness.procs)."""

from __future__ import annotations

import os
from pathlib import Path

from harness.procs import children

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident set size of one process (VmRSS), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU time of one process (its threads included), 0 if it is gone.

    With ``reaped_children``, also the CPU time of its children that have exited and been
    waited for (cutime + cstime), so short-lived children are not lost."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may contain spaces; the fields after it start at "state" (field 3).
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its children, living or exited (one level deep: enough for
    the postmaster, whose backends are its direct children)."""
    return cpu_seconds(pid, reaped_children=True) + sum(cpu_seconds(c) for c in children(pid))
