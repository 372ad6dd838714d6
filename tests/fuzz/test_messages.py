"""Data-channel messages (mobieye/messages.py): whatever a peer sends, parse_message returns a
message or raises MessageError naming the problem, and what it accepts survives a re-encode."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from mobieye.errors import MessageError
from mobieye.messages import (
    MAX_MESSAGE_BYTES,
    Control,
    ErrorMessage,
    Hello,
    LatencyReport,
    Result,
    Welcome,
    WorkerStats,
    encode,
    parse_message,
)
from tests.fuzz.common import FUZZ, backstop_s, counted, short, within
from tests.fuzz.strategies import Mutated, dumps, json_values, mutate

pytestmark = pytest.mark.timeout(backstop_s())

MODELS: list[type[BaseModel]] = [
    Hello, LatencyReport, Result, Welcome, WorkerStats, Control, ErrorMessage,
]  # fmt: skip


def _tag(model: type[BaseModel]) -> str:
    tag: str = get_args(model.model_fields["type"].annotation)[0]
    return tag


def _typed_documents(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    # The schema leaves "type" optional (it has a default); the union needs it to pick a model.
    from tests.fuzz.strategies import valid_documents

    return valid_documents(model).map(lambda d: {**d, "type": _tag(model)})


near_valid_messages = st.sampled_from(MODELS).flatmap(
    lambda m: _typed_documents(m).flatmap(lambda d: mutate(d, list(m.model_fields)))
)
raw_messages = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=400),
    json_values.map(dumps),
    st.sampled_from(MODELS).flatmap(_typed_documents).map(dumps),
    near_valid_messages.map(lambda m: dumps(m.doc)),
)


def _parse(raw: str | bytes) -> Any:
    with within(f"parse_message({short(raw)})"):
        try:
            return parse_message(raw)
        except MessageError as exc:
            text = str(exc)
            assert text.startswith(("bad message: ", "message of ")), text
            assert len(text) > len("bad message: "), f"empty reason for {short(raw)}"
            return exc


@FUZZ
@given(raw=raw_messages)
@counted
def test_parse_message_returns_a_message_or_a_message_error(raw: str | bytes) -> None:
    result = _parse(raw)
    if isinstance(result, MessageError):
        return  # non-finite floats among them: test_non_finite_floats_are_refused_naming_...
    # Whatever was accepted must survive the sender's encoding: the peer parses that.
    again = _parse(encode(result))
    assert not isinstance(again, MessageError), (
        f"accepted {short(raw)} but its re-encoding {short(encode(result))} is refused: {again}"
    )
    assert json.loads(encode(again)) == json.loads(encode(result))


@FUZZ
@given(mutated=near_valid_messages)
@counted
def test_a_refused_message_names_the_field_that_spoiled_it(mutated: Mutated) -> None:
    result = _parse(dumps(mutated.doc))
    if isinstance(result, MessageError) and not isinstance(
        _parse(dumps(mutated.original)), MessageError
    ):
        assert mutated.blames(str(result)), (
            f"{mutated.how} at {mutated.path}: the error {str(result)!r} does not say where"
        )


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "stats", "models": [], "queue_ms": Infinity, "streams": 1}',
        '{"type": "stats", "models": [{"label": "m", "accuracy": NaN, "mean_ms": 1, "std_ms": 0}],'
        ' "queue_ms": 0, "streams": 1}',
    ],
)
def test_non_finite_floats_are_refused_naming_the_field(raw: str) -> None:
    # encode() would write them as null, which the peer refuses: they never get in.
    with pytest.raises(MessageError, match="finite number"):
        parse_message(raw)


def test_an_oversized_message_is_refused_by_its_size() -> None:
    with pytest.raises(MessageError, match="exceeds"):
        parse_message(b" " * (MAX_MESSAGE_BYTES + 1))
