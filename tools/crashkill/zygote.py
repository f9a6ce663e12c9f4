"""Cheap cycles: one *zygote* process imports lsm once and forks a writer
per cycle (a fork costs milliseconds; a fresh Python and ``import lsm``
some 300 ms). The zygote is tools/crash_kill.py run with ``--zygote-fd``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

from crashkill.child import child_main
from crashkill.commandline import parse_args
from crashkill.failure import Failure

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TOOLS)
TOOL = os.path.join(TOOLS, "crash_kill.py")


def _pdeathsig() -> None:
    """Linux: SIGKILL this process when its parent dies."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def zygote_main(fd: int) -> None:
    """Fork one writer per request: lsm is imported once, here. Protocol on
    the SOCK_SEQPACKET socket ``fd``: request = JSON argv of the writer with
    two descriptors (report pipe, stderr); replies ``P pid`` at once and
    ``X pid exitcode`` when the writer ended. Exits at EOF."""
    _pdeathsig()
    sock = socket.socket(fileno=fd)
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 2)
        except OSError:
            return
        if not msg:
            return
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                report_fd, err_fd = fds
                os.dup2(err_fd, 1)
                os.dup2(err_fd, 2)
                os.close(err_fd)
                _pdeathsig()
                a = parse_args(json.loads(msg))
                a.report_fd = report_fd
                child_main(a)
            except BaseException as e:  # noqa: BLE001
                os.write(2, f"writer failed to start: {e!r}\n".encode())
            finally:
                os._exit(6)
        for x in fds:
            os.close(x)
        sock.send(b"P %d" % pid)
        _, status = os.waitpid(pid, 0)
        sock.send(b"X %d %d" % (pid, os.waitstatus_to_exitcode(status)))


class Zygote:
    """The driver's end of :func:`zygote_main`."""

    def __init__(self, workdir: str):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cmd = [sys.executable, TOOL, "--zygote-fd", str(theirs.fileno())]
        with open(os.path.join(workdir, "zygote-stderr.txt"), "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         pass_fds=(theirs.fileno(),), env=_child_env())
        theirs.close()

    def _recv(self, timeout: float | None) -> list[str]:
        self.sock.settimeout(timeout)
        try:
            msg = self.sock.recv(256)
        except TimeoutError:
            return []
        if not msg:
            raise Failure(f"the zygote process died (exit {self.proc.wait()}); see zygote-stderr.txt")
        return msg.decode().split()

    def spawn(self, argv: list[str], fds: list[int]) -> int:
        socket.send_fds(self.sock, [json.dumps(argv).encode()], fds)
        kind, pid = self._recv(60)
        assert kind == "P", kind
        return int(pid)

    def exited(self, pid: int, timeout: float | None) -> int | None:
        """The writer's exit code (negative: killed by that signal), or
        None if it did not end within ``timeout``."""
        msg = self._recv(timeout)
        if not msg:
            return None
        assert msg[0] == "X" and int(msg[1]) == pid, msg
        return int(msg[2])

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
