"""Inference runtimes for an ONNX detector, and the cached OpenVINO variants they run.

``onnxruntime`` serves the file as given (FP32). The OpenVINO runtimes serve an IR converted
from it once into the cache directory: ``openvino-fp32`` and ``openvino-bf16`` share one FP32 IR
(``export_model``'s; bf16 is a CPU precision hint: AVX-512 BF16 / AMX where the CPU has them),
``openvino-int8`` is that IR post-training quantised with NNCF on TUD-Campus frames at the
rung's input size. Variants are keyed by the source file's SHA-256, so another file never reuses
them; they are written atomically and never committed. Which runtime a worker uses is chosen
by measurement (``mobieye models profile``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mobieye import runtime as mruntime
from mobieye.config import LadderModel
from mobieye.errors import ModelError
from mobieye.models.digest import sha256_of

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
Runtime = Literal["onnxruntime", "openvino-fp32", "openvino-bf16", "openvino-int8"]
NATIVE: Runtime = "onnxruntime"
RUNTIMES: tuple[Runtime, ...] = ("onnxruntime", "openvino-fp32", "openvino-bf16", "openvino-int8")
# OpenVINO CPU precision hint per runtime (None: the IR's own, INT8 where quantised).
PRECISION_HINT: dict[str, str | None] = {
    "openvino-fp32": "f32",
    "openvino-bf16": "bf16",
    "openvino-int8": None,
}
# A variant whose boxes agree with the FP32 model's less than this is never chosen by default.
F1_TOLERANCE = 0.02
CALIBRATION_FRAMES = 120
# INT8 calibrates on one clip; `mobieye models profile` scores every runtime on the other.
CALIBRATION_CLIPS = ("TUD-Campus.mp4",)
STRIDE = 32


def parse_runtimes(value: str) -> list[Runtime]:
    """``all`` or a comma-separated list of runtime names; a clear error for anything else."""
    if value.strip() == "all":
        return list(RUNTIMES)
    out: list[Runtime] = []
    for name in (v.strip() for v in value.split(",")):
        if not name:
            continue
        if name not in RUNTIMES:
            raise ModelError(
                f"unknown runtime {name!r}: expected 'all' or some of {', '.join(RUNTIMES)}"
            )
        out.append(name)  # checked against RUNTIMES just above
    if not out:
        raise ModelError(f"no runtime named in {value!r}: expected 'all' or {', '.join(RUNTIMES)}")
    return out


def openvino_available() -> str | None:
    """None when OpenVINO imports; else why not (the caller falls back and says so)."""
    try:
        import openvino  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library
        return f"OpenVINO is not usable here ({exc})"
    return None


def int8_dir(source: Path, digest: str, imgsz: int) -> Path:
    """Where the cache keeps ``source``'s INT8 IR, calibrated at ``imgsz``."""
    name = f"{source.stem}-{digest[:16]}-int8-{imgsz}_openvino_model"  # ultralytics' suffix
    return mruntime.CACHE_DIR / "runtimes" / name


def letterbox(image: Image, imgsz: int) -> npt.NDArray[np.float32]:
    """The 1x3xHxW float input ultralytics feeds a dynamic model: longest side ``imgsz``,
    each side padded up to a multiple of 32 with grey (what calibration must see)."""
    import cv2

    h, w = image.shape[:2]
    scale = min(imgsz / h, imgsz / w)
    nh, nw = round(h * scale), round(w * scale)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    ph, pw = -nh % STRIDE, -nw % STRIDE
    top, left = ph // 2, pw // 2
    padded = cv2.copyMakeBorder(
        resized, top, ph - top, left, pw - left, cv2.BORDER_CONSTANT, value=(114, 114, 114)
    )
    chw = padded[:, :, ::-1].transpose(2, 0, 1)  # BGR -> RGB, HWC -> CHW
    return np.ascontiguousarray(chw[None], dtype=np.float32) / 255.0


