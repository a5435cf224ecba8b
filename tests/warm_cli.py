"""``python -m MODULE ARGV`` as a real child process that skips the interpreter's imports of torch and MLflow.

Most of the fast suite's time went into CLI subprocesses importing torch (~2 s), torch._dynamo (~2 s, imported by
the first optimizer), MLflow and its SQLAlchemy store (~3 s) before doing a second of work. Here a warm server,
started once per pytest worker, imports those third-party packages and nothing of vidgan or tune_jobs; each call
forks it, and the child becomes ``python -m MODULE ARGV``: its own process id, the environment, working folder,
``sys.path`` (``PYTHONPATH`` included) and rlimits asked for, stdin from /dev/null, stdout and stderr of its own,
default signal handling, vidgan's modules imported afresh, and its exit status (or the signal that ended it) as
the return code. A test can signal it, kill it or run several at once, as with :class:`subprocess.Popen`.

What it is not: a fresh interpreter. Import-isolation checks (which modules a command imports), the console
script itself and environment variables that a preloaded library reads when it loads (``OMP_NUM_THREADS``,
``LD_*``, ``PYTHON*`` but ``PYTHONPATH``...) need :func:`subprocess.run`; a call whose environment changes one of
those runs as a plain subprocess here. ``VIDGAN_TEST_WARM_CLI=0`` runs every call as a plain subprocess (the
same tests, the slow way).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import locale
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

#: what the server imports before it forks: the heavy third-party packages only (never vidgan, tune_jobs, Ray)
PRELOAD = ("numpy", "av", "torch", "torch._dynamo", "torch.optim", "mlflow", "mlflow.store.tracking.sqlalchemy_store",
           "pyarrow.parquet", "pyarrow.fs", "pydantic", "yaml")
#: environment variables read when those packages load: a call that changes one runs as a plain subprocess
STARTUP_ENV_PREFIXES = ("PYTHON", "OMP_", "MKL_", "KMP_", "GOMP_", "LD_", "MALLOC", "ARROW_", "TORCH", "PYTORCH")
#: ... but for these, read when first used (torch sets TORCHINDUCTOR_CACHE_DIR in its own process once it has used
#: its compiler, which the server never does)
LAZY_ENV = frozenset({"TORCHINDUCTOR_CACHE_DIR"})
ENABLE_ENV = "VIDGAN_TEST_WARM_CLI"
TESTS = str(Path(__file__).resolve().parent)


# ------------------------------------------------------------------------------------------------- server side


def _exit_code(exc: SystemExit) -> int:
    """The exit status Python gives a process that raised ``exc``."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _become(request: dict, base_path: list[str]) -> None:
    """In the forked child: turn into ``python -m MODULE ARGV`` as ``request`` describes; never returns."""
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as Python sets them at start
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        for fd, (path, flags) in enumerate(((os.devnull, os.O_RDONLY),
                                            (request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                            (request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC))):
            opened = os.open(path, flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = ["" if request["code"] is not None else os.getcwd(), *(os.path.abspath(p) for p in extra),
                       *base_path]
        import importlib

        importlib.invalidate_caches()
        import numpy
        import torch

        numpy.random.seed()  # seeded from the OS, as in a fresh interpreter (not the server's state in every child)
        torch.seed()
        import resource

        for name, limit in request["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (limit, limit))
        import runpy

        try:
            if request["code"] is None:
                sys.argv = ["-m", *request["argv"]]
                runpy._run_module_as_main(request["module"], alter_argv=True)  # what `python -m` calls
            else:  # python -c CODE ARGV
                import builtins
                import types

                sys.argv = ["-c", *request["argv"]]
                main = types.ModuleType("__main__")
                main.__builtins__ = builtins
                sys.modules["__main__"] = main
                exec(compile(request["code"], "<string>", "exec"), main.__dict__)  # noqa: S102 - the caller's code
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        except KeyboardInterrupt:
            import traceback

            traceback.print_exc()
            code = -signal.SIGINT
        except BaseException:  # noqa: BLE001 - the interpreter prints any uncaught exception and exits 1
            import traceback

            traceback.print_exc()
            code = 1
        import atexit as child_atexit

        child_atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream: nothing left to write
                stream.flush()
        if code < 0:  # Python ends on an uncaught KeyboardInterrupt by SIGINT itself (a shell sees 130)
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code)


def _supervise(conn: socket.socket, request: dict, base_path: list[str]) -> None:
    """In a forked child of the server: fork the command, send its pid, wait for it and send its return code."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _become(request, base_path)
    try:
        conn.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    finally:
        os._exit(0)


def serve(address: str) -> None:
    """The server: preload, then fork a supervised child per connection until stdin closes (its pytest worker
    ended)."""
    base_path = [p for p in sys.path if p not in ("", TESTS)]
    for name in PRELOAD:
        __import__(name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("vidgan", "tune_jobs", "ray"))
    if leaked:  # a child must import these itself (and tests check that some commands never import Ray)
        raise RuntimeError(f"the warm CLI server imported {leaked}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        readable, _, _ = select.select([listener, sys.stdin], [], [])
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            return
        if listener not in readable:
            continue
        conn, _ = listener.accept()
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        if not data.endswith(b"\n"):
            conn.close()
            continue
        request = json.loads(data)
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            listener.close()
            _supervise(conn, request, base_path)
        conn.close()


# ------------------------------------------------------------------------------------------------- client side


class _Server:
    """The warm server of this process (a pytest worker), started on first use, ended with this process."""

    proc: subprocess.Popen | None = None
    folder: str = ""
    env: dict[str, str] = {}  # the server's environment

    @classmethod
    def address(cls) -> str:
        if cls.proc is None or cls.proc.poll() is not None:
            cls.folder = tempfile.mkdtemp(prefix="vidgan-warm-cli-")
            cls.env = env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            boot = f"import sys; sys.path.insert(0, {TESTS!r}); import warm_cli; warm_cli.serve(sys.argv[1])"
            cls.proc = subprocess.Popen([sys.executable, "-c", boot, f"{cls.folder}/socket"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, cwd=cls.folder)
            if cls.proc.stdout.readline() != b"ready\n":
                raise RuntimeError(f"the warm CLI server did not start (exit status {cls.proc.wait()})")
            atexit.register(cls.stop)
        return f"{cls.folder}/socket"

    @classmethod
    def stop(cls) -> None:
        if cls.proc is not None:
            cls.proc.stdin.close()  # the server returns when its stdin closes
            try:
                cls.proc.wait(10)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
            cls.proc = None
        shutil.rmtree(cls.folder, ignore_errors=True)


def _decode(data: bytes) -> str:
    """Bytes read back as :func:`subprocess.run` with ``text=True`` reads them (universal newlines)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding=locale.getpreferredencoding(False)).read()


class WarmProcess:
    """A forked ``python -m MODULE ARGV``, with the part of :class:`subprocess.Popen`'s interface the tests use
    (stdout and stderr are always captured, as text)."""

    def __init__(self, args: list[str], module: str | None, code: str | None, argv: list[str],
                 env: Mapping[str, str], cwd: str, rlimits: Mapping[str, int]) -> None:
        self.args = args
        self.returncode: int | None = None
        address = _Server.address()
        self._folder = tempfile.mkdtemp(prefix="run-", dir=_Server.folder)  # removed with the server's folder
        request = {"module": module, "code": code, "argv": argv, "env": dict(env), "cwd": cwd,
                   "rlimits": dict(rlimits),
                   "stdout": f"{self._folder}/stdout", "stderr": f"{self._folder}/stderr"}
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect(address)
        self._conn.sendall(json.dumps(request).encode() + b"\n")
        self._buffer = b""
        self.pid = int(self._line(None))

    def _line(self, timeout: float | None) -> str:
        while b"\n" not in self._buffer:
            readable, _, _ = select.select([self._conn], [], [], timeout)
            if not readable:
                raise subprocess.TimeoutExpired(self.args, timeout)
            chunk = self._conn.recv(4096)
            if not chunk:
                raise RuntimeError(f"the warm CLI server lost {self.args}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = int(self._line(0))
            except subprocess.TimeoutExpired:
                return None
            self._conn.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = int(self._line(timeout))
            self._conn.close()
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        try:
            return tuple(_decode(Path(self._folder, name).read_bytes()) for name in ("stdout", "stderr"))
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _warm_allowed(env: Mapping[str, str]) -> bool:
    """Whether a call with ``env`` can be forked from the server (its start-up variables are the server's)."""
    if os.environ.get(ENABLE_ENV, "1") == "0":
        return False
    _Server.address()
    own = _Server.env
    wanted = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    return not any(own.get(k) != wanted.get(k) for k in own.keys() | wanted.keys()
                   if k.startswith(STARTUP_ENV_PREFIXES) and k not in LAZY_ENV)


def popen(module: str | None, argv: Sequence[object], env: Mapping[str, str] | None = None,
          cwd: str | os.PathLike | None = None, rlimits: Mapping[str, int] | None = None,
          code: str | None = None) -> WarmProcess | subprocess.Popen:
    """Start ``python -m module *argv`` (or ``python -c code *argv``; ``env``: its whole environment, default this
    one's; ``rlimits``: resource names such as ``"RLIMIT_AS"`` to a limit, soft and hard), stdout and stderr
    captured as text."""
    env = dict(os.environ if env is None else env)
    argv = [str(a) for a in argv]
    args = [sys.executable, *(("-m", module) if code is None else ("-c", code)), *argv]
    cwd = str(cwd or os.getcwd())
    if _warm_allowed(env):
        return WarmProcess(args, module, code, argv, env, cwd, rlimits or {})
    preexec = None
    if rlimits:
        import resource

        def preexec() -> None:
            for name, limit in rlimits.items():
                resource.setrlimit(getattr(resource, name), (limit, limit))

    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            preexec_fn=preexec)


def finish(proc: WarmProcess | subprocess.Popen, timeout: float | None) -> subprocess.CompletedProcess:
    """Wait for ``proc`` (killed when it runs past ``timeout``, then :class:`subprocess.TimeoutExpired`)."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run(module: str | None, argv: Sequence[object], env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None, rlimits: Mapping[str, int] | None = None, timeout: float | None = None,
        code: str | None = None) -> subprocess.CompletedProcess:
    """``python -m module *argv`` (or ``python -c code *argv``) to its end, as :func:`subprocess.run` with
    ``capture_output=True, text=True``."""
    return finish(popen(module, argv, env, cwd, rlimits, code), timeout)
