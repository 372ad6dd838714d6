"""Thin wrappers around iproute2 for named network namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

NETNS_DIR = "/run/netns"
# `ip` lives in sbin, which a non-login root shell may lack on its PATH.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)


def ip_binary() -> str | None:
    """Path of the iproute2 ``ip`` command, or None when it is not installed."""
    return shutil.which("ip", path=_SEARCH_PATH)


def _ip() -> str:
    path = ip_binary()
    if path is None:
        raise RuntimeError("the `ip` command (iproute2) is not installed")
    return path


def run_ip(*args: str, namespace: str | None = None) -> str:
    """Run ``ip [-n NS] ARGS``; RuntimeError with ip's own message on failure."""
    argv = [_ip(), *(("-n", namespace) if namespace else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def exec_argv(namespace: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` inside ``namespace``.

    ``ip netns exec`` execs the command itself, so the Popen pid is the command's own pid.
    """
    return [_ip(), "netns", "exec", namespace, *argv]


def add(namespace: str) -> None:
    run_ip("netns", "add", namespace)


def delete(namespace: str) -> None:
    run_ip("netns", "delete", namespace)


def exists(namespace: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, namespace))


def names() -> list[str]:
    """Every named namespace (those under /run/netns)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def pids(namespace: str) -> list[int]:
    """Pids of the processes running inside ``namespace``."""
    return [int(p) for p in run_ip("netns", "pids", namespace).split()]


def sysctl(namespace: str, key: str, value: str) -> bool:
    """Set a sysctl inside ``namespace``; False when the key does not exist there."""
    path = "/proc/sys/" + key.replace(".", "/")
    # `ip netns exec` remounts /proc/sys for the namespace; a tiny shell write avoids needing
    # the sysctl binary.
    done = subprocess.run(
        exec_argv(namespace, ["sh", "-c", f"echo {value} > {path}"]),
        capture_output=True,
        check=False,
    )
    return done.returncode == 0
