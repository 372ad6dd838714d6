"""On-device fallback (MDInference's duplication): a frame whose cloud result misses its
deadline shows the newest result's boxes, moved to it by the edge's own light tracker.

Only late frames cost anything: the tracker runs once per late frame, off the event loop.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import numpy.typing as npt

from mobieye.detections import Detections
from mobieye.messages import Result
from mobieye.tracking import propagate

Gray = npt.NDArray[np.uint8]
KEEP_FRAMES = 90  # ~3 s at 30 fps: results older than that are not worth moving


class OnDeviceFallback:
    def __init__(self, keep_frames: int = KEEP_FRAMES) -> None:
        self.keep_frames = keep_frames
        self._grays: OrderedDict[int, Gray] = OrderedDict()
        self.newest: Result | None = None
        self._moved: Result | None = None  # the last fallback: the next one moves on from it
        self.frames = 0

    def on_sent(self, seq: int, gray: Gray) -> None:
        self._grays[seq] = gray
        while len(self._grays) > self.keep_frames:
            self._grays.popitem(last=False)

    def on_result(self, result: Result) -> None:
        if self.newest is None or result.seq > self.newest.seq:
            self.newest = result
            # Fresh boxes: the next late frame moves on from these, not from the old chain.
            self._moved = None

    def boxes_for(self, seq: int) -> Result | None:
        """The newest result's boxes moved to frame ``seq`` (blocking: run it in a thread)."""
        base = self.newest
        if base is None:
            return None
        # Through an outage every frame is late: moving on from the previous fallback costs one
        # flow step per frame, where starting over from the last cloud result would cost one per
        # frame since then (up to keep_frames) and fall behind real time.
        moved = self._moved
        if moved is not None and base.seq < moved.seq < seq:
            base = moved
        self.frames += 1
        # Chain the flow through every kept frame in between: one jump over several frames
        # loses fast movers (a late result is usually only a few frames old).
        grays = [g for s, g in self._grays.items() if base.seq <= s <= seq]
        if len(grays) < 2 or len({g.shape for g in grays}) > 1 or not base.boxes:
            self._moved = base.model_copy(update={"seq": seq})
            return self._moved
        h, w = grays[0].shape
        boxes = propagate(grays, Detections.from_wire(base.boxes, w, h))
        names = {b.cls: b.label for b in base.boxes}
        wire = boxes.to_wire(w, h, names)
        self._moved = base.model_copy(update={"seq": seq, "boxes": wire, "source": "track"})
        return self._moved
