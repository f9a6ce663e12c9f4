"""Background jobs in a separate process.

Why a process: Python threads share one GIL. A flush or compaction thread
busy in Python makes every committer that returns from fdatasync wait up to
the switch interval (5 ms) for the GIL; measured in docs/architecture.md.
Jobs are pure functions of picklable descriptions (``runner.run_job``), so
they run in a child with no shared state: the child reads input files and
writes output files; the parent installs the result.

The child is started with ``python -c _CHILD_BOOT`` (not
multiprocessing, which re-imports the user's ``__main__`` module under the
spawn and forkserver methods); ``_CHILD_BOOT`` enters the ``lsm`` package
without running lsm/__init__.py and then runs ``lsm.compaction.child``
(``python -m lsm.compaction.child`` also works, and loads the whole
engine first). Protocol over the child's stdin/stdout:
a request is ``u64 length | u64 count | count x u64 size | pickle |
buffers``: a job pickled with protocol 5, its out-of-band buffers (a flush
job's memtable columns, ``FrozenEntries``) sent after it as they are, so
the parent never copies them into the pickle: the hand-off of 63,000
entries of 16 + 100 bytes peaked at 19.0 MB in the writers' process with
them in-band, 9.6 MB out of band (tracemalloc). A reply is ``u64 length | pickle``:
``("ok", JobResult)`` or ``("err", kind, args)``. The child exits at EOF.

Two pools per Python process (:func:`shared_pool`: flush, compaction)
serve every open database (the flush pool runs as many workers at once as
the largest ``max_background_flushes`` of them, :meth:`WorkerPool.allow`); a dead child is replaced and its job fails with WorkerError (the
job's inputs are untouched, so the DB retries later).

Orphans: a worker must never outlive its parent. If the parent is killed
mid-job, a worker that went on would create its output tables by file
numbers the dead parent reserved, and the database reopened meanwhile may
have given the same numbers to tables of its own (``fs.create`` truncates).
So a worker (1) asks the kernel to SIGKILL it when its parent dies
(Linux ``PR_SET_PDEATHSIG``; elsewhere a watchdog thread polls
``os.getppid()``), (2) checks ``os.getppid()`` before every file it
creates, renames or removes (:class:`_OrphanGuardFS`), and (3) exits at EOF
on stdin between jobs. ``PR_SET_PDEATHSIG`` fires when the *thread* that
forked the child exits, not the process, and pool workers outlive the
threads that need them (a DB's flush thread, a user thread in
``compact_range``), so every worker is forked by one long-lived thread
(:class:`_Spawner`).

Thread-safety: ``WorkerPool.run`` may be called from many threads; each
call takes an idle worker (``_mu``/``_idle``).
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from lsm.base.errors import CorruptionError, Error
from lsm.base.fs import FileSystem

_LEN = struct.Struct("<Q")
_PARENT_ENV = "LSM_WORKER_PARENT"
"""Environment variable: the pid of the process a worker serves."""
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_ORPHAN_EXIT = 3
"""Exit status of a worker that found its parent gone."""
_NICE_ENV = "LSM_WORKER_NICE"
"""Environment variable: the niceness increment a worker applies to itself."""
NICE = {"flush": 0, "compaction": 5}
"""CPU priority of each pool's worker, as a nice(2) increment over the
parent. Compaction runs below the flush worker and the writers: on a
2-core machine the writer takes one core and the flush and compaction
workers share the other; a flush that waits behind a compaction makes
writers stall on full memtables (a hard stop, hundreds of ms), while a
compaction that falls behind only grows level 0, which paces writers
gradually (``l0_slowdown_trigger``). Measured in docs/benchmarks.md."""


class WorkerError(Error):
    """The worker process died or answered garbage."""


def _encode_error(e: BaseException) -> tuple:
    if isinstance(e, CorruptionError):
        return ("corruption", (e.reason, e.path, e.offset))
    if isinstance(e, OSError):
        return ("oserror", (e.errno, e.strerror, e.filename))
    return ("other", (f"{type(e).__name__}: {e}",))


def _decode_error(kind: str, args: tuple) -> BaseException:
    if kind == "corruption":
        return CorruptionError(*args)
    if kind == "oserror":
        no, msg, fn = args
        return OSError(no, msg, fn) if fn is not None else OSError(no, msg)
    return WorkerError(f"background job failed in the worker process: {args[0]}")


def _read_exact(f: Any, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


class _Spawner:
    """Forks worker processes from one daemon thread that lives as long as
    the process (see "Orphans" in the module docstring: the parent-death
    signal is tied to the forking thread). A new thread is started after a
    fork (``os.getpid()`` changed) or if the old one is gone."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._queue: queue.SimpleQueue | None = None  # guarded by _mu
        self._thread: threading.Thread | None = None  # guarded by _mu
        self._pid = 0  # guarded by _mu

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        """``subprocess.Popen(args, **kwargs)``, run by the spawner thread."""
        with self._mu:
            t = self._thread
            if t is None or self._pid != os.getpid() or not t.is_alive():
                q: queue.SimpleQueue = queue.SimpleQueue()
                t = threading.Thread(target=self._loop, args=(q,), name="lsm-worker-spawner", daemon=True)
                try:
                    t.start()
                except RuntimeError:  # interpreter shutting down: fork from this thread
                    return subprocess.Popen(args, **kwargs)
                self._queue, self._thread, self._pid = q, t, os.getpid()
            q = self._queue  # type: ignore[assignment]
        box: list[Any] = []
        done = threading.Event()
        q.put((args, kwargs, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    @staticmethod
    def _loop(q: queue.SimpleQueue) -> None:
        while True:
            args, kwargs, box, done = q.get()
            try:
                box.append(subprocess.Popen(args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box.append(e)
            done.set()

    def _after_fork_in_child(self) -> None:
        # The lock may have been held by another thread at the fork.
        self._mu = threading.Lock()
        self._queue = self._thread = None
        self._pid = 0


_spawner = _Spawner()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_spawner._after_fork_in_child)


# The child's start-up. ``python -m lsm.compaction.child`` runs
# lsm/__init__.py first, which imports the whole engine (lsm.db, background,
# ingest, restore: 0.27 s of CPU, `python -X importtime`), none of which a
# worker uses: its jobs import what they need (the runner, the table
# writer). So the child puts a package object with lsm's search path in
# sys.modules (``find_spec`` locates the package without running it) and
# imports lsm.compaction.child through it: 23 ms to ``serve``. Its command
# line still names lsm.compaction.child (tests find workers by it).
_CHILD_BOOT = (
    "import importlib.util as u, sys, types; s = u.find_spec('lsm'); p = types.ModuleType('lsm'); "
    "p.__path__ = list(s.submodule_search_locations); p.__spec__ = s; p.__file__ = s.origin; "
    "sys.modules['lsm'] = p; from lsm.compaction.child import serve; serve()"
)


class _Worker:
    def __init__(self, nice: int = 0) -> None:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env[_PARENT_ENV] = str(os.getpid())
        env[_NICE_ENV] = str(nice)
        self.proc = _spawner.popen(
            [sys.executable, "-c", _CHILD_BOOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )

    def run(self, job: Any) -> Any:
        bufs: list[pickle.PickleBuffer] = []
        data = pickle.dumps(job, protocol=5, buffer_callback=bufs.append)
        try:
            # Header, pickle and buffers in separate writes, not joined:
            # that copied the whole job (~8.7 MB for a flush of the default
            # memtable) once more in the writers' process. The buffered
            # writer keeps the small header and sends it ahead of the rest.
            views = [b.raw() for b in bufs]
            sizes = [len(data), len(views), *map(len, views)]
            stdin = self.proc.stdin
            stdin.write(struct.pack(f"<{len(sizes)}Q", *sizes))  # type: ignore[union-attr]
            stdin.write(data)  # type: ignore[union-attr]
            for v in views:
                stdin.write(v)  # type: ignore[union-attr]
            stdin.flush()  # type: ignore[union-attr]
            del views, bufs
            n = _LEN.unpack(_read_exact(self.proc.stdout, 8))[0]
            reply = pickle.loads(_read_exact(self.proc.stdout, n))
        except (EOFError, BrokenPipeError, OSError, pickle.UnpicklingError) as e:
            self.kill()
            raise WorkerError(f"the background worker process died ({e!r})") from None
        if reply[0] == "ok":
            return reply[1]
        raise _decode_error(reply[1], reply[2])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()


class WorkerPool:
    def __init__(self, size: int = 1, nice: int = 0):
        self._mu = threading.Condition()
        self._size = size
        self._nice = nice
        self._idle: list[_Worker] = []  # guarded by _mu
        self._started = 0  # guarded by _mu

    def run(self, job: Any) -> Any:
        """Run ``job`` in a worker process and return its JobResult, or raise
        the job's error (CorruptionError, OSError, WorkerError)."""
        with self._mu:
            while not self._idle and self._started >= self._size:
                self._mu.wait()
            if self._idle:
                w = self._idle.pop()
            else:
                self._started += 1
                w = None
        if w is None:
            try:
                w = _Worker(self._nice)
            except BaseException:
                with self._mu:
                    self._started -= 1
                    self._mu.notify()
                raise
        ok = False
        try:
            result = w.run(job)
            ok = True
            return result
        except WorkerError:
            raise
        except BaseException:
            ok = w.alive()
            raise
        finally:
            with self._mu:
                if ok and w.alive():
                    self._idle.append(w)
                else:
                    self._started -= 1
                self._mu.notify()

    def allow(self, size: int) -> None:
        """Let the pool run up to ``size`` workers at once (never fewer than
        it allowed before: the pool is shared by every open database). The
        extra workers start when jobs need them."""
        with self._mu:
            if size > self._size:
                self._size = size
                self._mu.notify_all()

    def prestart(self) -> None:
        """Start a worker in the background if the pool has none yet, so
        the first job does not wait for a Python start-up (about 0.1 s,
        seconds on a loaded machine: long enough for writers to fill every
        memtable slot and stall before the first flush). Never blocks."""
        with self._mu:
            if self._started >= self._size:
                return
            self._started += 1

        def start() -> None:
            try:
                w = _Worker(self._nice)
            except BaseException:  # noqa: BLE001 - the first job will try again and report it
                with self._mu:
                    self._started -= 1
                    self._mu.notify()
                return
            with self._mu:
                self._idle.append(w)
                self._mu.notify()

        threading.Thread(target=start, name="lsm-worker-prestart", daemon=True).start()

    def close(self) -> None:
        with self._mu:
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for w in idle:
            w.close()


_shared: dict[str, WorkerPool] = {}  # guarded by _shared_mu
_shared_mu = threading.Lock()


def shared_pool(kind: str) -> WorkerPool:
    """The process-wide pool for ``kind`` ("flush" or "compaction"), one
    worker each to begin with (the flush pool grows to the databases'
    ``max_background_flushes``): flushes never queue behind a long compaction (measured:
    with one shared worker, OFF writers stalled to 0.27x of their idle rate
    while a 20 s compaction held the worker; tools/bg_mode_bench.py)."""
    with _shared_mu:
        pool = _shared.get(kind)
        if pool is None:
            pool = _shared[kind] = WorkerPool(1, NICE.get(kind, 0))
        return pool


class _OrphanGuardFS(FileSystem):
    """The worker's filesystem: before a file is created, renamed or removed,
    check that the parent is still alive, and exit at once if not (module
    docstring, "Orphans")."""

    def __init__(self, parent: int):
        self._parent = parent

    def _check_parent(self) -> None:
        if os.getppid() != self._parent:
            os._exit(_ORPHAN_EXIT)

    def create(self, path: str) -> Any:
        self._check_parent()
        return super().create(path)

    def rename(self, src: str, dst: str) -> None:
        self._check_parent()
        super().rename(src, dst)

    def remove(self, path: str) -> None:
        self._check_parent()
        super().remove(path)


def _die_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` does: the kernel's parent-death
    signal where there is one (Linux), else a thread polling
    ``os.getppid()``. Exits at once if the parent is already gone."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # died before the signal was armed
        os._exit(_ORPHAN_EXIT)
    if not armed:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.05)
            os._exit(_ORPHAN_EXIT)

        threading.Thread(target=watch, name="lsm-worker-watchdog", daemon=True).start()


def serve() -> None:
    """The child's loop: jobs in on stdin, results out on stdout. Exits at
    EOF on stdin, and at once when the parent process is gone."""
    from lsm.compaction.runner import run_job

    parent = int(os.environ.get(_PARENT_ENV) or os.getppid())
    _die_with_parent(parent)
    nice = int(os.environ.get(_NICE_ENV) or 0)
    if nice and hasattr(os, "nice"):
        try:
            os.nice(nice)
        except OSError:
            pass  # not allowed: run at the parent's priority
    fs = _OrphanGuardFS(parent)
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing may print into the protocol stream
    while True:
        try:
            head = _read_exact(inp, 8)
        except EOFError:
            return
        n = _LEN.unpack(head)[0]
        count = _LEN.unpack(_read_exact(inp, 8))[0]
        sizes = struct.unpack(f"<{count}Q", _read_exact(inp, 8 * count))
        data = _read_exact(inp, n)
        job = pickle.loads(data, buffers=[_read_exact(inp, size) for size in sizes])
        del data
        try:
            reply: tuple = ("ok", run_job(job, fs))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
            reply = ("err", *_encode_error(e))
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001
            data = pickle.dumps(("err", "other", (f"unpicklable result: {e}",)))
        out.write(_LEN.pack(len(data)) + data)
        out.flush()
