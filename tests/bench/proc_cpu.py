"""CPU time of running processes (and of the whole machine), for benchmarks.

A process's CPU is read from its POSIX CPU clock (``clock_gettime`` on the clock id
``clock_getcpuclockid(pid)`` would return, built here as Linux does): nanoseconds,
all its threads, including threads that have already ended (h2load's worker ends
right when its measured window does). /proc/<pid>/stat's utime + stime count the
same but in clock ticks (10 ms), which is coarse for a short phase; they serve only
for children a process has reaped (cutime + cstime), e.g. a supervisor's worker that
died. A tree (a ``--workers`` sidecar: supervisor and workers) is read whole: take
its pids with :func:`process_tree` once, before a phase, since walking /proc is too
slow to do at a phase's boundary.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")
_CPUCLOCK_SCHED = 2  # linux/posix-timers.h: the clock of all CPU time (user + system)


def process_clock_id(pid: int) -> int:
    """The clock id of ``pid``'s CPU clock (Linux's MAKE_PROCESS_CPUCLOCK)."""
    return ((~pid) << 3) | _CPUCLOCK_SCHED


@dataclass(frozen=True)
class CpuReading:
    seconds: float  # CPU clocks of the live processes + reaped children's ticks
    missing: frozenset[int]  # processes that had ended when read


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    return raw[raw.rindex(")") + 2:].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))  # ppid
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def read_cpu(pids: list[int]) -> CpuReading:
    """CPU seconds so far of these processes (and of the children they reaped)."""
    total = 0.0
    missing = set()
    for pid in pids:
        try:
            total += time.clock_gettime(process_clock_id(pid))
        except OSError:
            missing.add(pid)
            continue
        fields = _stat_fields(pid)
        if fields is not None:
            total += (int(fields[13]) + int(fields[14])) / CLK_TCK  # cutime, cstime
    return CpuReading(total, frozenset(missing))


def cpu_delta(before: CpuReading, after: CpuReading) -> float | None:
    """CPU seconds between two readings of the same processes; None when one of them
    ended in between (its time went with it)."""
    if after.missing - before.missing:
        return None
    return max(after.seconds - before.seconds, 0.0)


def machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, all CPUs (/proc/stat)."""
    first = (_PROC / "stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in first[:8])
    busy = user + nice + system + irq + softirq  # steal: the hypervisor's, not this VM's
    return busy / CLK_TCK, (busy + idle + iowait + steal) / CLK_TCK
