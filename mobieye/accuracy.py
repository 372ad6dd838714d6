"""Detection accuracy as the literature scores it: F1 at IoU 0.5 against a reference.

Per frame, predictions are matched one-to-one to reference boxes (Hungarian on IoU, class-aware
unless told otherwise); a match needs IoU >= the threshold. Counts add up over frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from mobieye.detections import box_iou

Boxes = npt.NDArray[np.float32]  # (N, 4) xyxy
Classes = npt.NDArray[np.int64]  # (N,)


def match_counts(
    pred: Boxes,
    pred_cls: Classes,
    truth: Boxes,
    truth_cls: Classes,
    iou_threshold: float = 0.5,
    class_aware: bool = True,
) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) for one frame."""
    n_pred, n_truth = len(pred), len(truth)
    if n_pred == 0 or n_truth == 0:
        return 0, n_pred, n_truth
    iou = box_iou(pred, truth)
    if class_aware:
        iou = np.where(pred_cls[:, None] == truth_cls[None, :], iou, 0.0)
    rows, cols = linear_sum_assignment(-iou)
    tp = int(np.count_nonzero(iou[rows, cols] >= iou_threshold))
    return tp, n_pred - tp, n_truth - tp


@dataclass
class F1Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    frames: int = 0

    def add(self, counts: tuple[int, int, int]) -> None:
        tp, fp, fn = counts
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.frames += 1

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 1.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "f1": round(self.f1, 4),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "frames": self.frames,
        }
