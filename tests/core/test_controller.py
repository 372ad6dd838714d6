"""The controller on recorded-style traces: MDInference model choice, levels, no flapping."""

import itertools

from mobieye.config import ControllerConfig
from mobieye.controller import (
    DEFAULT_LEVELS,
    ControllerState,
    Observation,
    choose_model,
    decide_level,
    latency_cause,
    starting_model,
)
from mobieye.messages import ModelInfo

LADDER = (
    ModelInfo(label="small", accuracy=25.5, mean_ms=5, std_ms=1),
    ModelInfo(label="medium", accuracy=27.6, mean_ms=14, std_ms=2),
    ModelInfo(label="large", accuracy=28.0, mean_ms=22, std_ms=3),
)
CFG = ControllerConfig(sla_ms=100, min_dwell_s=3, confirm=2)


def test_most_accurate_model_that_fits_else_the_fastest() -> None:
    assert choose_model(LADDER, 100).label == "large"  # type: ignore[union-attr]
    assert choose_model(LADDER, 24).label == "medium"  # 22 + 3 > 24
    assert choose_model(LADDER, 6).label == "small"
    assert choose_model(LADDER, 2).label == "small"  # none fits: the fastest
    assert choose_model((), 100) is None


def test_a_stream_starts_on_the_model_the_worker_s_load_allows() -> None:
    # 5 detections/s per stream: 'large' (22 ms) fills 11% of the detector per stream.
    def start(streams: int) -> str:
        model = starting_model(LADDER, streams, 5.0)
        assert model is not None
        return model.label

    assert start(1) == "large" and start(6) == "large"  # 66% <= 70%
    assert start(7) == "medium"  # 'large' would fill 77%; 'medium' 49%
    assert start(28) == "small"  # 'medium' 98%; 'small' 70%
    assert start(100) == "small"  # none fits: the fastest
    assert starting_model(LADDER, 0, 5.0).label == "large"  # type: ignore[union-attr]
    assert starting_model((), 3, 5.0) is None


def run(trace: list[dict[str, float]], cfg: ControllerConfig = CFG) -> list[tuple[int, str]]:
    state, out = ControllerState(), []
    for t, row in enumerate(trace):
        obs = Observation(
            now_s=float(t),
            latency_p95_ms=row["p95"],
            result_ratio=row.get("ratio", 1.0),
            rtt_ms=row.get("rtt", 1.0),
            rtt_min_ms=1.0,
            queue_ms=row.get("queue", 0.0),
            worker_drop_ratio=row.get("skipped"),
            models=LADDER,
        )
        state, d = decide_level(cfg, state, obs)
        out.append((d.level_index, d.model or ""))
    return out


def test_overload_steps_down_then_recovers_slowly_without_flapping() -> None:
    # Congestion: the round trip grows with the latency.
    trace = [{"p95": 20}] * 4 + [{"p95": 180, "rtt": 60}] * 6 + [{"p95": 30}] * 14
    levels = [lvl for lvl, _ in run(trace)]
    assert levels[:4] == [0, 0, 0, 0]
    # One step down per dwell time (3 s), counted from the first decision, not at once.
    assert levels[4] == 1 and levels[5:7] == [1, 1] and levels[7] == 2
    assert max(levels) == 2
    assert levels[-1] < 2  # back up after twice the dwell time with headroom
    changes = sum(a != b for a, b in itertools.pairwise(levels))
    assert changes <= 4


def test_start_up_spike_does_not_trigger_a_step_down() -> None:
    levels = [lvl for lvl, _ in run([{"p95": 400}, {"p95": 15}, {"p95": 14}, {"p95": 15}])]
    assert levels == [0, 0, 0, 0]


def test_model_switch_needs_confirmation_and_follows_the_network() -> None:
    # RTT grows (a worse network): the budget shrinks and the model steps down, after 2 ticks.
    trace = [{"p95": 40, "rtt": 5}] * 3 + [{"p95": 90, "rtt": 80}] * 3 + [{"p95": 40, "rtt": 5}]
    models = [m for _, m in run(trace)]
    assert models[:3] == ["large"] * 3
    assert models[3] == "large"  # one disagreeing decision is not enough
    assert models[4] == "medium"  # budget 100 - 80 = 20 ms: medium fits (14 + 2), large not
    assert models[6] == "medium"  # and one good tick doesn't switch back


def test_missing_results_count_as_overload_when_the_worker_skips_frames() -> None:
    for skipped in (0.4, None):  # the worker says it skips frames, or says nothing (older one)
        levels = [lvl for lvl, _ in run([{"p95": 10, "ratio": 0.5, "skipped": skipped}] * 5)]
        assert levels[-1] >= 1, skipped
        assert DEFAULT_LEVELS[levels[-1]].bitrate_kbps < DEFAULT_LEVELS[0].bitrate_kbps


def test_results_lost_on_the_link_do_not_cost_frames() -> None:
    # A lossy link: 15% of frames never answered, the worker keeps up with all it decodes and
    # latency is fine. Fewer frames would not bring the lost ones back: no step down.
    levels = [lvl for lvl, _ in run([{"p95": 60, "ratio": 0.85, "skipped": 0.0}] * 10)]
    assert levels == [0] * 10
    # Latency over the SLA with the round trip at its base: the tail is the loss's
    # (retransmissions, recovery keyframes); a cheaper level would only cost accuracy.
    levels = [lvl for lvl, _ in run([{"p95": 160, "ratio": 0.85, "skipped": 0.0}] * 8)]
    assert levels == [0] * 8
    # The same p95 with the round trip growing over its base (queues: congestion) steps down,
    # as does the worker's own queue growing.
    congested = [{"p95": 160, "ratio": 0.85, "skipped": 0.0, "rtt": 90.0}] * 5
    assert run(congested)[-1][0] >= 1
    queued = [{"p95": 160, "ratio": 0.85, "skipped": 0.0, "queue": 40.0}] * 5
    assert run(queued)[-1][0] >= 1


def test_latency_cause_tells_congestion_from_loss_and_the_worker() -> None:
    def obs(**kw: float) -> Observation:
        base: dict[str, float] = {"rtt_ms": 72.0, "rtt_min_ms": 70.0}
        return Observation(now_s=0, latency_p95_ms=300, result_ratio=1.0, **{**base, **kw})

    lte = ControllerConfig(sla_ms=250)
    assert latency_cause(lte, obs()) == "loss"
    assert latency_cause(lte, obs(rtt_ms=130.0)) == "congestion"  # 60 ms of queueing
    assert latency_cause(lte, obs(rtt_ms=100.0)) == "loss"  # 30 ms: under 15% of the SLA
    assert latency_cause(lte, obs(queue_ms=80.0)) == "worker"
    assert latency_cause(lte, obs(worker_drop_ratio=0.2)) == "worker"
    assert latency_cause(lte, obs(rtt_ms=None)) == "congestion"  # can't tell: the safe answer
