"""The model ladder: which detectors there are, how accurate they claim to be, how fast they run.

- :func:`default_ladder` builds the ladder from the real models in the shared data directory.
- :func:`ladder_from_spec` parses ``PATH[@IMGSZ][=ACCURACY],...`` (least accurate first).
- :func:`profile_model` / :func:`profile_ladder` time ``UltralyticsDetector.detect([frame])`` on
  real 640x480 frames after warm-up; :class:`ProfileCache` keeps the figures per file, input size,
  thread count and machine so a ladder is measured once.
- :func:`export_model` turns a ``.pt`` into an ONNX or OpenVINO artefact (cached by content hash).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from mobieye import runtime
from mobieye.config import DetectorConfig, LadderModel, describe_validation_error
from mobieye.detector import STOCK_PREFIXES, UltralyticsDetector, resolve_model
from mobieye.errors import ConfigError, ModelError, SourceError

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
ExportFormat = Literal["onnx", "openvino"]

DEFAULT_CLIP = Path("videos") / "TUD-Stadtmitte.mp4"
DEFAULT_REPEATS = 50
DEFAULT_FRAMES = 20
WARMUP_CALLS = 3
CACHE_VERSION = 1


# --- the ladder ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Published:
    """A shared model's published COCO mAP, the input size it was published at, and the person
    AP50 measured on TUD-Stadtmitte at several sizes (PROVENANCE.md)."""

    map_coco: float
    reference_imgsz: int
    person_ap50: dict[int, float]


_PUBLISHED: dict[str, _Published] = {
    "yolox_nano_dynamic_ultralytics": _Published(25.8, 416, {320: 0.854, 416: 0.863, 640: 0.879}),
    "yolov5n_dynamic_ultralytics": _Published(28.0, 640, {320: 0.854, 480: 0.860, 640: 0.871}),
    "nanodet_m_320_ultralytics": _Published(20.6, 320, {320: 0.872}),
}

# Cheapest first, as PROVENANCE.md recommends.
_DEFAULT_RUNGS: tuple[tuple[str, str, int], ...] = (
    ("yolox_nano", "yolox_nano_dynamic_ultralytics", 320),
    ("yolox_nano", "yolox_nano_dynamic_ultralytics", 416),
    ("yolov5n", "yolov5n_dynamic_ultralytics", 480),
    ("yolov5n", "yolov5n_dynamic_ultralytics", 640),
)


def _interpolate(points: dict[int, float], x: int) -> float:
    xs = sorted(points)
    if x <= xs[0]:
        return points[xs[0]]
    if x >= xs[-1]:
        return points[xs[-1]]
    return float(np.interp(x, xs, [points[k] for k in xs]))


def published_accuracy(stem: str, imgsz: int) -> float | None:
    """The declared accuracy of a shared model at ``imgsz``, or None for an unknown model.

    Rule: the published COCO mAP holds at the size it was published at (YOLOX-Nano 416, YOLOv5n
    640); at another size it is scaled by the ratio of person AP50 on TUD-Stadtmitte at that size
    to the AP50 at the published size (linear in imgsz between measured sizes, flat beyond). The
    published number stays the anchor, and a larger input of the same model ranks higher.
    """
    pub = _PUBLISHED.get(stem)
    if pub is None:
        return None
    ratio = _interpolate(pub.person_ap50, imgsz) / _interpolate(
        pub.person_ap50, pub.reference_imgsz
    )
    return round(pub.map_coco * ratio, 2)


def default_ladder(data_dir: Path) -> list[LadderModel]:
    """yolox_nano@320 -> yolox_nano@416 -> yolov5n@480 -> yolov5n@640, those whose files exist.

    Accuracy: :func:`published_accuracy` (COCO mAP, scaled by input size).
    """
    ladder = []
    for short, stem, imgsz in _DEFAULT_RUNGS:
        path = data_dir / "models" / f"{stem}.onnx"
        accuracy = published_accuracy(stem, imgsz)
        if path.is_file() and accuracy is not None:
            ladder.append(
                LadderModel(path=str(path), imgsz=imgsz, accuracy=accuracy, name=f"{short}@{imgsz}")
            )
    return ladder


_ENTRY = re.compile(r"^(?P<path>.+?)(?:@(?P<imgsz>[^@=]*))?(?:=(?P<acc>[^@=]*))?$")


def _fixed_onnx_size(path: Path) -> int | None:
    """The square input size of an ONNX model with a fixed input shape, else None.

    ultralytics silently runs a fixed-shape model at its own size whatever imgsz says, so a rung
    claiming another size would be profiled and labelled wrongly.
    """
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return None
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        shape = session.get_inputs()[0].shape
    except Exception as exc:  # unloadable: the detector's load reports it properly later
        log.debug("cannot read the input shape of %s: %s", path, exc)
        return None
    if len(shape) == 4 and isinstance(shape[2], int) and shape[2] == shape[3]:
        return int(shape[2])
    return None


def ladder_from_spec(spec: str, allow_untrained: bool = False) -> list[LadderModel]:
    """Parse ``PATH[@IMGSZ][=ACCURACY],...``, least accurate first.

    Without declared accuracies each rung's accuracy is its 1-based position, so the given order is
    the ranking. Declare all or none; declared ones must not decrease along the ladder. A missing
    IMGSZ is the model's own size for a fixed-shape ONNX, else 416.
    """
    entries = [e.strip() for e in spec.split(",")]
    if not spec.strip():
        raise ConfigError("empty ladder: expected PATH[@IMGSZ][=ACCURACY],... (cheapest first)")
    if len(entries) > 100:
        raise ConfigError(f"ladder has {len(entries)} entries; at most 100 are supported")
    parsed: list[tuple[str, str, int, float | None]] = []
    for i, entry in enumerate(entries, 1):
        where = f"ladder entry {i} {entry!r}"
        m = _ENTRY.match(entry)
        if not entry or m is None:
            raise ConfigError(f"{where}: expected PATH[@IMGSZ][=ACCURACY] (empty entry?)")
        path_s, imgsz_s, acc_s = m.group("path"), m.group("imgsz"), m.group("acc")
        local = Path(path_s).expanduser()
        if not local.exists() and not local.name.lower().startswith(STOCK_PREFIXES):
            raise ModelError(f"{where}: model file {local} does not exist")
        try:
            ref = resolve_model(path_s, allow_untrained)
        except ModelError as exc:
            raise ModelError(f"{where}: {exc}") from exc
        fixed = _fixed_onnx_size(ref.path) if ref.path is not None else None
        if imgsz_s is None:
            imgsz = fixed or DetectorConfig().imgsz
        else:
            try:
                imgsz = int(imgsz_s)
            except ValueError:
                raise ConfigError(f"{where}: IMGSZ {imgsz_s!r} is not an integer") from None
            if fixed is not None and imgsz != fixed:
                raise ConfigError(
                    f"{where}: {Path(path_s).name} has a fixed {fixed}x{fixed} input; "
                    f"use @{fixed} (ultralytics would run it at {fixed} whatever imgsz says)"
                )
        accuracy: float | None = None
        if acc_s is not None:
            try:
                accuracy = float(acc_s)
            except ValueError:
                raise ConfigError(f"{where}: ACCURACY {acc_s!r} is not a number") from None
            if not math.isfinite(accuracy):
                raise ConfigError(f"{where}: ACCURACY must be a finite number")
        parsed.append((where, path_s, imgsz, accuracy))

    declared = [p[3] is not None for p in parsed]
    if any(declared) and not all(declared):
        missing = next(p[0] for p in parsed if p[3] is None)
        raise ConfigError(f"{missing}: declare ACCURACY for every ladder entry or for none")

    ladder: list[LadderModel] = []
    for rank, (where, path_s, imgsz, accuracy) in enumerate(parsed, 1):
        value = float(rank) if accuracy is None else accuracy
        if ladder and value < ladder[-1].accuracy:
            raise ConfigError(
                f"{where}: accuracy {value} is below the previous entry's "
                f"{ladder[-1].accuracy}; list the ladder least accurate first"
            )
        try:
            model = LadderModel(path=path_s, imgsz=imgsz, accuracy=value)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {describe_validation_error(exc)}") from None
        if any(m.label == model.label for m in ladder):
            raise ConfigError(f"{where}: {model.label} is already on the ladder")
        ladder.append(model)
    return ladder


# --- profiles -----------------------------------------------------------------------------------


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
    model: LadderModel, threads: int, frames: Sequence[Image], repeats: int
) -> ModelProfile:
    """Load the rung, warm it up on real frames, then time ``repeats`` calls (cycling frames)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if not frames:
        raise ValueError("no frames to profile on")
    detector = UltralyticsDetector(
        DetectorConfig(model=model.path, imgsz=model.imgsz, threads=threads)
    )
    detector.load()
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
        p95_ms=round(float(np.percentile(times, 95)), 3),
        samples=repeats,
        threads=threads,
        machine=machine_id(),
    )


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

    def _key(self, model_path: str, imgsz: int, threads: int, machine: str) -> str | None:
        ident = _file_identity(model_path)
        if ident is None:
            return None
        return json.dumps([*ident, imgsz, threads, machine])

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

    def get(self, model: LadderModel, threads: int) -> ModelProfile | None:
        key = self._key(model.path, model.imgsz, threads, self.machine)
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

    def reusable(self, model: LadderModel, threads: int, repeats: int) -> ModelProfile | None:
        """The cached profile if it has at least ``repeats`` samples (else measure again)."""
        cached = self.get(model, threads)
        return cached if cached is not None and cached.samples >= repeats else None

    def put(self, profile: ModelProfile) -> None:
        key = self._key(profile.path, profile.imgsz, profile.threads, profile.machine)
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


