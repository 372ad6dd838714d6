#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of what peers and users hand MobiEye.

    scripts/fuzz_atheris.py TARGET [libFuzzer flags]     e.g. messages -runs=10000
    scripts/fuzz_atheris.py --list

Targets: messages (data channel), payloads (MQTT, through the dashboard's store), sdp (offer
checks, candidate filter, aiortc's SDP parser), config (YAML files), cli (argv). Properties as in
tests/fuzz/: only the documented refusals, and consistent answers; -timeout catches hangs.

Seeds and what libFuzzer learns go to artifacts/atheris/corpus/TARGET, crashes to
artifacts/atheris/ (both git-ignored). Problems already reported by an xfail test in tests/fuzz/
are counted on stderr ("known: ...") instead of stopping the run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import atheris  # type: ignore[import-untyped]
from pydantic import BaseModel

os.environ.setdefault("YOLO_OFFLINE", "1")  # nothing here loads a model; keep imports quiet
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ARTIFACTS = ROOT / "artifacts" / "atheris"
NAMES = ("messages", "payloads", "sdp", "config", "cli")  # the targets, in TARGETS below

if __name__ == "__main__" and sys.argv[1:] == ["--list"]:
    print("\n".join(NAMES))  # before the (slow, chatty) instrumented imports
    sys.exit(0)

with atheris.instrument_imports(include=["mobieye", "cloud_worker", "aiortc.sdp", "yaml"]):
    from aiortc.sdp import SessionDescription

    from cloud_worker.offers import check_sdp
    from mobieye.cli import build_parser, overrides_from
    from mobieye.config import load_settings
    from mobieye.dashboard.store import FleetStore
    from mobieye.errors import ConfigError, MessageError
    from mobieye.fleet import topics
    from mobieye.fleet.errors import PayloadError
    from mobieye.fleet.payloads import (
        Command,
        ObjectEvent,
        StreamState,
        StreamStats,
        WorkerState,
        parse_payload,
    )
    from mobieye.messages import encode, parse_message
    from mobieye.webrtc.ice import filter_sdp_candidates

_known_seen: set[str] = set()


def known(what: str) -> None:
    """A problem an xfail test in tests/fuzz/ already reports: say it once, go on."""
    if what not in _known_seen:
        _known_seen.add(what)
        print(f"known: {what}", file=sys.stderr)


# -- targets -----------------------------------------------------------------------------------


def fuzz_messages(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except MessageError as exc:
        assert str(exc).startswith(("bad message: ", "message of ")), str(exc)
        return
    again = parse_message(encode(msg))  # what was accepted survives the sender's encoding
    assert json.loads(encode(again)) == json.loads(encode(msg))


_MODELS: list[type[BaseModel]] = [WorkerState, StreamStats, StreamState, ObjectEvent, Command]
_TOPICS = [
    topics.worker_state("mobieye", "w1"),
    topics.stream_stats("mobieye", "s1"),
    topics.stream_state("mobieye", "s1"),
    topics.events("mobieye"),
    topics.stream_set("mobieye", "s1"),
    "mobieye/streams/s2/stats",
    "other/x",
]
_STORE = FleetStore("mobieye", max_events=5, max_points=5, max_timeline=5)


def fuzz_payloads(data: bytes) -> None:
    # Byte 0 picks the topic, byte 1 the model, the rest is the payload (as the seeds are made).
    if len(data) < 2:
        return
    topic = _TOPICS[data[0] % len(_TOPICS)]
    model = _MODELS[data[1] % len(_MODELS)]
    payload = data[2:]
    try:
        parse_payload(model, payload, topic)
    except PayloadError as exc:
        assert str(exc).startswith(f"bad {model.__name__} payload on {topic}: "), str(exc)
        assert exc.problems
    # The store is long-lived on purpose: messages meet earlier ones, as on a real dashboard.
    assert _STORE.on_message(topic, payload) in (True, False)
    _STORE.workers()
    _STORE.streams()
    _STORE.events(limit=3)
    for sid in ("s1", "s2"):
        _STORE.stream(sid)
        _STORE.series(sid)
        _STORE.timeline(sid)


def fuzz_sdp(data: bytes) -> None:
    sdp = data.decode("utf-8", "replace")
    problem = check_sdp(sdp)
    assert problem is None or problem.strip()
    for loopback_only in (True, False):
        kept = filter_sdp_candidates(sdp, loopback_only)
        try:
            parsed = SessionDescription.parse(kept)
        except Exception:  # the worker answers 400 "SDP rejected" for anything aiortc refuses
            continue
        for media in parsed.media:
            for c in media.ice_candidates:
                if c.ip.lower().rstrip(".").endswith(".local"):
                    known("filter_sdp_candidates misses 'a=candidate: ' (blank after colon)")
        if problem is None and loopback_only:
            kinds = [m.kind for m in parsed.media]
            if kinds.count("video") != 1 or set(kinds) - {"video", "application"}:
                if len(sdp.splitlines()) != len(sdp.replace("\r\n", "\n").split("\n")) - 1:
                    known("check_sdp counts sections on \\n only (aiortc: splitlines)")
                else:
                    raise AssertionError(f"check_sdp passed what aiortc reads as {kinds}")


# One fixed place (libFuzzer ends the process without Python's cleanup, so no temp dirs).
_WORKDIR = ARTIFACTS / "work"
_WORKDIR.mkdir(parents=True, exist_ok=True)


def fuzz_config(data: bytes) -> None:
    path = _WORKDIR / "config.yaml"
    path.write_bytes(data)
    try:
        load_settings(path)
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith(("bad configuration: ", f"config file {path}")), text
        if len(text) > 4 * len(data) + 2000:
            known("config errors repeat every aliased input (repr)")
    except UnicodeDecodeError:
        known("a config file that is not UTF-8 raises UnicodeDecodeError")
    except RecursionError:
        known("deeply nested YAML raises RecursionError")
    except AttributeError as exc:
        if "has no attribute 'lower'" not in str(exc):
            raise
        known("a non-string top-level YAML key raises AttributeError")


_PARSER = build_parser()


def fuzz_cli(data: bytes) -> None:
    argv = [a for a in data.decode("utf-8", "replace").split("\x00")]
    if argv and argv[0] == "":
        argv = argv[1:]
    if any("config" in a for a in argv):
        return  # a path from the input could name any file (/dev/zero): config has its target
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            args = _PARSER.parse_args(argv)
        except SystemExit as exc:
            assert exc.code in (0, 2), exc.code
            assert exc.code == 0 or "error: " in err.getvalue()
            return
    try:
        load_settings(None, overrides_from(args))
    except ConfigError as exc:
        assert str(exc).startswith("bad configuration: "), str(exc)


# -- seeds -------------------------------------------------------------------------------------


def _seeds(target: str) -> list[bytes]:
    if target == "messages":
        return [
            b'{"type": "hello", "stream_id": "s1"}',
            b'{"type": "latency", "samples_ms": [1.5, 2]}',
            b'{"type": "control", "model": "m", "keyframe_interval": 4}',
            b'{"type": "stats", "models": [], "queue_ms": 1, "streams": 1}',
        ]
    if target == "payloads":
        return [
            b"\x00\x00"
            + WorkerState(id="w1", status="online", url="http://127.0.0.1:8000").to_bytes(),
            b"\x01\x01" + StreamStats(stream="s1", worker="w1", fps=25).to_bytes(),
            b"\x04\x04" + Command(sla_ms=100).to_bytes(),
        ]
    if target == "sdp":
        sys.path.insert(0, str(ROOT))
        from tests.fuzz.test_sdp import OFFER

        return [OFFER.encode()]
    if target == "config":
        return [
            b"detector:\n  imgsz: 320\nworker:\n  port: 8001\n",
            b"mqtt:\n  broker: mqtt://h:1\n",
        ]
    return [b"worker\x00--port\x008001", b"edge\x00--fps\x0015\x00--source\x00x.mp4"]


TARGETS: dict[str, Callable[[bytes], None]] = {
    "messages": fuzz_messages,
    "payloads": fuzz_payloads,
    "sdp": fuzz_sdp,
    "config": fuzz_config,
    "cli": fuzz_cli,
}


assert tuple(TARGETS) == NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--list", action="store_true", help="print the targets (alone)")
    ours, libfuzzer = parser.parse_known_args()
    corpus = ARTIFACTS / "corpus" / ours.target
    if not corpus.is_dir():
        corpus.mkdir(parents=True)
        for i, seed in enumerate(_seeds(ours.target)):
            (corpus / f"seed-{i}").write_bytes(seed)
    flags = [f"-artifact_prefix={ARTIFACTS}/{ours.target}-", "-timeout=10", *libfuzzer]
    atheris.Setup([sys.argv[0], *flags, str(corpus)], TARGETS[ours.target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
