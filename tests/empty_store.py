"""An empty SQLite MLflow store as a test's set-up, in milliseconds instead of ~3 s.

MLflow makes a new SQLite store by creating its tables and running every migration (~3 s on 2 cores, each time).
A test whose subject is not the making of a store takes a copy of one that MLflow made once in this process
(:func:`empty_store`): the same file MLflow would have written, nothing logged in it. Tests of how vidgan treats
a missing, empty or foreign store make theirs themselves.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_template: Path | None = None


def _make_template() -> Path:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = Path(tempfile.mkdtemp(prefix="vidgan-empty-store-"))
    atexit.register(shutil.rmtree, folder, True)
    store = SqlAlchemyStore(f"sqlite:///{folder}/mlflow.db", str(folder / "artifacts"))
    store.engine.dispose()  # every write on disk, no connection left open
    return folder / "mlflow.db"


def empty_store(db: Path) -> str:
    """Write an empty MLflow SQLite store (its tables at MLflow's current schema, no experiment but MLflow's
    Default) at ``db``; return its URI."""
    global _template
    if _template is None:
        _template = _make_template()
    if db.exists():
        raise FileExistsError(f"{db} exists: a store is made only where there is none")
    shutil.copyfile(_template, db)
    return f"sqlite:///{db}"
