"""How fast each rung runs on this machine.

:func:`profile_model` / :func:`profile_ladder` time ``UltralyticsDetector.detect([frame])`` on
real 640x480 frames after warm-up; :class:`ProfileCache` keeps the figures per file, input size,
thread count and machine so a ladder is measured once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mobieye import runtime
from mobieye.accuracy import F1Score, match_counts
from mobieye.config import DetectorConfig, LadderModel
from mobieye.detections import Detections
from mobieye.detector import UltralyticsDetector
from mobieye.errors import ModelError, SourceError
from mobieye.models.runtimes import F1_TOLERANCE, NATIVE, RUNTIMES, Runtime
from mobieye.stats import percentile

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]

DEFAULT_CLIP = Path("videos") / "TUD-Stadtmitte.mp4"
DEFAULT_REPEATS = 50
DEFAULT_FRAMES = 60
WARMUP_CALLS = 3
CACHE_VERSION = 2  # 2: one profile per runtime, with its F1 against the FP32 model


def machine_id() -> str:
    """CPU model and core count: what detector timings depend on and a cache must not mix."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if not cpu:
        import platform

        cpu = platform.processor() or platform.machine() or "unknown CPU"
    return f"{cpu}, {os.cpu_count()} cores"


@dataclass(frozen=True)
class ModelProfile:
    """Latency of ``detect([frame])`` for one rung on 640x480 frames, in milliseconds."""

    label: str
    path: str
    imgsz: int
    accuracy: float
    mean_ms: float
    std_ms: float
    p95_ms: float
    samples: int
    threads: int
    machine: str
    runtime: str = NATIVE
    # F1 of this runtime's boxes against the FP32 (onnxruntime) model's on the same frames.
    f1_vs_fp32: float = 1.0

    @property
    def within_tolerance(self) -> bool:
        """Close enough to FP32 to be chosen by default."""
        return self.f1_vs_fp32 >= 1.0 - F1_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelProfile:
        """Raise ValueError/TypeError/KeyError on anything that is not a profile."""
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = data[f.name]
            kind = {"str": str, "int": int, "float": float}[str(f.type)]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise TypeError(f"{f.name}: expected {kind.__name__}, got {value!r}")
            kwargs[f.name] = value
        return cls(**kwargs)


def load_frames(video: Path | str, count: int = DEFAULT_FRAMES) -> list[Image]:
    """The first ``count`` frames of a clip (the clip's own size; the default one is 640x480)."""
    import cv2

    path = Path(video)
    if not path.is_file():
        raise SourceError(f"video {path} does not exist (pass --video with an existing clip)")
    cap = cv2.VideoCapture(str(path))
    frames: list[Image] = []
    try:
        while len(frames) < count:
            ok, image = cap.read()
            if not ok:
                break
            frames.append(np.ascontiguousarray(image, dtype=np.uint8))
    finally:
        cap.release()
    if not frames:
        raise SourceError(f"cannot read any frame from video {path}")
    return frames


def default_video() -> Path:
    return runtime.default_data_dir() / DEFAULT_CLIP


