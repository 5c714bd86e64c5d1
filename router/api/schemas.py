"""Pydantic models of every request and answer of the HTTP API (DESIGN.md section 2).

Requests forbid unknown fields and do not coerce types: `"width": "1024"` is an error that
names the field, not a silent conversion. Limits that depend on the catalog (maximum side,
prompt length...) are checked in `router.api.resolve` against the catalog in force.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from router.catalog.schema import TierName

# Upper bounds of sizes and lengths come from the catalog's limits (router.api.resolve), whose
# messages name the limit; the body size is bounded by the WSGI layer (413).
Side = Annotated[int, Field(gt=0, description="Pixels; within the catalog's limits.")]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SelectRequest(RequestModel):
    purpose: str = Field(min_length=1, max_length=64, description="What the image is for; see GET /models.")
    urgency: str | None = Field(
        default=None, max_length=32, description="realtime, high, normal (default) or batch."
    )
    deadline_s: float | None = Field(
        default=None, gt=0, le=86_400, description="Overrides the urgency's deadline, in seconds."
    )
    quality: TierName = Field(default="high", description="Target tier: the best the router may pick.")
    min_quality: float | None = Field(default=None, ge=0, le=100, description="Quality floor, 0-100.")
    max_cost_usd: float | None = Field(default=None, ge=0, description="Cap on the estimated GPU cost.")
    allow_degrade: bool = Field(
        default=True, description="When nothing meets the deadline, run the fastest rung instead of failing."
    )
    prompt: str = ""
    negative_prompt: str = ""
    width: Side = 1024
    height: Side = 1024
    seed: int | None = Field(default=None, ge=0, le=2**64 - 1)
    batch_size: int = Field(default=1, gt=0, le=64)
    steps: int | None = Field(default=None, gt=0, le=10_000)
    cfg: float | None = Field(default=None, ge=0, le=100)
    model: str | None = Field(default=None, min_length=1, max_length=64, description="Force this model.")
    images: list[str] = Field(default_factory=list, max_length=64, description="Input images, base64.")
    face_image: str | None = Field(default=None, description="Face to swap in, base64 (face-swap).")
    mask: str | None = Field(default=None, description="Inpaint mask, base64.")
    client_id: str | None = Field(default=None, min_length=1, max_length=128)


class SelectAndRunRequest(SelectRequest):
    wait: bool = Field(default=True, description="Answer when the job is done (false: 202 at once).")
    callback_url: str | None = Field(default=None, max_length=2048)
    output: Literal["url", "base64"] = "url"


class FeedbackRequest(RequestModel):
    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=4000)


class EstimateOut(BaseModel):
    queue_s: float
    load_s: float
    run_s: float
    total_s: float


class RejectionOut(BaseModel):
    code: str
    message: str
    numbers: dict[str, Any]


class ScoreOut(BaseModel):
    total: float = Field(description="Weighted mean of the normalised scores, 0-100.")
    band: int = Field(description="Quality band: the selector serves the best band first.")
    parts: dict[str, float] = Field(description="Scorer name -> normalised score 0-100.")


class RungOut(BaseModel):
    model: str
    tier: TierName
    backend: str
    steps: int
    cfg: float
    width: int
    height: int
    quality_score: float
    estimate: EstimateOut
    estimated_cost_usd: float


class CandidateOut(RungOut):
    feasible: bool
    vram_needed_mb: int
    vram_available_mb: int
    rejections: list[RejectionOut]
    score: ScoreOut | None


class Decision(BaseModel):
    job_id: str | None = Field(description="The jobs row recording this decision (null if not recorded).")
    model: str | None
    tier: TierName | None
    backend: str | None
    steps: int | None
    cfg: float | None
    width: int | None
    height: int | None
    quality_score: float | None
    estimate: EstimateOut | None
    estimated_cost_usd: float | None
    hosted_usd_per_image: float | None
    deadline_s: float
    best_effort: bool = Field(
        description="True when no candidate meets the deadline and this is the fastest."
    )
    selection_reason: str
    reason_code: str
    candidates: list[CandidateOut]
    ladder: list[RungOut]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorBody


class AttemptOut(BaseModel):
    attempt: int
    model: str
    tier: str | None
    backend: str
    steps: int | None
    width: int | None
    height: int | None
    started_at: str
    finished_at: str | None
    estimated_s: float | None
    duration_s: float | None
    outcome: str = Field(
        description="ok, degraded, timeout, oom, backend_error, invalid, cancelled (running)"
    )
    error: str | None
    cost_usd: float | None


class OutputOut(BaseModel):
    index: int
    url: str = Field(description="GET it for the PNG bytes")
    bytes: int
    base64: str | None = Field(
        default=None, description='Present when the request asked `"output": "base64"`'
    )


class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "selected"]
    created_at: str
    finished_at: str | None
    purpose: str
    urgency: str
    deadline_s: float
    model: str | None
    tier: str | None
    backend: str | None
    selection_reason: str | None
    reason_code: str | None
    degraded: bool
    deadline_met: bool | None
    estimated_cost_usd: float | None
    cost_usd: float | None
    error: str | None
    outputs: list[OutputOut]
    attempts: list[AttemptOut]
    decision: dict[str, Any] | None = Field(description="The Decision, without its candidate table")
