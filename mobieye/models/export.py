"""Model export: :func:`export_model` turns a ``.pt`` into an ONNX or OpenVINO artefact, and
an ``.onnx`` into OpenVINO (cached by content hash).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from mobieye import runtime
from mobieye.config import LadderModel
from mobieye.detector import resolve_model
from mobieye.errors import ModelError
from mobieye.models.digest import sha256_of

log = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "openvino"]


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
    digest = hashlib.sha256(f"{sha256_of(src)}|{fmt}|dynamic|fp32".encode()).hexdigest()[:16]
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
