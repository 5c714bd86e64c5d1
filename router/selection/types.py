"""Values the pure selector takes and returns. No I/O, no clock: everything arrives as data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from router.catalog.schema import Backend, Catalog, Model, TierName, TierSpec


@dataclass(frozen=True)
class Need:
    """What a request asks for, already validated and resolved against the catalog."""

    purpose: str
    deadline_s: float
    target_tier: TierName = "high"
    width: int = 1024
    height: int = 1024
    batch_size: int = 1
    min_quality: float | None = None
    max_cost_usd: float | None = None
    steps: int | None = None
    cfg: float | None = None
    model: str | None = None
    allow_degrade: bool = True
    inputs: frozenset[str] = frozenset()  # "image", "mask", "face" present in the request
    front: bool = False  # submitted to the front of ComfyUI's queue (the urgency's `front`)
    exclude: frozenset[tuple[str, str, str]] = frozenset()  # candidate keys already tried by this job

    @classmethod
    def for_urgency(cls, catalog: Catalog, urgency: str, deadline_s: float | None, **fields: Any) -> Need:
        """The Need of a request of `urgency` (a name in the catalog): its deadline, unless the
        request sets its own, and its queue priority come from the catalog. One place for the API
        and for trace replay, so that both decide alike."""
        terms = catalog.urgencies[urgency]
        return cls(
            deadline_s=deadline_s if deadline_s is not None else terms.deadline_s, front=terms.front, **fields
        )


@dataclass(frozen=True)
class BackendView:
    """A backend as the selector sees it at one instant (from a state provider)."""

    backend: Backend
    healthy: bool = True
    unhealthy_reason: str | None = None
    vram_free_mb: int | None = None  # None: unknown, the catalog's vram_mb is assumed free
    # VRAM held by models ComfyUI keeps cached and evicts on demand for another model (torch's
    # allocated memory on the card). None: unknown, only `loaded_model`'s size is assumed reclaimable.
    vram_reclaimable_mb: int | None = None
    loaded_model: str | None = None  # the model ComfyUI last ran there (kept in VRAM)
    queue_s: float = 0.0  # expected wait before a new prompt starts
    # The same for a prompt sent to the queue's front, and the model loaded when it would start
    # (None: not known, queue_s and loaded_model are used for front prompts too).
    front_queue_s: float | None = None
    front_loaded_model: str | None = None
    # Other models expected to be still cached on the card then (ComfyUI keeps models loaded until
    # it needs the memory): starting them costs no load either.
    resident_models: frozenset[str] = frozenset()
    # (model id, workflow template) -> what this backend lacks to run it (node classes, model files)
    missing: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)


class Estimate(NamedTuple):
    queue_s: float
    load_s: float
    run_s: float
    total_s: float  # invariant: queue_s + load_s + run_s (use Estimate.of)

    @classmethod
    def of(cls, queue_s: float, load_s: float, run_s: float) -> Estimate:
        return cls(queue_s, load_s, run_s, queue_s + load_s + run_s)


class Candidate(NamedTuple):
    """One model x tier x backend, with what it would render and its estimates.

    A NamedTuple, not a dataclass: hundreds are built per request and tuple construction is
    several times cheaper than a frozen dataclass's __init__ (see `make bench`).
    """

    model: Model
    tier: TierName
    spec: TierSpec
    view: BackendView
    steps: int
    cfg: float
    width: int
    height: int
    estimate: Estimate
    vram_needed_mb: int
    vram_available_mb: int
    estimated_cost_usd: float
    key: tuple[str, str, str]  # (model id, tier, backend id): unique within one request
    quality: float  # invariant: spec.quality (a field, not a property: read thousands of times)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a filter refused a candidate: a machine code, a sentence, and the numbers behind it."""

    code: str
    message: str
    numbers: Mapping[str, Any] = field(default_factory=dict)

    def as_text(self) -> str:
        nums = " ".join(f"{k}={_fmt(v)}" for k, v in self.numbers.items())
        return f"{self.code} {nums}".strip()


class Scored(NamedTuple):
    candidate: Candidate
    band: int
    score: float  # weighted mean of the normalised scores, 0-100
    names: tuple[str, ...]  # the scorers that ran, in order
    values: tuple[float, ...]  # their normalised scores, 0-100

    @property
    def parts(self) -> dict[str, float]:
        """Scorer name -> normalised score 0-100."""
        return dict(zip(self.names, self.values, strict=True))


class Verdict(NamedTuple):
    """The filters' outcome for one candidate: feasible when no filter rejected it."""

    candidate: Candidate
    rejections: tuple[Rejection, ...]

    @property
    def feasible(self) -> bool:
        return not self.rejections


@dataclass(frozen=True)
class Selection:
    """The selector's answer. `chosen` is None when nothing can serve the request."""

    chosen: Candidate | None
    reason_code: str
    selection_reason: str
    verdicts: tuple[Verdict, ...]
    scores: Mapping[tuple[str, str, str], Scored]  # feasible candidates only, by Candidate.key
    ladder: tuple[Candidate, ...]
    deadline_s: float
    best_effort: bool = False


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
