"""Start ``roborl robot serve`` as a real subprocess (tests, bench, digital-twin scripts).

``with ServerProcess("sim:roborl/Reach-v0", hz=20) as srv: env = make_robot_env(srv.url)``
picks a free loopback port, waits (bounded) until the server answers ``ping`` and
terminates it (then kills it) on exit. Its stdout/stderr go to temporary files, not pipes: a
pipe nobody reads fills up after ~64 KB and then blocks the server's next log line, and with
it the control loop.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from roborl.errors import UsageError
from roborl.robots.transport import Channel, PeerUnavailable


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the usual bind-to-0 trick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m roborl.cli robot serve ...`` on 127.0.0.1 as a context manager."""

    def __init__(self, backend: str, *, port: int | None = None, hz: float | None = None, token: str | None = None,
                 sim_clock: str = "realtime", extra: list[str] | None = None, ready_timeout_s: float = 60.0,
                 env: dict[str, str] | None = None) -> None:
        self.backend, self.hz, self.token, self.sim_clock = backend, hz, token, sim_clock
        self.port = port or free_port()
        self.extra = list(extra or [])
        self.ready_timeout_s = ready_timeout_s
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.stdout = self.stderr = ""
        self._out: Any = None
        self._err: Any = None

    @property
    def url(self) -> str:
        return f"robot://127.0.0.1:{self.port}"

    def start(self) -> "ServerProcess":
        cmd = [sys.executable, "-m", "roborl.cli", "robot", "serve", "--backend", self.backend,
               "--port", str(self.port), "--sim-clock", self.sim_clock, *self.extra]
        if self.hz:
            cmd += ["--hz", str(self.hz)]
        if self.token:
            cmd += ["--token", self.token]
        env = dict(os.environ, **(self.env or {}))
        self._out = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        self._err = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, text=True, env=env)
        deadline = time.monotonic() + self.ready_timeout_s
        with Channel("127.0.0.1", self.port, token=self.token, timeout_s=0.5, name="robot server") as ch:
            while True:
                if self.proc.poll() is not None:
                    self.stop()
                    raise UsageError(f"robot server exited with code {self.proc.returncode}: "
                                     f"{self.stderr.strip().splitlines()[-1:] or ''}")
                try:
                    ch.call("ping", timeout_s=0.5)
                    return self
                except PeerUnavailable:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise UsageError(f"robot server on port {self.port} not ready within "
                                         f"{self.ready_timeout_s:g} s") from None

    def kill(self) -> None:
        """SIGKILL: the server vanishes without a goodbye (what a crash looks like to clients)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM (clean stop: hold, print stats), then SIGKILL after ``timeout_s``; collects output."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.stdout, self.stderr = self._read(self._out), self._read(self._err)
        return self.proc.returncode

    @staticmethod
    def _read(f: Any) -> str:
        if f is None:
            return ""
        f.seek(0)
        return f.read()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
