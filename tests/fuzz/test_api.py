"""Schemathesis against the worker's and the dashboard's OpenAPI schemas, in-process (ASGI):
a worker serving a real model from the shared data, and a dashboard whose store already knows
a fleet. Every request carries ``Authorization: Bearer <token>``.

Both apps read their POST bodies raw, so their published schemas declare none; the schemas
fuzzed here add the bodies the routes parse (OfferRequest, Command, {sdp, type}), or
schemathesis would never send one. Checks: no 5xx (a proxy's 502 for an unreachable worker
excepted: that is its documented answer), responses and their content types as the schema
says, invalid input refused, and no request hangs.
"""

from __future__ import annotations

import contextlib
import copy
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import AcceptedNegativeData, Failure, FailureGroup
from schemathesis.generation.case import Case as GenericCase
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
)

from cloud_worker.app import create_app
from cloud_worker.main import build_detectors, prepare_receiver_webrtc
from cloud_worker.offers import OfferRequest
from mobieye.config import MqttConfig, load_settings
from mobieye.dashboard.app import create_dashboard_app
from mobieye.dashboard.store import FleetStore
from mobieye.fleet import topics
from mobieye.fleet.payloads import (
    Command,
    LatencyMs,
    ObjectEvent,
    StreamState,
    StreamStats,
    WorkerState,
)
from tests.fuzz.common import CASE_COUNTS, FUZZ, OBSERVED, backstop_s, short, within
from tests.fuzz.test_sdp import OFFER

pytestmark = pytest.mark.timeout(backstop_s(per_case_s=0.5, fixed_s=300))

TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REQUEST_TIMEOUT_S = 15.0  # one request; past this it is a hang
BASE_URL = "http://testserver"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, refused at once
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


Bodies = dict[tuple[str, str], type[BaseModel]]


# test_worker_metrics_documents_its_content_type (xfail): not failed again case by case.
KNOWN_CONTENT_TYPE_MISMATCH = {"GET /metrics"}


class SdpOffer(BaseModel):
    """What the dashboard's proxies read (mobieye/dashboard/proxy.py _offer)."""

    sdp: str
    type: str


WORKER_BODIES: Bodies = {("post", "/offer"): OfferRequest, ("post", "/view"): OfferRequest}
DASHBOARD_BODIES: Bodies = {
    ("post", "/api/streams/{stream_id}/set"): Command,
    ("post", "/api/streams/{stream_id}/view"): SdpOffer,
    ("post", "/api/phone/offer"): SdpOffer,
}


def _with_bodies(schema: dict[str, Any], bodies: Bodies) -> dict[str, Any]:
    """The app's schema with a JSON request body on the routes that read one raw."""
    out = copy.deepcopy(schema)
    components = out.setdefault("components", {}).setdefault("schemas", {})
    for (method, path), model in bodies.items():
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        example: dict[str, Any] = {"sdp": OFFER, "type": "offer"}
        if model is Command:
            example = {"sla_ms": 150}
        out["paths"][path][method]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body, "example": example}},
        }
    return out


def _observe_status(response: httpx.Response, case: Case, where: str) -> None:
    # The schemas document few of the codes the apps answer: counted, not failed (see report).
    documented = case.operation.responses.status_codes
    if str(response.status_code) not in documented and "default" not in documented:
        OBSERVED[f"api {where}: undocumented {response.status_code} on {case.operation.label}"] += 1


Allowed = dict[str, set[int]]


