"""The per-stage CPU table built from a py-spy profile (mobieye/bench/stages.py)."""

from __future__ import annotations

import pytest

from mobieye.bench.stages import IDLE, OTHER, parse_raw, stage_of, stage_table, table_markdown

STEP = (
    "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:83);"
    "StreamSession._step (cloud_worker/session.py:379);"
    "StreamProcessor.step (cloud_worker/processor.py:146)"
)
RAW = "\n".join(
    [
        f"{STEP};FlowTracker.step (mobieye/tracking/flow.py:262);"
        "_lk (mobieye/tracking/flow.py:150) 6",
        f"{STEP} 1",  # the thumbnail's resize: native, under the step itself
        "Thread.run (threading.py:982);decoder_worker (aiortc/rtcrtpreceiver.py:79);"
        "Vp8Decoder.decode (aiortc/codecs/vpx.py:120) 2",
        "Thread.run (threading.py:982);decoder_worker (aiortc/rtcrtpreceiver.py:79);"
        "Queue.get (queue.py:171);Condition.wait (threading.py:327) 5",  # blocked: not CPU
        "BaseEventLoop._run_once (asyncio/base_events.py:1922);RTCDtlsTransport._recv_next "
        "(aiortc/rtcdtlstransport.py:650);Session.unprotect (pylibsrtp/__init__.py:150) 1",
        "main (mobieye/cli.py:94) 0",
        "not a py-spy line",
    ]
)


def test_stacks_land_in_the_innermost_stage_that_names_them() -> None:
    counts = parse_raw(RAW)
    assert counts["tracking (optical flow)"] == 6
    assert counts["stream step: thumbnail, bookkeeping"] == 1
    assert counts["decode (VP8/H264)"] == 2  # its thread's wait is idle, not decode
    assert counts[IDLE] == 5
    assert counts["SRTP/RTP receive, jitter buffer"] == 1  # SRTP, though DTLS called it
    assert stage_of(["main (mobieye/cli.py:94)"]) == OTHER


def test_table_leaves_idle_out_and_splits_the_cpu_per_frame() -> None:
    rows = stage_table(parse_raw(RAW), cpu_s=2.0, frames=1000)  # 2 ms of CPU per frame
    assert [r.stage for r in rows][:2] == ["tracking (optical flow)", "decode (VP8/H264)"]
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert rows[0].share == pytest.approx(0.6)
    assert rows[0].ms_per_frame == pytest.approx(1.2)
    assert IDLE not in {r.stage for r in rows}
    assert "| tracking (optical flow) | 60.0% | 1.20 |" in table_markdown(rows)
    assert stage_table({}) == []
    assert stage_table({"decode (VP8/H264)": 3})[0].ms_per_frame is None  # no CPU figure given
