"""The model ladder: which detectors there are and how accurate they claim to be.

- :func:`default_ladder` builds the ladder from the real models in the shared data directory.
- :func:`ladder_from_spec` parses ``PATH[@IMGSZ][=ACCURACY],...`` (least accurate first).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from mobieye.config import DetectorConfig, LadderModel, describe_validation_error
from mobieye.detector import STOCK_PREFIXES, resolve_model
from mobieye.errors import ConfigError, ModelError

log = logging.getLogger(__name__)


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
