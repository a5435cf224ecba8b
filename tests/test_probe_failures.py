"""The hostile probe of cb3a639 (#30), items 5, 6, 7, 9, 10 and 11: an alias bomb in an override, the FVD
evaluation's memory, broken plug-ins, an unusable ``$VIDGAN_CACHE``, odd values in a report's store, and full disks.

Every expected failure is one line naming what was wrong; CLIs run as subprocesses (``python -m tune_jobs.main``)
where a traceback or a hang is what the probe saw.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: a deadline only a hang reaches (the refusals below answer in about a second, imports included)
HANG_S = 120


def vidgan(*argv: object, env: dict[str, str] | None = None, cwd: Path | None = None,
           timeout: float = HANG_S) -> subprocess.CompletedProcess:
    """``vidgan ARGV`` in a fresh process (``python -m tune_jobs.main``), with ``env`` added to the environment."""
    path = os.pathsep.join(p for p in (str(ROOT), (env or {}).get("PYTHONPATH", "")) if p)
    full = {**os.environ, **(env or {}), "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "tune_jobs.main", *map(str, argv)], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=timeout)


def one_line(r: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, no traceback, exactly one line on stderr, naming each of ``words``; the line."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.args, r.returncode, r.stderr)
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# ------------------------------------------------------------------------- 5: a YAML alias bomb in an override


def alias_bomb(levels: int = 8, width: int = 9) -> str:
    """``[&a [1,...], &b [*a,...], ...]``: ``width ** levels`` items from a few hundred bytes."""
    names = "abcdefghijklmnop"
    parts = [f"&a [{','.join(['1'] * width)}]"]
    parts += [f"&{names[i]} [{','.join([f'*{names[i - 1]}'] * width)}]" for i in range(1, levels)]
    return f"[{', '.join(parts)}]"


def test_an_alias_bomb_in_an_override_is_refused_in_one_line() -> None:
    """#30 item 5: 'seeds=<bomb>' (255 bytes, 9**8 items once expanded) hung `sweep --check` (no output at
    240 s, memory growing); it is refused before anything expands it."""
    item = f"seeds={alias_bomb()}"
    assert len(item) < 300
    r = vidgan("sweep", ROOT / "tune_jobs" / "demo.yaml", item, "--check")
    one_line(r, "seeds=", "YAML aliases (*a) are not allowed in an override")


def test_an_override_without_aliases_still_reads_as_yaml() -> None:
    from tune_jobs.overrides import apply

    raw = {"seeds": [0], "train": {"lr": 1e-4}}
    assert apply(raw, ["seeds=[1, 2]", "train.lr=2e-4"]) == {"seeds": [1, 2], "train": {"lr": 2e-4}}
    assert apply(raw, ["seeds='*a'"])["seeds"] == "*a"  # quoted: text, not an alias (the schema judges it later)
