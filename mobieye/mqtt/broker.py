"""Brokers MobiEye starts itself, both bound to 127.0.0.1 only.

- ``EmbeddedBroker``: amqtt in this process, for the single-machine demo when no broker is
  configured.
- ``MosquittoProcess``: a real Mosquitto in a subprocess with its own temporary config, for tests
  and the fleet test (restart and SIGKILL it to exercise reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from mobieye.mqtt.errors import BrokerError
from mobieye.runtime import free_port

log = logging.getLogger("mobieye.mqtt.broker")

LOOPBACK = "127.0.0.1"
MOSQUITTO = "/usr/sbin/mosquitto"


class EmbeddedBroker:
    """An amqtt broker in this event loop, listening on 127.0.0.1 only (amqtt's default is
    0.0.0.0), anonymous, no persistence and no ``$SYS`` tree."""

    def __init__(self) -> None:
        self._broker: Any = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise BrokerError("the embedded MQTT broker is not running")
        return f"mqtt://{LOOPBACK}:{self.port}"

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:``port`` (0: a free one) and return ``mqtt://127.0.0.1:PORT``."""
        if self._broker is not None:
            return self.url
        # Imported here: amqtt is heavy and only the demo needs it.
        from amqtt.broker import Broker  # type: ignore[import-untyped]

        for name in ("amqtt", "transitions"):
            # amqtt logs every connection at INFO; keep the demo's log readable unless the
            # user configured these loggers.
            lg = logging.getLogger(name)
            if lg.level == logging.NOTSET:
                lg.setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{LOOPBACK}:{port}"}},
            # Only anonymous auth: the defaults add a $SYS publisher and packet logging.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        try:
            broker = Broker(config)
            await broker.start()
        except Exception as exc:
            raise BrokerError(
                f"cannot start the embedded MQTT broker on port {port}: {exc}"
            ) from exc
        sockets = broker._servers["default"].instance.sockets
        addresses = [s.getsockname() for s in sockets]
        if not addresses or any(a[0] != LOOPBACK for a in addresses):
            await broker.shutdown()
            raise BrokerError(f"embedded MQTT broker bound {addresses}, not {LOOPBACK} only")
        self._broker = broker
        self.port = int(addresses[0][1])
        log.info("embedded MQTT broker listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        self.port = None
        if broker is not None:
            try:
                await broker.shutdown()
            except Exception:
                log.exception("embedded MQTT broker did not shut down cleanly")


class MosquittoProcess:
    """A Mosquitto broker in a subprocess on 127.0.0.1, configured from a temporary directory.

    Anonymous unless ``username`` and ``password`` are given (then a password file is made with
    ``mosquitto_passwd``); TLS (``mqtts://``) if ``certfile`` and ``keyfile`` are given. No
    persistence: a restart loses retained messages, as a broker that crashed might.
    """

    def __init__(
        self,
        port: int = 0,
        username: str | None = None,
        password: str | None = None,
        *,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        binary: str = MOSQUITTO,
    ) -> None:
        if (username is None) != (password is None):
            raise BrokerError("give Mosquitto both a username and a password, or neither")
        if (certfile is None) != (keyfile is None):
            raise BrokerError("give Mosquitto both a certfile and a keyfile, or neither")
        self.port = port
        self.username = username
        self.password = password
        self.certfile = certfile
        self.keyfile = keyfile
        self.binary = binary
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.certfile else "mqtt"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 5.0) -> str:
        """Start (if not running), wait until the port accepts, return the broker URL."""
        if self.running:
            return self.url
        if not os.access(self.binary, os.X_OK):
            raise BrokerError(f"Mosquitto not found at {self.binary} (apt-get install mosquitto)")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="mobieye-mosquitto-"))
        # A port picked here may be taken before Mosquitto binds it; pick again then.
        attempts = 3 if self.port == 0 else 1
        for attempt in range(attempts):
            if self.port == 0 or attempt:
                self.port = free_port()
            self._spawn()
            if self._wait_ready(timeout_s):
                log.info("Mosquitto (pid %s) listening on %s", self.pid, self.url)
                return self.url
            self._terminate(signal.SIGKILL)
        raise BrokerError(f"Mosquitto did not start on {self.url}: {self.log_text()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 5 s): clients see the connection close."""
        self._terminate(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a word."""
        self._terminate(signal.SIGKILL)

    def restart(self, timeout_s: float = 5.0) -> str:
        """Stop and start again on the same port."""
        self.stop()
        return self.start(timeout_s)

    def close(self) -> None:
        """Stop and remove the temporary directory."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log_text(self) -> str:
        if self._dir is None:
            return ""
        try:
            return (self._dir / "mosquitto.log").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> MosquittoProcess:
        """In async code: start (and later close) in a thread, never on the event loop."""
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    # -- internals -------------------------------------------------------------------------

    def _config(self, workdir: Path) -> str:
        lines = [
            f"listener {self.port} {LOOPBACK}",
            "persistence false",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # Run as root, Mosquitto switches to user 'mosquitto', who cannot read our files.
            lines.append("user root")
        if self.certfile is not None and self.keyfile is not None:
            lines += [f"certfile {Path(self.certfile).resolve()}"]
            lines += [f"keyfile {Path(self.keyfile).resolve()}"]
        if self.username is not None and self.password is not None:
            passwd = workdir / "passwd"
            tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            if not os.access(tool, os.X_OK):
                raise BrokerError("mosquitto_passwd not found; it makes Mosquitto's password file")
            done = subprocess.run(
                [tool, "-b", "-c", str(passwd), self.username, self.password],
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            )
            if done.returncode != 0:
                raise BrokerError(f"mosquitto_passwd failed: {done.stderr.strip()}")
            passwd.chmod(0o600)  # newer Mosquitto refuses password files others can read
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines += ["allow_anonymous true"]
        return "\n".join(lines) + "\n"

    def _spawn(self) -> None:
        assert self._dir is not None
        conf = self._dir / "mosquitto.conf"
        conf.write_text(self._config(self._dir))
        with open(self._dir / "mosquitto.log", "ab") as out:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
            )

    def _wait_ready(self, timeout_s: float) -> bool:
        # Blocking by design: MosquittoProcess is a synchronous helper (tests, fleet checks);
        # async callers use ``async with`` or run start()/restart() with asyncio.to_thread.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def _terminate(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