def profile_ladder(
    ladder: Sequence[LadderModel],
    threads: int,
    video: Path | str | None,
    cache: ProfileCache,
    refresh: bool = False,
    progress: Callable[[str], None] | None = None,
    repeats: int = DEFAULT_REPEATS,
) -> list[ModelProfile]:
    """Profile every rung (in ladder order), reusing cached figures unless ``refresh``.

    A cached profile is reused only if it has at least ``repeats`` samples, so asking for more
    samples measures again. Frames are read only if something needs measuring.
    """
    say = progress or (lambda _msg: None)
    frames: list[Image] | None = None
    out: list[ModelProfile] = []
    for i, model in enumerate(ladder, 1):
        cached = None if refresh else cache.reusable(model, threads, repeats)
        if cached is not None:
            say(f"[{i}/{len(ladder)}] {model.label}: {_summary(cached)} (cached)")
            out.append(cached)
            continue
        if frames is None:
            frames = load_frames(video or default_video())
        say(f"[{i}/{len(ladder)}] {model.label}: profiling {repeats} calls on {threads} thread(s)")
        profile = profile_model(model, threads, frames, repeats)
        cache.put(profile)
        say(f"[{i}/{len(ladder)}] {model.label}: {_summary(profile)}")
        out.append(profile)
    return out


