"""Small file helpers shared by the data, training and FVD code: checksums, atomic writes, filesystems.

Every file vidgan writes for keeps (shards, manifests, checkpoints, cached weights and statistics, sweep
state) goes through :func:`atomic_write` (local) or :func:`atomic_write_fs` (any pyarrow filesystem):
readers see the old file or the new one, never half of one. Temporary files are named
``.<name>.<random>.vidgan-tmp`` in the target's folder, so :func:`is_own_temp` tells ours apart from
anything a user put there.

One writer at a time: :func:`writer_lock` claims a file or folder (an ``flock`` on ``.<name>.vidgan-lock``
beside it, or ``.vidgan-lock`` inside a folder) for the whole run that writes it. A second writer stops with
:class:`WriterBusy`, whose message names the holder (pid, host, command, since when); a killed holder's
claim ends with its process. Whoever holds the claim may remove the target's temporary files that a killed
run left (:func:`remove_stale_temps`): no live vidgan process is writing them. A lock file that is a symbolic
link (or not a regular file) is refused, never written through; a folder's claim also holds the folder itself,
so removing its lock file lets nobody in; a file's holder whose lock file was removed stops before its next
write of the file (:class:`ClaimLost`) instead of replacing what a second writer wrote.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow.fs as pafs

TMP_SUFFIX = ".vidgan-tmp"
LOCK_SUFFIX = ".vidgan-lock"
CACHE_ENV = "VIDGAN_CACHE"


#: cache folders that could not be made, and the temporary folder this process caches in instead
_CACHE_STAND_INS: dict[Path, Path] = {}


def cache_dir() -> Path:
    """Where vidgan caches what it can rebuild (converted I3D weights, statistics locks, verified-shard
    stamps): ``$VIDGAN_CACHE`` if set, else ``~/.cache/vidgan``. Deleting it only costs time, and so does a cache
    that cannot be made (under a regular file, in a folder this user cannot write): one warning naming it, and
    this process caches in a temporary folder of its own, removed at exit."""
    root = os.environ.get(CACHE_ENV)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "vidgan"
    if path in _CACHE_STAND_INS:
        return _CACHE_STAND_INS[path]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return _cache_stand_in(path, f"{CACHE_ENV}={root}" if root else f"the default cache {path}", e)
    return path


def _cache_stand_in(path: Path, shown: str, error: OSError) -> Path:
    """A temporary cache folder for this process instead of ``path``, which cannot be made; warned once."""
    import atexit
    import shutil

    stand_in = Path(tempfile.mkdtemp(prefix="vidgan-cache-"))
    atexit.register(shutil.rmtree, stand_in, ignore_errors=True)
    _CACHE_STAND_INS[path] = stand_in
    print(f"vidgan: warning: {shown} cannot be used as vidgan's cache ({error.strerror or error}); carrying on "
          f"without it (a temporary cache for this run: I3D weights are converted and shards hashed again)",
          file=sys.stderr)
    return stand_in


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def is_own_temp(name: str, target: str | None = None) -> bool:
    """Whether ``name`` is a temporary file :func:`atomic_write` made (for ``target``, when given)."""
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return False
    if target is None:
        return True
    # ".<target>.<random>.vidgan-tmp" with a random part free of dots: ".ck.pt.x.vidgan-tmp" is ck.pt's, not ck's
    middle = name[len(target) + 2 : -len(TMP_SUFFIX)]
    return name.startswith(f".{target}.") and bool(middle) and "." not in middle


def remove_stale_temps(folder: str | os.PathLike[str], target: str) -> list[str]:
    """Remove the temporary files of ``target`` (:func:`is_own_temp`) that a killed run left in ``folder``;
    return their names. Only for the holder of ``target``'s :func:`writer_lock`: nobody else writes them."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if is_own_temp(entry.name, target) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return sorted(removed)


class WriterBusy(OSError):
    """Another process holds the :func:`writer_lock` of a file or folder; the message names it."""


class ClaimLost(WriterBusy):
    """This process's :func:`writer_lock` no longer stands (its lock file was removed or replaced, or the claimed
    folder was moved away): another process may be writing the same target, so nothing more is written to it."""


def lock_path(target: str | os.PathLike[str], folder: bool = False) -> Path:
    """The lock file of ``target``: ``<target>/.vidgan-lock`` for a folder, ``.<name>.vidgan-lock`` beside a file."""
    target = Path(target)
    return target / LOCK_SUFFIX if folder else target.parent / f".{target.name}{LOCK_SUFFIX}"


def _holder(fd: int, wait: float = 1.0) -> str:
    """Who holds a lock, from what its holder wrote into the lock file. A holder names itself right after it
    takes the lock, so an empty file is read again for up to ``wait`` seconds before we say it has not."""
    deadline = time.monotonic() + wait
    while True:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            return (f"{info['command']} (pid {int(info['pid'])} on {info['host']}, since {info['since']})")
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                return "another process (it has not said which yet)"
            time.sleep(0.05)


