"""The pipelines the benchmark compares, as settings of the one system.

* ``conventional``: every frame sent at full quality and detected by the ladder's most accurate
  model; a busy worker lets the newest frame wait and drops older ones; a frame shows the newest
  result it has. The usual cloud pipeline.
* ``fixed``: the same model on every N-th frame, synchronously, tracking in between (DeepStream's
  ``interval``).
* ``mobieye``: the adaptive controller over the whole ladder, asynchronous detection, online
  keyframe tuning.
* ``stock-receive`` (not run by default): ``mobieye`` with aiortc's stock jitter buffer.
* ``mobieye-local`` (not run by default): ``mobieye`` with the on-device model duplicating
  late cloud results and covering outages (MDInference).
* ``edge-first`` (not run by default): the edge tracks every frame with its on-device model
  refreshing the boxes, and sends the worker only hard frames, as stills, within an uplink
  budget (``controller.uplink_kbps``, 100 kbps unless set).
* ``local-only`` (not run by default): no worker at all; the edge's on-device model (the
  ladder's cheapest, or ``--local-model``) on as many frames as its CPU allows, its tracker in
  between.
"""

from __future__ import annotations

from typing import Any

from mobieye.config import LadderModel, Settings

MODE_NAMES = (
    "conventional", "fixed", "mobieye", "stock-receive", "mobieye-local", "local-only",
    "edge-first",
)  # fmt: skip
# Modes whose edges always have an on-device model.
LOCAL = ("mobieye-local", "local-only", "edge-first")
EDGE_FIRST_KBPS = 100.0  # edge-first's uplink budget: an eighth of conventional's video here
NO_WORKER = ("local-only",)


def mode_settings(
    base: Settings, mode: str, ladder: list[LadderModel], fixed_interval: int,
    local_model: str | None = None,
) -> Settings:  # fmt: skip
    """``local_model``: the edges' on-device model in every mode (MDInference's duplicate of
    late cloud results); the modes that need one default to the ladder's cheapest."""
    if mode not in MODE_NAMES:
        raise ValueError(f"unknown mode {mode!r}: choose from {', '.join(MODE_NAMES)}")
    best = max(ladder, key=lambda m: m.accuracy)
    cheapest = min(ladder, key=lambda m: m.accuracy)
    data: dict[str, Any] = base.model_dump(mode="json")
    data["log_level"] = "WARNING"
    if local_model is not None:
        data["edge"]["local_model"] = local_model
    elif mode in LOCAL:
        data["edge"]["local_model"] = f"{cheapest.path}@{cheapest.imgsz}"
    if mode == "conventional":
        data["ladder"] = [best.model_dump(mode="json")]
        data["controller"]["enabled"] = False
        data["keyframe"].update(
            interval=1, min_interval=1, max_interval=1, adaptive=False,
            wait_for_detection=True, track_between=False,
        )  # fmt: skip
    elif mode == "fixed":
        data["ladder"] = [best.model_dump(mode="json")]
        data["controller"]["enabled"] = False
        data["keyframe"].update(
            interval=fixed_interval, min_interval=fixed_interval, max_interval=fixed_interval,
            adaptive=False, wait_for_detection=True, scene_change=1.0, min_track_quality=0.0,
            max_age_s=3600.0, max_age_cap_s=3600.0,
        )  # fmt: skip
    elif mode == "local-only":
        data["controller"]["enabled"] = False  # nothing to adapt: no uplink, no worker
    elif mode == "edge-first":
        data["ladder"] = [m.model_dump(mode="json") for m in ladder]
        data["edge"]["uplink"] = "keyframes"
        data["controller"]["uplink_kbps"] = data["controller"]["uplink_kbps"] or EDGE_FIRST_KBPS
        # Stills are dear: the policy may space them out to the budget's pace.
        data["keyframe"].update(max_interval=100, max_age_cap_s=3.0)
    else:  # mobieye, stock-receive, mobieye-local
        data["ladder"] = [m.model_dump(mode="json") for m in ladder]
        data["controller"]["enabled"] = True
        # stock-receive: MobiEye with aiortc's own jitter buffer, to show what ours saves.
        data["webrtc"]["low_latency_receive"] = mode != "stock-receive"
    return Settings.model_validate(data)