def _summary(p: ModelProfile) -> str:
    return (
        f"mean {p.mean_ms:.1f} ms, std {p.std_ms:.1f} ms, p95 {p.p95_ms:.1f} ms ({p.samples} calls)"
    )


def format_profiles(profiles: Sequence[ModelProfile], cached: Collection[str] = ()) -> str:
    """A Markdown table, one row per rung; labels in ``cached`` are marked "(cached)"."""
    lines = [
        "| model | file | imgsz | accuracy | mean ms | std ms | p95 ms | calls | threads |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in profiles:
        mark = " (cached)" if p.label in cached else ""
        lines.append(
            f"| {p.label}{mark} | {Path(p.path).name} | {p.imgsz} | {p.accuracy:g} "
            f"| {p.mean_ms:.2f} | {p.std_ms:.2f} | {p.p95_ms:.2f} | {p.samples} | {p.threads} |"
        )
    return "\n".join(lines)


# --- export -------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_model(
    model: LadderModel, fmt: ExportFormat, cache_dir: Path | None = None
) -> LadderModel:
    """The rung in ``fmt``: exported once per file content into ``CACHE_DIR/exports``.

    ``.pt`` -> ultralytics export (dynamic shapes, FP32: one artefact serves every imgsz);
    ``.onnx`` -> ``onnx`` is the model itself; ``.onnx`` -> ``openvino`` uses
    ``openvino.convert_model`` (ultralytics cannot export from ONNX); an OpenVINO dir asked for
    ``openvino`` is itself. The returned rung keeps the label, imgsz and accuracy.
    """
    if fmt not in ("onnx", "openvino"):
        raise ModelError(f"unknown export format {fmt!r}: expected onnx or openvino")
    ref = resolve_model(model.path)
    if ref.path is None:
        raise ModelError(
            f"cannot export {model.path}: export needs a local .pt file (download it first)"
        )
    src = ref.path
    suffix = "" if src.is_dir() else src.suffix.lower()
    if (fmt == "onnx" and suffix == ".onnx") or (fmt == "openvino" and src.is_dir()):
        return model
    if suffix not in (".pt", ".onnx"):
        raise ModelError(f"cannot export {src} to {fmt}: only .pt (any format) or .onnx sources")
    if fmt == "openvino" and importlib.util.find_spec("openvino") is None:
        raise ModelError(
            f"cannot convert {src.name} to OpenVINO: the openvino package is not installed "
            "(pip install openvino), or leave out --export openvino"
        )

    exports = cache_dir or runtime.CACHE_DIR / "exports"
    digest = hashlib.sha256(f"{_sha256(src)}|{fmt}|dynamic|fp32".encode()).hexdigest()[:16]
    name = f"{src.stem}-{digest}"
    target = exports / (f"{name}.onnx" if fmt == "onnx" else f"{name}_openvino_model")
    rung = model.model_copy(update={"path": str(target), "name": model.label})
    if target.exists():
        log.info("using cached %s export of %s: %s", fmt, src, target)
        return rung

    exports.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=exports))
    try:
        if suffix == ".pt":
            produced = _export_pt(src, work, fmt, model.imgsz)
        else:
            produced = _onnx_to_openvino(src, work / target.name)
        try:
            os.replace(produced, target)
        except OSError:
            if not target.exists():  # not a concurrent export finishing first
                raise
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot export {src} to {fmt}: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported %s to %s", src, target)
    return rung


