import pytest

from mobieye.errors import MessageError
from mobieye.messages import Box, Hello, Result, Timings, encode, parse_message


def test_result_round_trip() -> None:
    r = Result(
        seq=7,
        pts=21000,
        source="detect",
        detect_seq=6,
        model="m.onnx",
        width=640,
        height=480,
        boxes=[Box(xyxy=(0.1, 0.2, 0.3, 0.4), cls=0, label="person", score=0.9, track_id=3)],
        timings=Timings(track_ms=1.5),
    )
    assert parse_message(encode(r)) == r


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("not json", "bad message"),
        ('{"type": "nope"}', "type"),
        ('{"type": "hello"}', "stream_id"),
        ('{"type": "hello", "stream_id": "a b"}', "stream_id"),
        ('{"type": "latency", "samples_ms": [-1]}', "samples_ms"),
        ("x" * 300_000, "exceeds"),
        # 100,000 characters but 400,000 bytes on the wire: counted in bytes.
        (
            '{"type": "hello", "stream_id": "a", "note": "' + "\U0001f600" * 100_000 + '"}',
            "message of 400047 bytes exceeds",
        ),
    ],
)
def test_garbage_is_refused_with_reason(raw: str, needle: str) -> None:
    with pytest.raises(MessageError, match=needle):
        parse_message(raw)


def test_hello_defaults() -> None:
    h = parse_message('{"type": "hello", "stream_id": "cam-1"}')
    assert isinstance(h, Hello)
    assert h.frame_ticks == 3000