def _holder_at(path: Path) -> str:
    """:func:`_holder` read from the lock file's name (the holder of a folder's lock, whose file may be gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return f"another process (its lock file {path} was removed)"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "another process"
        return _holder(fd)
    finally:
        os.close(fd)


def _open_lock(target: Path, path: Path) -> int:
    """Open (or create) the lock file ``path`` for ``target``; refuse, in one line naming it, a lock file that is a
    symbolic link, not a regular file, or has other names (hard links): its holder writes into it, and must never
    write through it into a file someone aimed it at."""
    def refuse(why: str, errno_: int) -> OSError:
        return OSError(errno_, f"cannot claim {target} for writing: its lock file {path} {why}; vidgan does not "
                       f"write through it: remove it (rm {path}) and run this again")

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise refuse("is a symbolic link", e.errno) from None
        if e.errno in (errno.EISDIR, errno.ENXIO):
            raise refuse("is not a regular file", e.errno) from None
        raise OSError(e.errno, f"cannot claim {target} for writing: its lock file {path} cannot be created "
                      f"({e.strerror or e})") from None
    st = os.fstat(fd)
    why = "is not a regular file" if not stat.S_ISREG(st.st_mode) else "has other names (hard links)" \
        if st.st_nlink > 1 else None
    if why:
        os.close(fd)
        raise refuse(why, errno.EPERM)
    return fd


def _same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` (not followed when a symbolic link) is the file open as ``fd``."""
    try:
        a, b = os.lstat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _lock_folder(target: Path, path: Path, advice: str) -> int | None:
    """An ``flock`` on the claimed folder itself, which no removal of its lock file can undo; None where the
    filesystem cannot lock a folder (the lock file alone then claims it, checked before each write)."""
    while True:
        try:
            dfd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:  # a folder this user may write but not list: its lock file alone claims it
            return None
        try:
            fcntl.flock(dfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(dfd)
            raise WriterBusy(f"{target} is being written by {_holder_at(path)}: {advice}") from None
        except OSError:  # e.g. NFS, where flock on a folder fails
            os.close(dfd)
            return None
        try:
            st = os.stat(target)
            if (st.st_dev, st.st_ino) == (os.fstat(dfd).st_dev, os.fstat(dfd).st_ino):
                return dfd
        except FileNotFoundError:
            pass
        os.close(dfd)  # moved away between our open and our lock: lock what the name is now


@dataclass
class _Claim:
    """A :func:`writer_lock` this process holds (:func:`check_claim` reads them)."""

    target: str  # absolute
    folder: bool
    lock: Path
    fd: int  # the lock file
    folder_fd: int | None  # the claimed folder, flock'ed (folder claims)

    def lost(self) -> str | None:
        """Why the claim no longer stands, or None while it does."""
        if self.folder_fd is not None:
            try:
                st, held = os.stat(self.target), os.fstat(self.folder_fd)
                if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
                    return None
            except FileNotFoundError:
                pass
            return f"the folder {self.target} was moved away or replaced while this run held it"
        if _same_file(self.lock, self.fd):
            return None
        return f"its lock file {self.lock} was removed or replaced while this run held it"


_CLAIMS: list[_Claim] = []
_CLAIMS_LOCK = threading.Lock()


def check_claim(path: str | os.PathLike[str]) -> None:
    """Raise :class:`ClaimLost` when ``path`` is a file that this process claimed (:func:`writer_lock`), or lies in a
    folder it claimed, and that claim no longer stands: another process may be writing it. The last check before a
    write replaces a file (:func:`atomic_write`), so a removed lock file costs a clear error, never a lost write."""
    where = os.path.abspath(path)
    with _CLAIMS_LOCK:
        claims = [c for c in _CLAIMS if where == c.target or (c.folder and os.path.dirname(where) == c.target)]
    for claim in claims:
        why = claim.lost()
        if why:
            raise ClaimLost(f"{where} not written: {why}, so another process may be writing {claim.target} now; "
                            "see what it wrote, then run this again")


@contextlib.contextmanager
def writer_lock(target: str | os.PathLike[str], folder: bool = False, command: str | None = None,
                advice: str = "wait for it to finish, then run this again") -> Iterator[Path]:
    """Hold the exclusive right to write ``target`` (a file, or with ``folder`` a folder, created if missing)
    for the ``with`` body; yield the lock file. :class:`WriterBusy` at once when another process holds it,
    naming the holder; ``advice`` ends that message.

    The claim is an ``flock`` on :func:`lock_path`, which the kernel drops when the holder exits, however it
    exits, and for a folder also an ``flock`` on the folder itself. The holder writes its pid, host, command and
    start time into the file, and removes the file when done (a process that opened the file before the removal
    notices it holds a removed file and opens anew). A lock file that is a symbolic link, not a regular file or
    a file with other names is refused in one line (an ``OSError`` naming it): nothing is written through it.

    A lock file removed while its holder runs: a folder stays claimed (its own ``flock``: a second writer is
    refused all the same); a file's next writer gets a new lock file, and the holder's next
    :func:`atomic_write` of the file stops with :class:`ClaimLost` before replacing it (:func:`check_claim`),
    so one of the two stops and neither's write is lost unseen. The holder removes only its own lock file.
    """
    path = lock_path(target, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder_fd = _lock_folder(Path(target), path, advice) if folder else None
    try:
        while True:
            fd = _open_lock(Path(target), path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise WriterBusy(f"{target} is being written by {holder}: {advice}") from None
            if _same_file(path, fd):
                break
            os.close(fd)  # its previous holder removed it between our open and our lock: take the new one
    except BaseException:
        if folder_fd is not None:
            os.close(folder_fd)
        raise
    claim = _Claim(os.path.abspath(target), folder, path, fd, folder_fd)
    with _CLAIMS_LOCK:
        _CLAIMS.append(claim)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "command": command or " ".join(["vidgan", *sys.argv[1:2]]),
                "since": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}
        with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, unnamed
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        with _CLAIMS_LOCK:
            _CLAIMS.remove(claim)
        if _same_file(path, fd):  # still holding its lock: nobody can have taken it meanwhile
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(fd)
        if folder_fd is not None:
            os.close(folder_fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def _umask() -> int:
    """This process's umask, read without changing it where Linux tells it (``/proc/self/status``)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The permissions a file written at ``path`` gets: those of the regular file it replaces, else what the
    umask leaves of ``rw-rw-rw-`` (as ``open`` would give a new file)."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Write a local file whole or not at all: ``write(f)`` fills a temp file in the same folder, which is
    flushed, fsynced and renamed over ``path``. On any error the temp file is removed and ``path`` is
    left as it was. The file keeps the permissions of the file it replaces; a new one follows the umask.

    When this process claimed ``path`` or its folder (:func:`writer_lock`) and the claim no longer stands,
    :class:`ClaimLost` is raised before ``path`` is replaced (:func:`check_claim`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), _mode_for(path))
            os.fsync(f.fileno())
        check_claim(path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda f: f.write(data))


# ------------------------------------------------------------------------------ pyarrow filesystems


def resolve_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path (made absolute) or a pyarrow filesystem URI (``s3://...``)."""
    import pyarrow.fs as pafs

    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join_uri(base: str, name: str) -> str:
    """Join a folder (local path or URI) and a name with ``/``, keeping a URI's query string at the end
    (``s3://b/p?endpoint_override=h:9000`` + ``x`` -> ``s3://b/p/x?endpoint_override=h:9000``)."""
    base, sep, query = base.partition("?") if "://" in base else (base, "", "")
    return base.rstrip("/") + "/" + name + sep + query


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """(``uri`` without ``user:password@``, user, password), both unquoted; (uri, None, None) when it has none.

    Credentials in URIs (``http://user:pass@host``, ``s3://key:secret@bucket``) must never be printed or
    logged: show :func:`redact_uri` of a URI instead.
    """
    from urllib.parse import unquote, urlsplit, urlunsplit

    if "://" not in uri:
        return uri, None, None
    scheme, rest = uri.split("://", 1)
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))  # where the authority ends (RFC 3986)
    if "@" not in rest[:end]:
        # a password with an unencoded "/", "?" or "#" (AWS secret keys hold "/") ends the authority early:
        # "user:pa/ss@host" reads as host "user", port "pa"; its userinfo runs to the first "@" followed by a host
        user_part, colon, port = rest[:end].partition(":")
        if not (colon and user_part and not port.isdigit()):
            return uri, None, None
        at = next((m.start() for m in _USERINFO_END.finditer(rest, end)), None)
        if at is None:
            return uri, None, None
        user, _, password = rest[:at].partition(":")
        return f"{scheme}://{rest[at + 1 :]}", unquote(user), unquote(password)
    parts = urlsplit(uri)
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, sep, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), unquote(user), unquote(password) if sep else None


#: an "@" followed by a host (and port) up to the end of the authority: where an unencoded userinfo ends
_USERINFO_END = re.compile(r"@(?=[A-Za-z0-9._~\-\[\]:%]+(?:[/?#]|$))")


def redact_uri(uri: str) -> str:
    """``uri`` without its userinfo (``user:password@``), safe to print and log."""
    return split_userinfo(uri)[0]


def atomic_write_fs(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write a file on a pyarrow filesystem whole or not at all (local: :func:`atomic_write`; object stores:
    a temporary name in the same folder, then a move)."""
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        atomic_write_bytes(path, data)
        return
    parent, name = path.rsplit("/", 1)
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)
