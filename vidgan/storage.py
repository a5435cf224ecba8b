"""Where vidgan reads and writes: one rule for every path a command or a spec takes.

A location is a local path or a pyarrow filesystem URI (``s3://bucket/key``, ``gs://...``, ``file:///...``, with
pyarrow's query string: ``s3://bucket/key?endpoint_override=host:port&scheme=http``). Reading works wherever
pyarrow reads. Writing works on local folders and on S3; any other scheme is refused in one line
(:class:`StorageError`) before anything is written, never turned into a local folder named ``s3:``.

What holds on S3 (docs/cloud-storage.md):

- a file is written whole or not at all: a temporary object beside it, then a server-side move; readers see the
  old object or the new one (an S3 PUT is atomic per object);
- a dataset appears whole or not at all: shards first, ``manifest.json`` last (readers start from it);
- one writer at a time: S3 has no ``flock``, so the writer of a target holds a *lease object* (the same name as
  the local lock file, ``.<name>.vidgan-lock`` beside a file, ``<folder>/.vidgan-lock`` in a folder) created
  with a conditional PUT (``If-None-Match: *``): a second writer's PUT fails and it stops naming the holder. A
  writer that is killed leaves its lease; the next writer on the same host takes it over when that process is
  gone, anyone else is told which object to delete.

Credentials: the usual AWS chain (``AWS_ACCESS_KEY_ID``..., instance roles); ``AWS_ENDPOINT_URL`` or the URI's
``endpoint_override`` point both pyarrow and the lease's boto3 client at another S3 API (a local one in tests).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from vidgan.files import LOCK_SUFFIX, TMP_SUFFIX, WriterBusy, redact_uri, resolve_fs, split_userinfo

#: URI schemes vidgan writes to (besides local paths and file://)
WRITABLE_SCHEMES = ("s3",)
PROBE_PREFIX = ".vidgan-write-probe-"


class StorageError(ValueError):
    """A location vidgan cannot use (a scheme it does not write, a missing bucket, a denied write); one line."""


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a URI of another filesystem than the local one (``file://`` is local)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def local_path(location: str | os.PathLike[str]) -> str:
    """A local location as a plain path (``file:///a/b`` -> ``/a/b``)."""
    text = str(location)
    return unquote(urlsplit(text).path) if text.startswith("file://") else text


def scheme(location: str) -> str:
    return location.split("://", 1)[0].lower() if "://" in location else "file"


def split_query(location: str) -> tuple[str, str]:
    """(``location`` without its query string, ``?query`` or "")."""
    base, sep, query = location.partition("?")
    return base, (sep + query if sep else "")


def child(location: str, name: str) -> str:
    """``location/name``, keeping a URI's query string at the end (``s3://b/p?x=1`` -> ``s3://b/p/name?x=1``)."""
    base, query = split_query(location)
    return base.rstrip("/") + "/" + name + query


def parent_and_name(location: str) -> tuple[str, str]:
    """(folder, file name) of a file location, the folder keeping a URI's query string."""
    base, query = split_query(location)
    folder, _, name = base.rstrip("/").rpartition("/")
    return folder + query, name


def check_writable_scheme(location: str, what: str) -> None:
    """StorageError naming ``what`` when vidgan cannot write at ``location``'s scheme (before anything is written)."""
    if is_remote(location) and scheme(location) not in WRITABLE_SCHEMES:
        raise StorageError(
            f"{what} {redact_uri(location)}: vidgan writes to local paths and s3:// only ({scheme(location)}:// is "
            "read-only here: write locally, then copy it with your storage's own tool)"
        )


def exists(location: str) -> bool:
    """Whether a file (or folder) exists at ``location``."""
    import pyarrow.fs as pafs

    fs, path = resolve_fs(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(location: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = resolve_fs(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(location: str) -> bytes:
    """The bytes of the file at ``location`` (FileNotFoundError / IsADirectoryError as for a local file)."""
    import pyarrow.fs as pafs

    if not is_remote(location):
        with open(local_path(location), "rb") as f:
            return f.read()
    fs, path = resolve_fs(location)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{redact_uri(location)} does not exist")
    if kind == pafs.FileType.Directory:
        raise IsADirectoryError(f"{redact_uri(location)} is a folder, not a file")
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(location: str, data: bytes) -> None:
    """Write a file whole or not at all (local: temp file, fsync, rename; S3: temp object, then a move)."""
    from vidgan.files import atomic_write_bytes, atomic_write_fs

    if not is_remote(location):
        atomic_write_bytes(local_path(location), data)
        return
    check_writable_scheme(location, "file")
    fs, path = resolve_fs(location)
    atomic_write_fs(fs, path, data)


def upload_file(local: str | os.PathLike[str], location: str, chunk: int = 8 << 20) -> None:
    """Copy a local file to ``location`` whole or not at all, streaming (temp object, then a move)."""
    fs, path = resolve_fs(location)
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    try:
        with open(local, "rb") as src, fs.open_output_stream(tmp) as dst:
            while block := src.read(chunk):
                dst.write(block)
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise


def remove_stale_temps(location: str) -> list[str]:
    """Remove the temporary files/objects of the file at ``location`` that a killed save left (only for the holder
    of its :func:`claim`); return their names."""
    import pyarrow.fs as pafs

    from vidgan.files import is_own_temp
    from vidgan.files import remove_stale_temps as remove_local

    folder, name = parent_and_name(location)
    if not is_remote(location):
        return remove_local(local_path(folder) or "/", name)
    fs, path = resolve_fs(folder)
    removed = []
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if info.type == pafs.FileType.File and is_own_temp(info.base_name, name):
            with contextlib.suppress(OSError):
                fs.delete_file(info.path)
                removed.append(info.base_name)
    return sorted(removed)


# ------------------------------------------------------------------------------ checks before writing


def _s3_error(exc: BaseException, location: str, what: str) -> StorageError:
    text = " ".join(str(exc).split())
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text or "not found. To create buckets" in text:
        bucket = split_query(location)[0].split("://", 1)[1].split("/", 1)[0]
        return StorageError(f"{what} {redact_uri(location)}: bucket {bucket!r} does not exist (create it first)")
    if "ACCESS_DENIED" in text or "AccessDenied" in text or "Forbidden" in text:
        return StorageError(f"{what} {redact_uri(location)}: this user may not write there (access denied)")
    return StorageError(f"{what} {redact_uri(location)}: cannot be written ({text[:300]})")


def probe_writable(folder: str, what: str) -> None:
    """Write and remove a small probe object in ``folder`` (a URI): StorageError in one line naming ``what`` when
    the bucket does not exist or this user may not write there. Local folders are left to their own checks."""
    if not is_remote(folder):
        return
    check_writable_scheme(folder, what)
    try:
        fs, path = resolve_fs(folder)
    except (OSError, ValueError) as exc:
        raise StorageError(f"{what} {redact_uri(folder)}: not a usable URI ({' '.join(str(exc).split())})") from None
    probe = f"{path}/{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        with fs.open_output_stream(probe) as f:
            f.write(b"vidgan write probe: safe to delete\n")
        fs.delete_file(probe)
    except OSError as exc:
        raise _s3_error(exc, folder, what) from None


# ------------------------------------------------------------------------------ one writer at a time


def _s3_client(location: str) -> tuple[Any, str, str]:
    """(boto3 S3 client, bucket, key) for an ``s3://`` location, with the URI's endpoint/region/credentials."""
    try:
        import boto3
    except ImportError:
        raise StorageError(
            f"writing to {redact_uri(location)} needs boto3 for its writer lease: pip install 'vidgan[sweep]'"
        ) from None
    bare, user, password = split_userinfo(location)
    parts = urlsplit(bare)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    kwargs: dict[str, Any] = {}
    if "endpoint_override" in query:
        endpoint = query["endpoint_override"]
        kwargs["endpoint_url"] = endpoint if "://" in endpoint else f"{query.get('scheme', 'https')}://{endpoint}"
    if "region" in query:
        kwargs["region_name"] = query["region"]
    if user and password:
        kwargs.update(aws_access_key_id=user, aws_secret_access_key=password)
    return boto3.client("s3", **kwargs), parts.netloc, parts.path.lstrip("/")


def lease_location(target: str, folder: bool) -> str:
    """The lease object of ``target``: ``<folder>/.vidgan-lock``, or ``.<name>.vidgan-lock`` beside a file."""
    if folder:
        return child(target, LOCK_SUFFIX)
    parent, name = parent_and_name(target)
    return child(parent, f".{name}{LOCK_SUFFIX}")


def _holder_text(info: dict[str, Any]) -> str:
    try:
        return f"{info['command']} (pid {int(info['pid'])} on {info['host']}, since {info['since']})"
    except (KeyError, TypeError, ValueError):
        return "another process (its lease names no holder)"


def _gone(info: dict[str, Any]) -> bool:
    """Whether the lease's holder is a process of this host that no longer runs."""
    if info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError):
        return False
    return False


@contextlib.contextmanager
def s3_lease(target: str, folder: bool = False, command: str | None = None,
             advice: str = "wait for it to finish, then run this again") -> Iterator[str]:
    """Hold the exclusive right to write ``target`` on S3 for the ``with`` body (see the module docstring);
    :class:`vidgan.files.WriterBusy` naming the holder when another writer has it. Yields the lease's URI."""
    lease = lease_location(target, folder)
    client, bucket, key = _s3_client(lease)
    from botocore.exceptions import ClientError

    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "command": command or " ".join(["vidgan", *sys.argv[1:2]]),
            "since": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"), "token": uuid.uuid4().hex}
    for attempt in range(2):
        try:
            client.put_object(Bucket=bucket, Key=key, Body=json.dumps(info).encode(), IfNoneMatch="*")
            break
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise _s3_error(exc, target, "cannot claim") from None
            try:
                held = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read().decode())
            except (ClientError, ValueError):
                held = {}
            if attempt == 0 and isinstance(held, dict) and _gone(held):
                client.delete_object(Bucket=bucket, Key=key)  # its holder on this host is dead: a stale lease
                continue
            raise WriterBusy(
                f"{redact_uri(target)} is being written by {_holder_text(held if isinstance(held, dict) else {})}: "
                f"{advice} (if that process no longer runs, delete its lease {redact_uri(lease)})"
            ) from None
    try:
        yield lease
    finally:
        with contextlib.suppress(ClientError):
            current = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read().decode())
            if isinstance(current, dict) and current.get("token") == info["token"]:
                client.delete_object(Bucket=bucket, Key=key)


@contextlib.contextmanager
def claim(target: str, folder: bool = False, command: str | None = None,
          advice: str = "wait for it to finish, then run this again") -> Iterator[str]:
    """One writer at a time for ``target``: the local :func:`vidgan.files.writer_lock`, or an S3 lease object."""
    from vidgan.files import writer_lock

    if is_remote(target):
        check_writable_scheme(target, "output")
        with s3_lease(target, folder=folder, command=command, advice=advice) as lease:
            yield lease
    else:
        with writer_lock(local_path(target), folder=folder, command=command, advice=advice) as path:
            yield str(path)


def torch_bytes(obj: Any) -> bytes:
    """``torch.save`` of ``obj`` into bytes (for writing to any location)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
