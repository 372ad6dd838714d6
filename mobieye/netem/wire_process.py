"""Parent-side handle on the relay helper process (``python -m mobieye.netem.wire``).

Kept apart from ``wire`` so that running the helper with ``-m`` does not import its own
module twice through the package ``__init__``.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobieye.netem.profiles import LinkProfile
from mobieye.netem.shaper import DirectionStats

_READY_TIMEOUT_S = 10.0
_REPLY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class WireStats:
    """Counters of both directions: a->b is from the first TAP to the second."""

    a_to_b: DirectionStats
    b_to_a: DirectionStats


def _parse_stats(payload: dict[str, Any]) -> WireStats:
    return WireStats(
        a_to_b=DirectionStats(**payload["a_to_b"]), b_to_a=DirectionStats(**payload["b_to_a"])
    )


def relay_argv(
    fd_a: int, fd_b: int, profile: LinkProfile, seed: int, realtime: bool = True
) -> list[str]:
    """The command line that runs the relay helper on two inherited TAP fds."""
    argv = [
        sys.executable,
        "-m",
        "mobieye.netem.wire",
        f"--fd-a={fd_a}",
        f"--fd-b={fd_b}",
        f"--name={profile.name}",
        f"--delay-ms={profile.delay_ms}",
        f"--jitter-ms={profile.jitter_ms}",
        f"--loss={profile.loss}",
        f"--queue-ms={profile.queue_ms}",
        f"--seed={seed}",
    ]
    if profile.rate_kbps is not None:
        argv.append(f"--rate-kbps={profile.rate_kbps}")
    if not realtime:
        argv.append("--no-realtime")
    return argv


class WireProcess:
    """A running relay helper that owns two TAP fds.

    The constructor hands the fds to the helper and closes the caller's copies (also when it
    fails), so the TAPs live exactly as long as the helper.
    """

    def __init__(
        self, fd_a: int, fd_b: int, profile: LinkProfile, seed: int = 0, realtime: bool = True
    ) -> None:
        env = dict(os.environ)
        # The helper imports this package; make that work even when it is not installed.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            self._proc = subprocess.Popen(
                relay_argv(fd_a, fd_b, profile, seed, realtime),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                pass_fds=(fd_a, fd_b),
                env=env,
            )
        finally:
            os.close(fd_a)
            os.close(fd_b)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin
        self._stdout_fd = self._proc.stdout.fileno()
        self._buffer = b""
        self._lock = threading.Lock()
        self._final: WireStats | None = None
        try:
            reply = self._read_reply(_READY_TIMEOUT_S)
            if not reply.get("ready"):
                raise RuntimeError(f"netem relay sent {reply!r} instead of ready")
        except BaseException:
            self._kill()
            raise

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def stats(self) -> WireStats:
        """Current counters (the final ones once the relay has stopped)."""
        with self._lock:
            if self._final is not None:
                return self._final
            if not self.alive():
                raise RuntimeError(f"netem relay exited with status {self._proc.returncode}")
            self._stdin.write(b"s")
            self._stdin.flush()
            return _parse_stats(self._read_reply(_REPLY_TIMEOUT_S))

    def cut(self, cut: bool) -> None:
        """Cut the wire (every frame either way is lost) or restore it."""
        with self._lock:
            if not self.alive():
                raise RuntimeError(f"netem relay exited with status {self._proc.returncode}")
            self._stdin.write(b"c" if cut else b"r")
            self._stdin.flush()
            reply = self._read_reply(_REPLY_TIMEOUT_S)
            if reply.get("cut") is not cut:
                raise RuntimeError(f"netem relay answered {reply!r} to a cut")

    def close(self) -> WireStats | None:
        """Stop the relay (which removes both TAPs); its final counters if it gave them."""
        with self._lock:
            if self._final is not None or self._proc.returncode is not None:
                return self._final
            try:
                self._stdin.close()
                self._final = _parse_stats(self._read_reply(_REPLY_TIMEOUT_S))
            except (OSError, RuntimeError, TimeoutError, ValueError, KeyError, TypeError):
                pass  # a relay that cannot report is still stopped below
            try:
                self._proc.wait(timeout=_REPLY_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._kill()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            return self._final

    def _kill(self) -> None:
        self._proc.kill()
        self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()

    def _read_reply(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("netem relay did not answer")
            readable, _, _ = select.select([self._stdout_fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(self._stdout_fd, 65536)
            if not chunk:
                raise RuntimeError(f"netem relay exited (status {self._proc.wait()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply
