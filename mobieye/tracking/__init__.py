"""Between-keyframe tracking: optical-flow box motion and keyframe track-id association."""

from mobieye.tracking.association import AssignmentEvents, TrackAssigner, TrackCounts
from mobieye.tracking.flow import FlowConfig, FlowTracker, TrackQuality, propagate

__all__ = [
    "AssignmentEvents",
    "FlowConfig",
    "FlowTracker",
    "TrackAssigner",
    "TrackCounts",
    "TrackQuality",
    "propagate",
]
