"""Simulator JVMs: launched by us with a read timeout on every call, marked on their command line,
found in /proc, stopped on close, garbage collection and interpreter exit.

py4j logs a broken connection with ``logging.exception`` on the *root* logger. A dead JVM is
handled by the env, so those tracebacks are noise; they are dropped only while one of our calls
runs (``quiet_py4j``), so importing this module changes no logging configuration.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
from scienceworld import ScienceWorldEnv
from scienceworld.constants import BASEPATH, JAR_PATH

from londi_jax.envs.scienceworld.tasks import JavaNotFoundError

# Every simulator JVM carries this system property, so leftovers can be found in /proc.
JVM_MARK = "-Dlondi_jax.scienceworld=1"
# Optional extra tag (tests set it to find only their own JVMs on a shared machine).
JVM_TAG_ENV = "LONDI_JAX_JVM_TAG"

_LIVE: dict[int, subprocess.Popen] = {}
_LIVE_LOCK = threading.Lock()


class _DropPy4JRecords(logging.Filter):
    """Drops records logged from py4j's own source files."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "py4j" not in record.pathname.replace("\\", "/").split("/")


_QUIET = _DropPy4JRecords()
_QUIET_DEPTH = 0
_QUIET_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_py4j() -> Iterator[None]:
    """While the block runs, py4j's records on the root and ``py4j`` loggers are dropped (both
    filters are removed after the last nested block ends, so logging is as the user set it)."""
    global _QUIET_DEPTH
    # a logger's filters see only records created on it, not those propagated from its children
    loggers = (logging.getLogger(), logging.getLogger("py4j"), logging.getLogger("py4j.java_gateway"),
               logging.getLogger("py4j.clientserver"))
    with _QUIET_LOCK:
        _QUIET_DEPTH += 1
        if _QUIET_DEPTH == 1:
            for lg in loggers:
                lg.addFilter(_QUIET)
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_DEPTH -= 1
            if _QUIET_DEPTH == 0:
                for lg in loggers:
                    lg.removeFilter(_QUIET)


class _QuietCalls:
    """A py4j ``JavaObject`` whose method calls run inside :func:`quiet_py4j`."""

    def __init__(self, obj: Any):
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with quiet_py4j():
                return attr(*args, **kwargs)

        return call


def _kill_proc(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """Ask the JVM to exit (stdin EOF), then kill it; always reap it."""
    try:
        if proc.poll() is None and proc.stdin is not None:
            try:
                proc.stdin.close()  # --die-on-broken-pipe: the JVM exits on EOF
            except OSError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pass
    with _LIVE_LOCK:
        _LIVE.pop(proc.pid, None)


@atexit.register
def _kill_all_jvms() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in procs:
        _kill_proc(proc, grace=0.5)


def live_jvm_pids(tag: str | None = None) -> list[int]:
    """PIDs of running simulator JVMs started by londi_jax (any process), optionally only those
    started with ``LONDI_JAX_JVM_TAG=tag`` in the environment. Scans /proc (Linux)."""
    needle = JVM_MARK.encode() if tag is None else f"-Dlondi_jax.tag={tag}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmd.split(b"\0") and state not in (b"Z", b"X"):  # zombies hold no resources
            pids.append(int(entry))
    return sorted(pids)


class _Simulator(ScienceWorldEnv):
    """The package's ``ScienceWorldEnv`` on a JVM we launch ourselves: every call has a read
    timeout (a hung JVM raises instead of blocking forever), the JVM is registered for atexit
    clean-up and marked on its command line, and no unused callback server is started."""

    def __init__(self, call_timeout: float, java_opts: Sequence[str] = (), slow_timeout: float = 300.0):  # noqa: D107
        if shutil.which("java") is None:
            raise JavaNotFoundError("ScienceWorld needs Java 8+ on PATH ('java' not found): install e.g. openjdk-17-jre-headless")
        opts = [JVM_MARK, *java_opts]
        if os.environ.get(JVM_TAG_ENV):
            opts.append(f"-Dlondi_jax.tag={os.environ[JVM_TAG_ENV]}")
        self._closed = False
        self._gateway = None
        self.java_process = None
        self.call_timeout, self.slow_timeout = float(call_timeout), max(float(slow_timeout), float(call_timeout))
        port, proc = launch_gateway(classpath=JAR_PATH, die_on_exit=True, cwd=BASEPATH, return_proc=True, javaopts=opts)
        self.java_process = proc
        with _LIVE_LOCK:
            _LIVE[proc.pid] = proc
        try:
            self._gateway = JavaGateway(
                gateway_parameters=GatewayParameters(auto_field=True, port=port, read_timeout=self.slow_timeout),
                java_process=proc,
            )
            with quiet_py4j():
                server = self._gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()  # loads classes: slow
            self.server = _QuietCalls(server)  # every simulator call goes through here
            self.set_timeout(self.call_timeout)
        except BaseException:
            self.close()
            raise
        # attributes the base class' methods use
        self.taskName, self.variationIdx, self.simplificationStr = "", 0, ""
        self.lastStepScore, self.envStepLimit, self.goldPathGenerated = 0, 10**9, False
        self.runHistories = {}

    @property
    def pid(self) -> int:
        return self.java_process.pid

    def set_timeout(self, seconds: float) -> None:
        """Read timeout of every later call (py4j applies it per pooled connection)."""
        self._gateway.gateway_parameters.read_timeout = seconds
        for conn in list(self._gateway._gateway_client.deque):
            try:
                conn.socket.settimeout(seconds)
            except OSError:  # a connection that broke with a dead JVM
                pass

    @contextlib.contextmanager
    def slow_calls(self) -> Iterator[None]:
        """Allow ``slow_timeout`` for calls known to be slow (the first load, gold-path generation)."""
        self.set_timeout(self.slow_timeout)
        try:
            yield
        finally:
            if not self._closed:
                self.set_timeout(self.call_timeout)

    def close(self) -> None:
        """Stop the JVM (idempotent, never raises)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        if self._gateway is not None:
            try:
                with quiet_py4j():
                    self._gateway.close()  # sockets only: a dead JVM cannot answer shutdown()
                # py4j's close() leaves the client "connected": every Java object collected later
                # (often at exit) would then try to reach the stopped JVM and log a refused connection
                self._gateway._gateway_client.is_connected = False
            except Exception:  # noqa: BLE001 - closing must not fail
                pass
        if self.java_process is not None:
            _kill_proc(self.java_process)

    def __del__(self) -> None:
        self.close()
