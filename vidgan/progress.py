"""Progress bars (tqdm) for the long passes: ingest, real I3D statistics, FVD of fake clips.

Bars go to stderr and show on a terminal only; ``VIDGAN_PROGRESS=1`` forces them on (e.g. in a log
file), ``VIDGAN_PROGRESS=0`` turns them off.

Inside a Ray task a bar would print to the worker's log, so a task reports counts instead and the
driver draws the bar: :func:`run_reporting` turns a function that calls ``report(n)`` as it goes into a
generator of those counts followed by its result, which a ``num_returns="streaming"`` task yields.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

PROGRESS_ENV = "VIDGAN_PROGRESS"


def enabled() -> bool | None:
    """True / False when ``$VIDGAN_PROGRESS`` says so, else None (tqdm decides: a terminal or not)."""
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def progress(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm bar (``total``, ``desc``, ``unit``, ...), shown on a terminal or when forced on."""
    from tqdm.auto import tqdm

    on = enabled()
    kwargs.setdefault("disable", None if on is None else not on)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.5)
    return tqdm(iterable, **kwargs)


_DONE = object()


def run_reporting(fn: Callable[[Callable[[int], None]], T]) -> Iterator[int | T]:
    """Run ``fn(report)`` in a thread; yield each ``n`` it reports, then its return value (or raise its error)."""
    counts: queue.Queue[Any] = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = fn(counts.put)
        except BaseException as exc:  # re-raised in the caller's thread below
            outcome["error"] = exc
        finally:
            counts.put(_DONE)

    thread = threading.Thread(target=work, name="vidgan-report", daemon=True)
    thread.start()
    while (item := counts.get()) is not _DONE:
        yield int(item)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    yield outcome["value"]
