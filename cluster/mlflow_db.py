"""Keep the head's databases (MLflow's runs and basic-auth users, Optuna's studies) on S3 as well as on its disk.

The tracking server keeps runs, params and metrics in SQLite on the head's root disk, which
`ray down` deletes; search sweeps keep their Optuna study beside it (``optuna.db``, so a resumed or
repeated search warm-starts from it). cluster.yaml runs, on the head:

    python ~/vidgan/cluster/mlflow_db.py restore      # at head start, before `mlflow server`
    python ~/vidgan/cluster/mlflow_db.py loop         # in the background: a backup every 15 min

and `cluster/down.sh` runs ``backup`` once more before `ray down`. The destination is
``--uri`` or ``$VIDGAN_MLFLOW_BACKUP`` (set by cluster.yaml: ``s3://<bucket>/vidgan/mlflow-db``);
a local folder works too (tests). Each database is copied with SQLite's online backup API, so the
copy is consistent while the server writes.

``restore`` only fills in databases that are missing on the head (a new head: the copy on S3 is
then the newest); it never overwrites a database the head already has. It exits non-zero when the
destination cannot be read, so a head never starts with an empty database that the next backup
would write over the good copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

DATABASES = ("mlflow.db", "basic_auth.db", "optuna.db")
DEFAULT_DIR = Path("~/mlflow").expanduser()
ENV_URI = "VIDGAN_MLFLOW_BACKUP"


def log(msg: str) -> None:
    print(f"[mlflow_db {time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True)


def _s3(uri: str) -> tuple[object, str, str]:
    import boto3  # installed on the head by cluster.yaml; not needed for local folders

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return boto3.client("s3"), bucket, prefix.rstrip("/")


def put(src: Path, uri: str, name: str) -> None:
    """Copy a local file to <uri>/<name>."""
    if uri.startswith("s3://"):
        client, bucket, prefix = _s3(uri)
        client.upload_file(str(src), bucket, f"{prefix}/{name}" if prefix else name)
    else:
        Path(uri).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, Path(uri) / name)


def get(uri: str, name: str, dest: Path) -> bool:
    """Copy <uri>/<name> to a local file; False when there is no such object (any other error raises)."""
    if uri.startswith("s3://"):
        from botocore.exceptions import ClientError

        client, bucket, prefix = _s3(uri)
        try:
            client.download_file(bucket, f"{prefix}/{name}" if prefix else name, str(dest))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey"}:
                return False
            raise
        return True
    src = Path(uri) / name
    if not src.exists():
        return False
    shutil.copyfile(src, dest)
    return True


def snapshot(db: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API, not a file copy)."""
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()


def backup(folder: Path, uri: str) -> int:
    """Upload a snapshot of each database present in `folder`; returns how many were copied."""
    copied = 0
    with tempfile.TemporaryDirectory(prefix="mlflow-db-") as tmp:
        for name in DATABASES:
            db = folder / name
            if not db.exists():
                continue
            snap = Path(tmp) / name
            snapshot(db, snap)
            put(snap, uri, name)
            copied += 1
            log(f"backed up {db} -> {uri.rstrip('/')}/{name}")
    if not copied:
        log(f"nothing to back up in {folder}")
    return copied


def restore(folder: Path, uri: str) -> int:
    """Download each database missing from `folder` that the backup has; returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    restored = 0
    for name in DATABASES:
        db = folder / name
        if db.exists():
            log(f"{db} exists on this head: kept (not restored)")
            continue
        partial = folder / f".{name}.restoring"
        if get(uri, name, partial):
            partial.replace(db)
            restored += 1
            log(f"restored {db} from {uri.rstrip('/')}/{name}")
        else:
            log(f"no backup of {name} at {uri}: MLflow starts with a new database")
    return restored


def loop(folder: Path, uri: str, every_s: float) -> None:
    """Back up every `every_s` seconds until killed; a failed backup is logged and retried."""
    while True:
        time.sleep(every_s)
        try:
            backup(folder, uri)
        except Exception as exc:  # keep the loop alive: S3 hiccups must not end the backups
            log(f"backup failed (retrying in {every_s:.0f} s): {exc!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["backup", "restore", "loop"])
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="folder of the databases (default ~/mlflow)")
    p.add_argument("--uri", default=os.environ.get(ENV_URI), help=f"s3://bucket/prefix or a folder (${ENV_URI})")
    p.add_argument("--every", type=float, default=900, help="loop: seconds between backups")
    args = p.parse_args(argv)
    if not args.uri or "CHANGE-ME" in args.uri:
        p.error(f"set the backup destination: --uri or ${ENV_URI} (cluster.yaml: replace CHANGE-ME-bucket)")
    if args.action == "backup":
        backup(args.dir, args.uri)
    elif args.action == "restore":
        restore(args.dir, args.uri)
    else:
        loop(args.dir, args.uri, args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
