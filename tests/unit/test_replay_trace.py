"""Trace files: validation errors name the line; generated traces arrive at the asked rate."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest

from router.catalog import Catalog
from router.replay.capacity import fleet_capacity_per_s
from router.replay.generate import ARRIVALS, TraceSpec, generate_trace
from router.replay.scenarios import PURPOSE_MIX, SIZE_MIX, TIER_MIX, URGENCY_MIXES
from router.replay.trace import TraceError, TraceRequest, read_trace, write_trace

GOOD = {"t": 0.0, "purpose": "portrait", "urgency": "high", "quality": "high", "width": 1024, "height": 1024}


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", r"trace.jsonl:2: not valid JSON"),
        ("[1, 2]", r"trace.jsonl:2: expected a JSON object, got list"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "purpose"}),
            r"trace.jsonl:2: purpose: Field required",
        ),
        (json.dumps({**GOOD, "colour": "red"}), r"trace.jsonl:2: colour: Extra inputs are not permitted"),
        (json.dumps({**GOOD, "quality": "ultra"}), r"trace.jsonl:2: quality: Input should be"),
        (json.dumps({**GOOD, "t": -1}), r"trace.jsonl:2: t: Input should be greater than or equal to 0"),
        (json.dumps({**GOOD, "purpose": "poetry"}), r"trace.jsonl:2: unknown purpose 'poetry'; one of: "),
        (json.dumps({**GOOD, "urgency": "yesterday"}), r"trace.jsonl:2: unknown urgency 'yesterday'"),
        (json.dumps({**GOOD, "width": 1001}), r"trace.jsonl:2: width 1001 px must be"),
        (
            json.dumps({**GOOD, "t": 5.0}) + "\n" + json.dumps(GOOD),
            r"trace.jsonl:3: t=0 is before the previous",
        ),
    ],
    ids=[
        "not-json",
        "not-object",
        "missing-field",
        "extra-field",
        "bad-tier",
        "negative-t",
        "unknown-purpose",
        "unknown-urgency",
        "size-not-multiple",
        "time-goes-back",
    ],
)
def test_a_bad_line_is_named(tmp_path: Path, catalog: Catalog, bad_line: str, expected: str) -> None:
    path = _write(tmp_path, [json.dumps(GOOD), bad_line])
    with pytest.raises(TraceError, match=expected):
        read_trace(path, catalog)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "no such trace file"), ("\n\n", "the trace has no requests")],
    ids=["missing-file", "empty-file"],
)
def test_missing_or_empty_trace(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "trace.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TraceError, match=expected):
        read_trace(path)


def test_write_then_read_round_trips(tmp_path: Path, catalog: Catalog) -> None:
    reqs = [
        TraceRequest.model_validate(GOOD),
        TraceRequest.model_validate({**GOOD, "t": 2.5, "deadline_s": 12}),
    ]
    path = tmp_path / "t.jsonl"
    assert write_trace(path, reqs) == 2
    assert read_trace(path, catalog) == reqs
    assert "deadline_s" not in path.read_text().splitlines()[0]  # unset optional fields are left out


@pytest.mark.parametrize("table", [PURPOSE_MIX, TIER_MIX, SIZE_MIX, *URGENCY_MIXES.values()])
def test_mix_tables_are_probabilities(table: dict[str, float]) -> None:
    assert sum(table.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("arrivals", "load", "tolerance"),
    [("poisson", 0.8, 0.05), ("poisson", 1.2, 0.05), ("bursty", 0.8, 0.08), ("diurnal", 0.5, 0.05)],
    ids=["poisson-0.8", "poisson-1.2", "bursty-0.8", "diurnal-0.5"],
)
def test_generated_rate_matches_the_load(
    catalog: Catalog, arrivals: str, load: float, tolerance: float
) -> None:
    duration_s = 4 * 86_400.0  # whole days: the diurnal cycle averages out
    trace = generate_trace(
        catalog, TraceSpec(arrivals=arrivals, load=load, seed=7, requests=None, duration_s=duration_s)
    )
    rate = len(trace) / duration_s
    assert rate == pytest.approx(load * fleet_capacity_per_s(catalog), rel=tolerance)
    assert all(a.t <= b.t for a, b in pairwise(trace))
    assert trace[-1].t <= duration_s


def test_bursty_is_burstier_than_poisson(catalog: Catalog) -> None:
    """Counts per minute vary far more under on/off arrivals than under Poisson at the same rate."""

    def dispersion(arrivals: str) -> float:
        trace = generate_trace(catalog, TraceSpec(arrivals=arrivals, load=1.0, seed=3, requests=6000))
        counts: dict[int, int] = {}
        for r in trace:
            counts[int(r.t // 60)] = counts.get(int(r.t // 60), 0) + 1
        values = [counts.get(m, 0) for m in range(int(trace[-1].t // 60))]
        mean = sum(values) / len(values)
        return sum((v - mean) ** 2 for v in values) / len(values) / mean

    assert dispersion("poisson") == pytest.approx(1.0, abs=0.2)  # Poisson: variance = mean
    assert dispersion("bursty") > 1.5


@pytest.mark.parametrize("mix", list(URGENCY_MIXES))
def test_urgency_mix_is_followed(catalog: Catalog, mix: str) -> None:
    trace = generate_trace(catalog, TraceSpec(mix=mix, seed=1, requests=3000))
    for urgency, share in URGENCY_MIXES[mix].items():
        seen = sum(1 for r in trace if r.urgency == urgency) / len(trace)
        assert seen == pytest.approx(share, abs=0.03)


def test_same_seed_same_trace_other_seed_other_trace(catalog: Catalog) -> None:
    a = generate_trace(catalog, TraceSpec(seed=5, requests=50))
    assert a == generate_trace(catalog, TraceSpec(seed=5, requests=50))
    assert a != generate_trace(catalog, TraceSpec(seed=6, requests=50))


@pytest.mark.parametrize("arrivals", ARRIVALS)
def test_generated_traces_pass_validation(tmp_path: Path, catalog: Catalog, arrivals: str) -> None:
    path = tmp_path / "g.jsonl"
    write_trace(path, generate_trace(catalog, TraceSpec(arrivals=arrivals, seed=2, requests=200)))
    assert len(read_trace(path, catalog)) == 200


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"arrivals": "fractal"}, "unknown arrivals"),
        ({"mix": "chaotic"}, "unknown mix"),
        ({"load": 0}, "load must be > 0"),
        ({"requests": None}, "exactly one of requests and duration_s"),
        ({"duration_s": 10.0}, "exactly one of requests and duration_s"),
    ],
    ids=["arrivals", "mix", "load", "neither", "both"],
)
def test_bad_trace_specs(kwargs: dict[str, object], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        TraceSpec(**kwargs)  # type: ignore[arg-type]
