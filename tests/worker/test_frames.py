"""Frames converted from several threads at once: PyAV's own per-frame reformatter segfaults
there (seen: a dashboard MJPEG viewer's JPEG and a keyframe's BGR conversion of the same frame
killed the worker); the worker's conversions must not."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import av
import numpy as np

from cloud_worker.frames import frame_array, luma


def decoded_like(width: int = 640, height: int = 480) -> av.VideoFrame:
    img = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    return av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")


def test_conversions_match_pyav() -> None:
    frame = decoded_like()
    assert np.array_equal(frame_array(frame, "bgr24"), frame.to_ndarray(format="bgr24"))
    assert np.array_equal(frame_array(frame, "yuv420p"), frame.to_ndarray())
    assert np.array_equal(luma(frame), frame.to_ndarray()[: frame.height])  # the Y plane


def test_the_same_frame_converted_in_many_threads_at_once() -> None:
    # In a child process: a race inside FFmpeg would kill this whole test run otherwise.
    script = textwrap.dedent("""
        import threading
        import av, numpy as np
        from cloud_worker.frames import frame_array, luma
        img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
        base = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
        for n in range(200):
            frame = base.reformat(format="yuv420p")
            def work(fmt):
                for _ in range(3):
                    frame_array(frame, fmt)
                    luma(frame)
            fmts = ("bgr24", "rgb24", "bgr24")
            threads = [threading.Thread(target=work, args=(f,)) for f in fmts]
            for t in threads:
                t.start()
            work("bgr24")
            for t in threads:
                t.join()
        print("ok")
    """)  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr)