def profile_model(
    model: LadderModel,
    threads: int,
    frames: Sequence[Image],
    repeats: int,
    runtime: Runtime = NATIVE,
    reference: Sequence[Detections] | None = None,
) -> tuple[ModelProfile, list[Detections]]:
    """Load the rung on ``runtime``, detect every frame once (scored against ``reference``, the
    FP32 model's boxes on the same frames), then time ``repeats`` calls (cycling frames).
    Returns the profile and the boxes. ModelError when the runtime can't serve the model."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if not frames:
        raise ValueError("no frames to profile on")
    detector = UltralyticsDetector(
        DetectorConfig(model=model.path, imgsz=model.imgsz, threads=threads, runtime=runtime)
    )
    detector.load()
    if detector.runtime != runtime and runtime != NATIVE:
        raise ModelError(f"{model.label}: runtime {runtime} is not available (see the warning)")
    boxes = [detector.detect([f])[0] for f in frames]
    f1 = 1.0 if reference is None else agreement(boxes, reference)
    # load() warms up on blank frames; a few real ones settle allocations for this frame size.
    for i in range(WARMUP_CALLS):
        detector.detect([frames[i % len(frames)]])
    times = np.empty(repeats, dtype=np.float64)
    for i in range(repeats):
        frame = frames[i % len(frames)]
        started = time.perf_counter()
        detector.detect([frame])
        times[i] = (time.perf_counter() - started) * 1000
    return ModelProfile(
        label=model.label,
        path=model.path,
        imgsz=model.imgsz,
        accuracy=model.accuracy,
        mean_ms=round(float(times.mean()), 3),
        std_ms=round(float(times.std(ddof=1)) if repeats > 1 else 0.0, 3),
        p95_ms=round(percentile(times, 95) or 0.0, 3),
        samples=repeats,
        threads=threads,
        machine=machine_id(),
        runtime=runtime,
        f1_vs_fp32=round(f1, 4),
    ), boxes


def agreement(boxes: Sequence[Detections], reference: Sequence[Detections]) -> float:
    """F1 of ``boxes`` against ``reference`` frame by frame (IoU 0.5, same class)."""
    score = F1Score()
    for got, want in zip(boxes, reference, strict=True):
        score.add(match_counts(got.xyxy, got.class_id, want.xyxy, want.class_id))
    return score.f1


def _file_identity(path_s: str) -> tuple[str, int, int] | None:
    """(absolute path, size, mtime ns) of a model file or OpenVINO dir; None if not local."""
    path = Path(path_s).expanduser()
    try:
        if path.is_dir():
            stats = [p.stat() for p in sorted(path.rglob("*")) if p.is_file()]
            size = sum(s.st_size for s in stats)
            mtime = max((s.st_mtime_ns for s in stats), default=path.stat().st_mtime_ns)
        else:
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        return None
    return str(path.resolve()), size, mtime


class ProfileCache:
    """Profiles in a JSON file, keyed by (absolute path, size, mtime, imgsz, threads, machine).

    A changed model file, another input size, thread count or CPU is a miss. Stock model names
    (not local files) are never cached. Writes are atomic; a corrupt file is logged and treated as
    empty (the next put replaces it).
    """

    def __init__(self, path: Path | None = None, machine: str | None = None) -> None:
        self.path = path or runtime.CACHE_DIR / "profiles.json"
        self.machine = machine or machine_id()
        self._warned = False

    def _key(
        self, model_path: str, imgsz: int, threads: int, machine: str, runtime: str
    ) -> str | None:
        ident = _file_identity(model_path)
        if ident is None:
            return None
        return json.dumps([*ident, imgsz, threads, machine, runtime])

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            self._warn(f"cannot read it: {exc.strerror}")
            return {}
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
                raise ValueError(f"not a version {CACHE_VERSION} profile cache")
            entries = data["profiles"]
            if not isinstance(entries, dict):
                raise ValueError("'profiles' is not a mapping")
        except (ValueError, KeyError) as exc:
            self._warn(str(exc))
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, dict)}

    def _warn(self, why: str) -> None:
        if not self._warned:
            log.warning("ignoring profile cache %s: %s", self.path, why)
            self._warned = True

    def get(self, model: LadderModel, threads: int, runtime: str = NATIVE) -> ModelProfile | None:
        key = self._key(model.path, model.imgsz, threads, self.machine, runtime)
        if key is None:
            return None
        entry = self._read().get(key)
        if entry is None:
            return None
        try:
            cached = ModelProfile.from_dict(entry)
        except (KeyError, TypeError, ValueError) as exc:
            self._warn(f"bad entry for {model.label}: {exc!r}")
            return None
        # Timings belong to the file; the name and declared accuracy are today's ladder's.
        return dataclasses.replace(
            cached, label=model.label, path=model.path, accuracy=model.accuracy
        )

    def reusable(
        self, model: LadderModel, threads: int, repeats: int, runtime: str = NATIVE
    ) -> ModelProfile | None:
        """The cached profile if it has at least ``repeats`` samples (else measure again)."""
        cached = self.get(model, threads, runtime)
        return cached if cached is not None and cached.samples >= repeats else None

    def chosen(self, model: LadderModel, threads: int) -> ModelProfile | None:
        """The fastest runtime measured for this file, size and thread count on this machine
        whose boxes stay within tolerance of FP32; None when nothing is cached."""
        found = [p for r in RUNTIMES if (p := self.get(model, threads, r)) is not None]
        return choose_runtime(found)

    def put(self, profile: ModelProfile) -> None:
        key = self._key(
            profile.path, profile.imgsz, profile.threads, profile.machine, profile.runtime
        )
        if key is None:
            return
        entries = self._read()  # re-read: another process may have added profiles meanwhile
        entries[key] = profile.to_dict()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".profiles-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": CACHE_VERSION, "profiles": entries}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def choose_runtime(profiles: Sequence[ModelProfile]) -> ModelProfile | None:
    """The fastest (mean ms) profile within tolerance of FP32; FP32 itself always qualifies."""
    fit = [p for p in profiles if p.within_tolerance]
    return min(fit, key=lambda p: p.mean_ms) if fit else None


def profile_ladder(
    ladder: Sequence[LadderModel],
    threads: int,
    video: Path | str | None,
    cache: ProfileCache,
    refresh: bool = False,
    progress: Callable[[str], None] | None = None,
    repeats: int = DEFAULT_REPEATS,
    runtimes: Sequence[Runtime] = (NATIVE,),
) -> list[ModelProfile]:
    """Profile every rung on every runtime (ladder order), reusing cached figures unless
    ``refresh``. FP32 onnxruntime always runs first: its boxes are what the others are scored
    against. A runtime that can't serve a rung is reported and skipped.

    A cached profile is reused only if it has at least ``repeats`` samples, so asking for more
    samples measures again. Frames are read only if something needs measuring.
    """
    say = progress or (lambda _msg: None)
    order = [NATIVE, *[r for r in runtimes if r != NATIVE]]
    frames: list[Image] | None = None
    out: list[ModelProfile] = []
    for i, model in enumerate(ladder, 1):
        reference: list[Detections] | None = None
        for rt in order:
            tag = f"[{i}/{len(ladder)}] {model.label} on {rt}"
            cached = None if refresh else cache.reusable(model, threads, repeats, rt)
            if cached is not None:
                say(f"{tag}: {_summary(cached)} (cached)")
                out.append(cached)
                continue
            if frames is None:
                frames = load_frames(video or default_video())
            if reference is None and rt != NATIVE:
                say(f"{tag}: FP32 reference boxes first")
                _, reference = profile_model(model, threads, frames, 1)
            say(f"{tag}: profiling {repeats} calls on {threads} thread(s)")
            try:
                profile, boxes = profile_model(model, threads, frames, repeats, rt, reference)
            except ModelError as exc:
                say(f"{tag}: skipped ({exc})")
                continue
            if rt == NATIVE:
                reference = boxes
            cache.put(profile)
            say(f"{tag}: {_summary(profile)}")
            out.append(profile)
    return out


def _summary(p: ModelProfile) -> str:
    return (
        f"mean {p.mean_ms:.1f} ms, std {p.std_ms:.1f} ms, p95 {p.p95_ms:.1f} ms ({p.samples} "
        f"calls), F1 vs FP32 {p.f1_vs_fp32:.3f}"
    )


def format_profiles(profiles: Sequence[ModelProfile], cached: Collection[str] = ()) -> str:
    """A Markdown table, one row per rung and runtime; ``cached`` holds "label/runtime" keys
    of rows read from the cache. The chosen runtime of each rung is marked "chosen"."""
    chosen = {}
    for label in dict.fromkeys(p.label for p in profiles):
        best = choose_runtime([p for p in profiles if p.label == label])
        if best is not None:
            chosen[label] = best.runtime
    base = {p.label: p.mean_ms for p in profiles if p.runtime == NATIVE}
    lines = [
        "| model | runtime | imgsz | accuracy | mean ms | p95 ms | vs FP32 | F1 vs FP32 "
        "| chosen | calls | threads |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in profiles:
        mark = " (cached)" if f"{p.label}/{p.runtime}" in cached else ""
        speed = f"{base[p.label] / p.mean_ms:.2f}x" if p.label in base and p.mean_ms else "-"
        pick = "yes" if chosen.get(p.label) == p.runtime else ""
        lines.append(
            f"| {p.label}{mark} | {p.runtime} | {p.imgsz} | {p.accuracy:g} | {p.mean_ms:.2f} "
            f"| {p.p95_ms:.2f} | {speed} | {p.f1_vs_fp32:.3f} | {pick} | {p.samples} "
            f"| {p.threads} |"
        )
    return "\n".join(lines)
