"""Detectors behind one small interface; ultralytics YOLO first (.pt, .onnx, OpenVINO dir).

Loading and inference block, so callers run them off the event loop (see DetectorPool).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mobieye.config import DetectorConfig
from mobieye.detections import Detections
from mobieye.errors import ModelError
from mobieye.models.digest import verified_digest
from mobieye.models.runtimes import (
    NATIVE,
    PRECISION_HINT,
    ShapeCompiled,
    build_variant,
    configure_openvino,
)
from mobieye.runtime import configure_ultralytics_env

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
MODEL_SUFFIXES = (".pt", ".onnx", ".torchscript", ".yaml", ".yml")
# An architecture (ultralytics model YAML) builds with untrained weights: timing only.
ARCH_SUFFIXES = (".yaml", ".yml")
STOCK_PREFIXES = ("yolov5", "yolov8", "yolov9", "yolov10", "yolo11", "yolo12", "yolo26", "rtdetr")


class Detector(Protocol):
    name: str
    names: dict[int, str]

    def load(self) -> None: ...

    def detect(self, images: list[Image]) -> list[Detections]: ...


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: a local path, or a stock name ultralytics may download."""

    spec: str
    path: Path | None  # None: a stock name to be fetched

    @property
    def name(self) -> str:
        return Path(self.spec).name

    @property
    def untrained(self) -> bool:
        """An architecture file: real compute, random weights (for timing, never for boxes)."""
        return Path(self.spec).suffix.lower() in ARCH_SUFFIXES


def resolve_model(spec: str | None, allow_untrained: bool = False) -> ModelRef:
    """Validate a model setting before anything heavy loads; errors name the path and a fix.

    An architecture YAML (untrained weights) is refused unless ``allow_untrained``: only timing
    (``mobieye models throughput``) may use one; a worker serving it would draw noise."""
    ref = _resolve_model(spec)
    if ref.untrained and not allow_untrained:
        raise ModelError(
            f"model {spec} is an architecture without trained weights: its boxes would be "
            "meaningless. Pass a trained .pt, .onnx or OpenVINO model (architectures are for "
            "`mobieye models throughput` only)"
        )
    return ref


