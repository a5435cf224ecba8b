"""Processes on this machine as Linux's /proc shows them: a process's parent and start time, and everything that
descends from some processes. For the rehearsals that stop exactly what they started (never ``ray stop``, which
would stop every Ray cluster on the machine) and the tests that kill a trial or a node."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple


class ProcStat(NamedTuple):
    ppid: int
    started: int  # clock ticks after boot: with the pid, names one process (a pid is reused, this pair is not)
    state: str  # "Z": a zombie, ended and not yet waited for


def stat(pid: int) -> ProcStat | None:
    """A process's parent, start time and state; None when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # comm may hold spaces and ")"
    except (OSError, IndexError):
        return None
    return ProcStat(int(fields[1]), int(fields[19]), fields[0])


def running() -> dict[int, ProcStat]:
    """Every process that has not ended (zombies left out), pid -> its stat."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            s = stat(int(entry.name))
            if s is not None and s.state != "Z":
                found[int(entry.name)] = s
    return found


def descendants(roots: Iterable[int]) -> set[int]:
    """The running processes below ``roots`` (children, their children, ...), ``roots`` themselves left out."""
    table, roots = running(), set(roots)
    below: set[int] = set()
    frontier = roots
    while frontier:
        frontier = {pid for pid, s in table.items() if s.ppid in frontier and pid not in below and pid not in roots}
        below |= frontier
    return below


def cmdline_starts(pid: int, prefix: bytes) -> bool:
    """Whether a process's command line starts with ``prefix`` (Ray names a trial's worker ``ray::ImplicitFunc``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(prefix)
    except OSError:
        return False