def calibration_frames(count: int = CALIBRATION_FRAMES) -> list[Image]:
    """Frames spread over the shared clips (never the internet): what INT8 is calibrated on."""
    import cv2

    videos = mruntime.default_data_dir() / "videos"
    clips = [videos / c for c in CALIBRATION_CLIPS if (videos / c).is_file()]
    if not clips:
        raise ModelError(
            f"no calibration clip: none of {', '.join(CALIBRATION_CLIPS)} is in {videos} "
            "(set MOBIEYE_DATA_DIR to the shared data)"
        )
    frames: list[Image] = []
    per_clip = -(-count // len(clips))
    for clip in clips:
        cap = cv2.VideoCapture(str(clip))
        total = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 1)
        step = max(total // per_clip, 1)
        try:
            for index in range(0, total, step):
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                ok, image = cap.read()
                if not ok or len(frames) >= count:
                    break
                frames.append(np.asarray(image, dtype=np.uint8))
        finally:
            cap.release()
    return frames


def build_variant(
    source: Path,
    runtime: Runtime,
    imgsz: int,
    frames: Callable[[], Sequence[Image]] = calibration_frames,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """The path ``runtime`` serves ``source`` from: the file itself for onnxruntime, else the
    cached IR (built now if missing). ModelError naming the file and the reason on failure."""
    if runtime == NATIVE:
        return source
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if source.suffix.lower() != ".onnx":
        raise ModelError(
            f"runtime {runtime} needs an ONNX model to convert, not {source.name} "
            "(export it first: mobieye models profile --export onnx)"
        )
    why = openvino_available()
    if why is not None:
        raise ModelError(f"runtime {runtime} for {source.name}: {why}")
    from mobieye.models.export import export_model  # imports the detector, which imports us

    # fp32 and bf16 serve the plain IR (bf16 is a compile-time hint); INT8 is quantised from it.
    rung = LadderModel(path=str(source), imgsz=imgsz, accuracy=0.0)
    ir = Path(export_model(rung, "openvino").path)
    if runtime != "openvino-int8":
        return ir
    out = int8_dir(source, sha256_of(source), imgsz)
    if (out / "metadata.yaml").is_file() and any(out.glob("*.xml")):
        return out
    (progress or log.info)(f"{source.name}: quantising to INT8 at {imgsz} into {out}")
    try:
        _quantise(ir, imgsz, frames, out)
    except ModelError:
        raise
    except Exception as exc:  # a graph NNCF can't take
        raise ModelError(f"cannot quantise {source.name} to INT8: {exc}") from exc
    return out


def _quantise(ir: Path, imgsz: int, frames: Callable[[], Sequence[Image]], out: Path) -> None:
    import nncf
    import openvino as ov

    samples = [letterbox(f, imgsz) for f in frames()]
    if not samples:
        raise ModelError(f"no calibration frames to quantise {ir.name} with")
    model = ov.Core().read_model(str(next(ir.glob("*.xml"))))
    # NNCF draws progress bars on stdout, which is for results (tables, JSON): stderr.
    with contextlib.redirect_stdout(sys.stderr):
        model = nncf.quantize(
            model,
            nncf.Dataset(samples),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(samples),
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        shutil.copy2(ir / "metadata.yaml", tmp / "metadata.yaml")
        if out.exists():  # a half-built leftover: replace it
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# Compiled models kept per input shape (batch size x letterboxed frame size): a pool batch of
# 1..max_batch keyframes and a few frame sizes, each compiled once (measured ~0.2 s a compile).
MAX_COMPILED_SHAPES = 12


class ShapeCompiled:
    """An OpenVINO model compiled static for each input shape it meets, cached (LRU).

    ultralytics' backend recompiles whenever the shape differs from the last call's, so a
    worker batching 1, 3, then 2 keyframes compiled on nearly every call (py-spy: compile took
    more CPU than inference under 8 streams); this keeps each shape's compiled model.
    """

    def __init__(self, xml: Path, config: dict[str, Any]) -> None:
        import openvino as ov

        self._core = ov.Core()
        self._xml = xml
        self._config = config
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.compiles = 0

    def forward(self, im: Any) -> list[Any]:
        """ultralytics' ``backend.forward``: a BCHW float tensor in, the outputs as arrays."""
        arr = np.asarray(im.cpu().numpy(), dtype=np.float32)
        return list(self.compiled(tuple(arr.shape))(arr).values())

    def compiled(self, shape: tuple[int, ...]) -> Any:
        model = self._compiled.pop(shape, None)
        if model is None:
            ir = self._core.read_model(
                model=str(self._xml), weights=str(self._xml.with_suffix(".bin"))
            )
            ir.reshape(list(shape))
            model = self._core.compile_model(ir, device_name="CPU", config=self._config)
            self.compiles += 1
            log.debug("compiled %s for input %s", self._xml.parent.name, shape)
            if len(self._compiled) >= MAX_COMPILED_SHAPES:
                self._compiled.popitem(last=False)
        self._compiled[shape] = model
        return model


def configure_openvino(backend: Any, model_dir: Path, runtime: str, threads: int) -> ShapeCompiled:
    """Serve ultralytics' OpenVINO model with our thread budget and precision, compiled static
    per input shape (measured faster than one dynamic model here) and kept per shape."""
    xml = next(model_dir.glob("*.xml"))
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    hint = PRECISION_HINT.get(runtime)
    if hint is not None:
        config["INFERENCE_PRECISION_HINT"] = hint
    shaped = ShapeCompiled(xml, config)
    backend.read_model = None  # its own per-shape recompiling is replaced by ours
    backend.forward = shaped.forward
    return shaped
