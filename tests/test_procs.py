"""cluster/procs.py, what the rehearsals' teardowns and the node/trial-killing tests find processes with."""

from __future__ import annotations

import os
import subprocess

from cluster import procs


def test_descendants_reach_grandchildren_and_leave_out_the_roots_and_the_ended() -> None:
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    grandchild = None
    try:
        grandchild = int(shell.stdout.readline())
        assert procs.descendants({os.getpid()}) >= {shell.pid, grandchild}
        assert procs.descendants({shell.pid}) == {grandchild}
        assert procs.descendants({shell.pid, grandchild}) == set()  # roots are not their own descendants
        assert procs.stat(grandchild).ppid == shell.pid
        assert procs.cmdline_starts(grandchild, b"sleep") and not procs.cmdline_starts(grandchild, b"sh")
        started = procs.stat(shell.pid).started
        assert started == procs.stat(shell.pid).started > 0  # with the pid, names this one process
    finally:
        shell.kill()
        shell.wait()
        if grandchild is not None:
            os.kill(grandchild, 9)
    assert procs.stat(shell.pid) is None  # waited for: gone
    assert shell.pid not in procs.running()
