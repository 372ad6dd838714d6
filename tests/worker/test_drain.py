"""Draining a worker served in this process, with a real edge-side peer over loopback WebRTC:
what the edge is told, what the routes say meanwhile, and how a stream that stays is named."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from aiortc import RTCPeerConnection

from cloud_worker.drain import stay_reason
from mobieye.errors import MobiEyeError
from mobieye.fleet.payloads import Command, WorkerState, parse_payload
from mobieye.messages import Move, Moving, encode, parse_message
from mobieye.webrtc import rtc_configuration
from tests.worker.test_stills import peer, worker


def test_a_stream_that_stays_says_why() -> None:
    assert "could not be told" in stay_reason(False, None)
    assert "never answered" in stay_reason(True, None)
    assert stay_reason(True, Moving(ok=False, detail="no other worker")).endswith(
        "could not move: no other worker"
    )
    assert "still moving: connecting" in stay_reason(True, Moving(ok=True, detail="connecting"))


def test_drain_messages_and_commands_parse_strictly() -> None:
    move = parse_message(encode(Move(reason="draining (SIGTERM)", deadline_s=20)))
    assert isinstance(move, Move) and move.deadline_s == 20
    with pytest.raises(MobiEyeError, match="deadline_s"):
        parse_message('{"type": "move", "deadline_s": -1}')
    assert parse_payload(Command, b'{"drain": true}').drain is True
    with pytest.raises(MobiEyeError, match="drain"):
        parse_payload(Command, b'{"drain": false}')  # only "drain now" is a command
    state = WorkerState(id="w", status="online", url="http://w", capacity=4, streams=1)
    assert state.has_room
    assert not state.model_copy(update={"draining": True}).has_room


@pytest.mark.asyncio
async def test_draining_worker_moves_its_streams_and_names_the_one_that_stays(
    model_path: Path,
) -> None:
    async with (
        worker(model_path, drain_timeout_s=1.5) as (url, state),
        httpx.AsyncClient(base_url=url, trust_env=False) as client,
        peer(client, "cam-stays") as stays,
        peer(client, "cam-silent") as silent,
    ):
        assert (await client.get("/healthz")).json()["status"] == "ok"
        seen = len(stays.messages)
        assert state.drain("test drain")
        assert not state.drain("again")  # one drain at a time
        move = await stays.wait_for(lambda m: isinstance(m, Move), seen)
        assert isinstance(move, Move) and move.reason == "draining (test drain)"
        await silent.wait_for(lambda m: isinstance(m, Move))
        stays.send(encode(Moving(ok=False, detail="no other worker with room")))
        # Not ready, still alive; new streams are sent elsewhere.
        health = await client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "draining"
        live = await client.get("/livez")
        assert live.status_code == 200 and live.json()["status"] == "draining"
        pc = RTCPeerConnection(rtc_configuration([]))
        pc.createDataChannel("mobieye")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": "offer", "uplink": "keyframes"}
        refused = await client.post("/offer", json=offer)
        await pc.close()
        assert refused.status_code == 503 and "draining" in refused.json()["error"]
        assert state.admits() == 0
        drainer = state.drainer
        assert drainer is not None
        for _ in range(100):  # the deadline is 1.5 s
            if drainer.outcome is not None:
                break
            await asyncio.sleep(0.1)
        outcome = drainer.outcome
    assert outcome is not None
    assert outcome.streams == 2 and outcome.left == 0
    assert outcome.stayed["cam-stays"] == "its edge could not move: no other worker with room"
    assert "never answered" in outcome.stayed["cam-silent"]