def _resolve_model(spec: str | None) -> ModelRef:
    if not spec:
        raise ModelError(
            "no detector model given: pass --model PATH (a .pt, .onnx or OpenVINO export dir) "
            "or set MOBIEYE_MODEL; e.g. --model ../shared/data/models/"
            "yolox_nano_dynamic_ultralytics.onnx, or --model yolo11n.pt on a machine with internet"
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        if not any(path.glob("*.xml")):
            raise ModelError(f"model directory {path} is not an OpenVINO export (no .xml inside)")
        return ModelRef(spec, path)
    if path.exists():
        if path.suffix.lower() not in MODEL_SUFFIXES:
            raise ModelError(
                f"model file {path} has unknown format {path.suffix!r}: "
                f"expected one of {', '.join(MODEL_SUFFIXES)} or an OpenVINO export dir"
            )
        return ModelRef(spec, path)
    is_stock = path.parent == Path(".") and path.name.lower().startswith(STOCK_PREFIXES)
    if is_stock and path.suffix in ARCH_SUFFIXES:
        return ModelRef(spec, None)  # ships inside ultralytics: nothing to download
    if is_stock and path.suffix == ".pt":
        if os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true"):
            raise ModelError(
                f"model {spec} is a stock ultralytics name but YOLO_OFFLINE is set, so it can't "
                "be downloaded: pass --model PATH (or set MOBIEYE_MODEL) to a local .pt/.onnx "
                "file or OpenVINO export dir"
            )
        return ModelRef(spec, None)
    raise ModelError(f"model file {path} does not exist (pass --model with an existing path)")


class UltralyticsDetector:
    """An ultralytics YOLO model. Not thread-safe: one thread calls detect()."""

    def __init__(self, cfg: DetectorConfig, allow_untrained: bool = False) -> None:
        self.cfg = cfg
        self.ref = resolve_model(cfg.model, allow_untrained)
        self.name = self.ref.name
        self.names: dict[int, str] = {}
        self.sha256: str | None = None  # of the file served, once loaded
        self.runtime: str = NATIVE if self._is_onnx else "ultralytics"  # what serves it
        self._model: Any = None
        # (runtime, mean ms, std ms) measured by `mobieye models profile` on this machine: the
        # pool's prior instead of measuring again at start-up (only if that runtime serves).
        self.prior_ms: tuple[str, float, float] | None = None
        self.openvino: ShapeCompiled | None = None  # the compiled models, on OpenVINO runtimes

    @property
    def _is_onnx(self) -> bool:
        return self.ref.path is not None and self.ref.path.suffix.lower() == ".onnx"

    def _served_path(self) -> Path | str:
        """The file the configured runtime serves: the model itself, or its cached OpenVINO
        variant; a variant that can't be had falls back to the model as given, saying why."""
        wanted = self.cfg.runtime
        if wanted == "auto" or wanted == NATIVE or self.ref.path is None:
            return self.ref.path or self.ref.spec
        if not self._is_onnx:
            log.warning("runtime %s needs an ONNX model; serving %s as it is", wanted,
                        self.ref.spec)  # fmt: skip
            return self.ref.path
        try:
            served = build_variant(self.ref.path, wanted, self.cfg.imgsz)
        except ModelError as exc:
            log.warning("%s; falling back to onnxruntime (FP32)", exc)
            return self.ref.path
        self.runtime = wanted
        return served

    def load(self) -> None:
        """Load weights and warm up; raises ModelError naming the path on any failure (and
        both hashes when the file is not the one ``sha256`` names)."""
        configure_ultralytics_env()
        started = time.perf_counter()
        if self.ref.path is not None:
            self.sha256 = verified_digest(self.ref.path, self.cfg.sha256)
        elif self.cfg.sha256 is not None:
            raise ModelError(f"model {self.ref.spec}: a sha256 needs a local file to check")
        try:
            import torch
            from ultralytics.models import YOLO

            torch.set_num_threads(self.cfg.threads)
            served = self._served_path()
            self._model = YOLO(str(served), task="detect")
            if self.ref.untrained:
                log.warning("%s is an architecture with untrained weights: its timings are "
                            "real, its boxes are not", self.ref.spec)  # fmt: skip
            self.names = {int(k): str(v) for k, v in self._model.names.items()}
            self.detect([np.zeros((64, 64, 3), dtype=np.uint8)])  # builds the predictor
            self._set_onnx_threads()
            if self.runtime in PRECISION_HINT:
                backend = self._model.predictor.model.backend
                self.openvino = configure_openvino(
                    backend, Path(served), self.runtime, self.cfg.threads
                )
            self.detect([np.zeros((480, 640, 3), dtype=np.uint8)])
        except ModelError:
            raise
        except Exception as exc:
            hint = ""
            if self.ref.path is None and not self.ref.untrained:
                hint = " (no internet? pass --model PATH or set MOBIEYE_MODEL to a local file)"
            raise ModelError(f"cannot load model {self.ref.spec}: {exc}{hint}") from exc
        log.info(
            "loaded %s on %s (%d classes, imgsz %d, %d threads, device %s%s) in %.1f s",
            self.ref.spec,
            self.runtime,
            len(self.names),
            self.cfg.imgsz,
            self.cfg.threads,
            self.cfg.device or "auto",
            ", FP16" if self.cfg.half else "",
            time.perf_counter() - started,
        )

    def _set_onnx_threads(self) -> None:
        # ultralytics builds its ONNX Runtime session with default threads (all cores); on a
        # small box that starves the WebRTC threads, so rebuild it with the configured count.
        backend: Any = getattr(getattr(self._model.predictor, "model", None), "backend", None)
        session = getattr(backend, "session", None)
        if backend is None or session is None or not hasattr(session, "get_providers"):
            return
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.cfg.threads
        opts.inter_op_num_threads = 1
        backend.session = ort.InferenceSession(
            str(self.ref.path), opts, providers=session.get_providers()
        )

    def detect(self, images: list[Image]) -> list[Detections]:
        results = self._model.predict(
            images,
            imgsz=self.cfg.imgsz,
            conf=self.cfg.conf,
            iou=self.cfg.iou,
            max_det=self.cfg.max_det,
            classes=self.cfg.classes,
            device=self.cfg.device,
            half=self.cfg.half,
            verbose=False,
        )
        return [Detections.from_ultralytics(r) for r in results]