def _call(client: TestClient, case: Case, where: str, allowed_5xx: Allowed) -> None:
    CASE_COUNTS[f"test_api.py::test_{where}_api"] += 1
    mode = case.meta.generation.mode.value if case.meta else "?"
    OBSERVED[f"api {where}: {mode} cases on {case.operation.label}"] += 1
    sent = case.as_transport_kwargs(base_url=BASE_URL, headers=AUTH)
    body: dict[str, Any] = {}
    if "json" in sent:
        body["json"] = sent["json"]
    elif sent.get("data") is not None:
        body["content"] = sent["data"]
    with within(f"{case.operation.label}: {short(sent)}", seconds=REQUEST_TIMEOUT_S):
        response = client.request(
            sent["method"], sent["url"], params=sent.get("params"), headers=sent["headers"], **body
        )
    _observe_status(response, case, where)
    checks = CHECKS
    if case.operation.label in KNOWN_CONTENT_TYPE_MISMATCH:
        checks = [c for c in CHECKS if c is not content_type_conformance]
    if response.status_code in allowed_5xx.get(case.operation.label, set()):
        assert response.json().get("error"), f"{response.status_code} without a reason"
        checks = [c for c in CHECKS if c is not not_a_server_error]
    try:
        case.validate_response(response, checks=checks, headers=AUTH)
    except FailureGroup as group:
        if not all(_repeated_query_value(f) for f in group.exceptions):
            raise
        OBSERVED[f"api {where}: repeated query value accepted on {case.operation.label}"] += 1


def _repeated_query_value(failure: Failure) -> bool:
    # ?limit=1&limit=2 is a query value "become array" to schemathesis; Starlette takes the
    # last one, as servers usually do: not a refusal that is missing.
    text = failure.message
    return isinstance(failure, AcceptedNegativeData) and "in query" in text and "array" in text


@contextlib.contextmanager
def _serving(app: FastAPI, timeout_s: float = 240) -> Iterator[TestClient]:
    """The app with its lifespan running (in the client's own event loop, as a server would
    run it), once it answers /healthz with 200."""
    with TestClient(app, base_url=BASE_URL) as client:
        deadline = time.monotonic() + timeout_s
        while (r := client.get("/healthz", headers=AUTH)).status_code != 200:
            assert time.monotonic() < deadline, f"not healthy after {timeout_s:g} s: {r.text}"
            time.sleep(0.2)
        yield client


# -- the worker --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker_api(model_path: Path) -> Iterator[Served]:
    settings = load_settings(
        None,
        {
            "detector": {"model": str(model_path)},
            # Room for every offer the fuzzer gets through (a refusal at capacity is a 503).
            "worker": {"token": TOKEN, "metrics_token": TOKEN, "max_streams": 256},
        },
    )
    prepare_receiver_webrtc(settings)  # loopback-only ICE for the offers that get through
    app = create_app(settings, build_detectors(settings), "w-fuzz")
    bodies = WORKER_BODIES
    # No schema.app: schemathesis would run (and, after each test, end) the app's lifespan.
    schema = schemathesis.openapi.from_dict(_with_bodies(app.openapi(), bodies))
    with _serving(app) as client:
        yield schema, client


def _cases(app: FastAPI, bodies: Bodies) -> list[Any]:
    """(operation, mode) pairs, known at collection from a bare app (the fixtures build the
    real ones); negative only where there is something to spoil: a query or a body."""
    out = []
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            label = f"{method.upper()} {path}"
            out.append(pytest.param(label, GenerationMode.POSITIVE, id=f"{label}-positive"))
            query = any(p.get("in") == "query" for p in op.get("parameters", []))
            if query or (method, path) in bodies:
                out.append(pytest.param(label, GenerationMode.NEGATIVE, id=f"{label}-negative"))
    return out


Served = tuple[Any, TestClient]
Case = GenericCase[APIOperation[Any, Any, Any, Any]]


def _fuzz(
    served: Served, label: str, mode: GenerationMode, where: str, allowed_5xx: Allowed
) -> None:
    schema, client = served
    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the schema"

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        _call(client, case, where, allowed_5xx)

    try:
        run()
    except Unsatisfiable:
        if mode is not GenerationMode.NEGATIVE:
            raise
        pytest.skip(f"{label}: nothing in its schema to make invalid")