def _export_pt(src: Path, work: Path, fmt: ExportFormat, imgsz: int) -> Path:
    runtime.configure_ultralytics_env()
    from ultralytics.models import YOLO

    # ultralytics writes beside its source: work on a copy, so a read-only model dir is fine.
    copy = work / src.name
    shutil.copy2(src, copy)
    out = YOLO(str(copy), task="detect").export(
        format=fmt, imgsz=imgsz, dynamic=True, half=False, verbose=False
    )
    produced = Path(str(out))
    if not produced.is_absolute():
        produced = work / produced.name
    if not produced.exists():
        raise ModelError(f"ultralytics reported {out} for the {fmt} export of {src}, not found")
    return produced


def _onnx_to_openvino(src: Path, out_dir: Path) -> Path:
    import openvino as ov  # type: ignore[import-not-found,unused-ignore]

    runtime.configure_ultralytics_env()
    from ultralytics.nn.backends.base import BaseBackend

    out_dir.mkdir()
    ov_model = ov.convert_model(str(src))
    ov.save_model(ov_model, str(out_dir / f"{src.stem}.xml"), compress_to_fp16=False)
    # ultralytics reads names, stride, imgsz and task from metadata.yaml in an OpenVINO dir; an
    # ultralytics-style ONNX carries them in its metadata_props.
    meta: dict[str, Any] = dict(BaseBackend.read_metadata(src))
    for key in ("names", "imgsz", "args"):
        if isinstance(meta.get(key), str):
            meta[key] = ast.literal_eval(meta[key])
    if not meta.get("names"):
        raise ModelError(f"{src} has no ultralytics metadata (class names), cannot convert it")
    import yaml

    (out_dir / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return out_dir
