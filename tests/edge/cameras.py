"""Real camera servers for the live-source tests, on 127.0.0.1, each in its own process.

- :class:`MjpegCamera`: ffmpeg serving a clip as MJPEG over HTTP to exactly one client, as
  cheap IP cameras and phone apps do: it refuses a second connection and exits when its
  client leaves.
- :class:`RtspCamera`: GStreamer's RTSP server (run by the system Python, where Debian's
  ``gi`` bindings live) serving a live H.264 test pattern.

Both can be killed and started again on the same port, which is how the tests make a camera
drop. A missing tool fails the test (it is not skipped) with the command that installs it.
"""

from __future__ import annotations

import functools
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Self

import psutil
import pytest

from tests.realparts import TAG

SYSTEM_PYTHON = "/usr/bin/python3"
START_TIMEOUT_S = 10.0
INSTALL = "scripts/install-system-deps.sh (as root), or apt-get install -y"

# Run by the system Python: Debian's GStreamer bindings are not in the project's venv.
RTSP_SERVER = """
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
port, width, height, fps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    "( videotestsrc is-live=true pattern=ball"
    f" ! video/x-raw,width={width},height={height},framerate={fps}/1"
    f" ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps}"
    " ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/cam", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
print("ready", flush=True)
GLib.MainLoop().run()
"""
RTSP_ELEMENTS = ("videotestsrc", "x264enc", "rtph264pay")
RTSP_CHECK = f"""
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in {RTSP_ELEMENTS!r} if Gst.ElementFactory.find(e) is None]
if missing:
    raise SystemExit("no GStreamer element " + ", ".join(missing))
"""
RTSP_PACKAGES = ("python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
                 "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly")  # fmt: skip


def _fail(part: str, what: str, packages: str) -> None:
    pytest.fail(f"{TAG}{part}] needs {what}: {INSTALL} {packages}", pytrace=False)


def need_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        _fail("ffmpeg", "the ffmpeg command", "ffmpeg")


@functools.cache
def _rtsp_problem() -> str:
    if not Path(SYSTEM_PYTHON).is_file():
        return f"no {SYSTEM_PYTHON}"
    r = subprocess.run([SYSTEM_PYTHON, "-c", RTSP_CHECK], capture_output=True, text=True)
    if r.returncode == 0:
        return ""
    lines = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()
    return lines[-1]


def need_rtsp_server() -> None:
    problem = _rtsp_problem()
    if problem:
        _fail("gst-rtsp-server", f"GStreamer's RTSP server for {SYSTEM_PYTHON} ({problem})",
              RTSP_PACKAGES)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Camera:
    """One server process at a time on a fixed port; start() returns once it is serving."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self, proc: subprocess.Popen[bytes]) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        self.kill()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (kept as long as the process)
        self.proc = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log
        )
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready(self.proc):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self._command()[0]} did not start: {self.output()}")
            time.sleep(0.02)

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """The camera dies at once, as on a power cut: its clients see the connection reset."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class MjpegCamera(_Camera):
    """``ffmpeg -listen 1``: one client, then it exits. ``size`` rescales the clip."""

    def __init__(self, clip: Path, port: int | None = None) -> None:
        super().__init__(port)
        self.clip = clip
        self.size: tuple[int, int] | None = None
        self.url = f"http://127.0.0.1:{self.port}/cam.mjpg"

    def _command(self) -> list[str]:
        scale = ["-vf", f"scale={self.size[0]}:{self.size[1]}"] if self.size else []
        return ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
                "-i", str(self.clip), *scale, "-f", "mpjpeg", "-q:v", "5", "-listen", "1",
                self.url]  # fmt: skip

    def _ready(self, proc: subprocess.Popen[bytes]) -> bool:
        # Probing the port with a connection would use up the one client it serves.
        try:
            conns = psutil.Process(proc.pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in conns)


class RtspCamera(_Camera):
    """GStreamer's RTSP server with a live test pattern at ``rtsp://127.0.0.1:PORT/cam``."""

    def __init__(
        self, port: int | None = None, size: tuple[int, int] = (320, 240), fps: int = 15
    ) -> None:
        super().__init__(port)
        self.size, self.fps = size, fps

    def url(self, userinfo: str = "") -> str:
        return f"rtsp://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}/cam"

    def _command(self) -> list[str]:
        return [SYSTEM_PYTHON, "-c", RTSP_SERVER, str(self.port), str(self.size[0]),
                str(self.size[1]), str(self.fps)]  # fmt: skip

    def _ready(self, proc: subprocess.Popen[bytes]) -> bool:
        assert proc.stdout is not None
        if not select.select([proc.stdout], [], [], 0.1)[0]:
            return False
        return proc.stdout.readline().startswith(b"ready")