@pytest.mark.parametrize(
    ("label", "mode"), _cases(create_app(load_settings(None, {}), {}, "w"), WORKER_BODIES)
)
def test_worker_api(worker_api: Served, label: str, mode: GenerationMode) -> None:
    _fuzz(worker_api, label, mode, "worker", {})


# -- the dashboard -----------------------------------------------------------------------------

P = "mobieye"


def _known_fleet() -> FleetStore:
    """A store that knows two workers (one unreachable, one offline), a stream and events."""
    store = FleetStore(P)
    msgs: list[tuple[str, BaseModel]] = [
        (topics.worker_state(P, "w1"),
         WorkerState(id="w1", status="online", url=UNREACHABLE, capacity=4, streams=1)),
        (topics.worker_state(P, "w2"), WorkerState(id="w2", status="offline")),
        (topics.stream_stats(P, "s1"),
         StreamStats(stream="s1", worker="w1", fps=25, latency_ms=LatencyMs(p50=40, p95=80))),
        (topics.stream_state(P, "s1"), StreamState(stream="s1", worker="w1", sla_ms=100)),
        (topics.events(P), ObjectEvent(type="new", stream="s1", track_id=1, label="person",
                                       box=[0.1, 0.1, 0.2, 0.3], score=0.9, ts=1.0)),
    ]  # fmt: skip
    for topic, payload in msgs:
        assert store.on_message(topic, payload.model_dump_json().encode()), topic
    return store


@pytest.fixture(scope="module")
def dashboard_api() -> Iterator[Served]:
    # The broker is never reached (the link retries in the background); commands queue.
    app = create_dashboard_app(MqttConfig(broker=UNREACHABLE.replace("http", "mqtt")), TOKEN,
                               store=_known_fleet())  # fmt: skip
    bodies = DASHBOARD_BODIES
    schema = schemathesis.openapi.from_dict(_with_bodies(app.openapi(), bodies))
    with _serving(app) as client:
        yield schema, client


# The proxies answer 502 for a worker they cannot reach and 503 when no worker takes a stream.
PROXY_5XX = {
    "POST /api/streams/{stream_id}/view": {502},
    "GET /api/streams/{stream_id}/mjpeg": {502},
    "POST /api/phone/offer": {503},
}


@pytest.mark.parametrize(
    ("label", "mode"),
    _cases(create_dashboard_app(MqttConfig(broker="mqtt://127.0.0.1:9"), TOKEN), DASHBOARD_BODIES),
)
def test_dashboard_api(dashboard_api: Served, label: str, mode: GenerationMode) -> None:
    _fuzz(dashboard_api, label, mode, "dashboard", PROXY_5XX)


def test_worker_metrics_documents_its_content_type() -> None:
    schema = create_app(load_settings(None, {}), {}, "w").openapi()
    content = schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert any(media.startswith("text/plain") for media in content), content


def _without_token(served: Served, open_paths: set[str]) -> list[str]:
    """Operations that answered a request without the token with anything but 401."""
    schema, client = served
    wrong = []
    for path, ops in schema.raw_schema["paths"].items():
        for method in ops:
            url = re.sub(r"\{[^}]+\}", "s1", path)
            r = client.request(method.upper(), url, json={} if method == "post" else None)
            if path not in open_paths and r.status_code != 401:
                wrong.append(f"{method.upper()} {path}: {r.status_code}")
    return wrong


# The routes each app serves without a token: the health checks (the worker's readiness and
# liveness probes, which an orchestrator calls without credentials).
WORKER_OPEN_PATHS = {"/healthz", "/livez"}
DASHBOARD_OPEN_PATHS = {"/healthz"}


def test_every_worker_route_but_its_probes_needs_the_token(worker_api: Served) -> None:
    assert not _without_token(worker_api, WORKER_OPEN_PATHS)


def test_every_dashboard_route_but_healthz_needs_the_token(dashboard_api: Served) -> None:
    assert not _without_token(dashboard_api, DASHBOARD_OPEN_PATHS)
