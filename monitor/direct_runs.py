"""Runs that bypassed the router: prompts someone sent to a backend's ComfyUI directly.

The router writes its attempt rows (with the prompt_id) BEFORE submitting, so any finished
prompt in a backend's /history whose id is not in `model_usage_log` was not the router's.
Those are logged as `source = 'direct'` so the GPU's cost accounting covers everything that
ran on it: the model from the graph's loader nodes, the duration from the execution messages'
timestamps (ComfyUI's own clock, milliseconds), the cost from the backend's $/hour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from monitor.comfyui import HttpGetter
from monitor.targets import BackendTarget
from router.catalog import Catalog
from router.catalog.schema import Model
from router.comfyui.protocol import is_out_of_memory
from router.db.models import ModelUsageLog

HISTORY_ITEMS = 200  # newest prompts read per backend and pass: bounded work
SAMPLER_CLASSES = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
LATENT_CLASSES = ("EmptyLatentImage", "EmptySD3LatentImage")
ENDINGS = {
    "execution_success": "ok",
    "execution_error": "backend_error",
    "execution_interrupted": "cancelled",
}


def _nodes(prompt_field: Any) -> Mapping[str, Any]:
    """/history keeps the prompt as [number, prompt_id, graph, extra_data, outputs]."""
    if isinstance(prompt_field, list) and len(prompt_field) > 2 and isinstance(prompt_field[2], Mapping):
        return prompt_field[2]
    return {}


def _inputs_of(nodes: Mapping[str, Any], classes: Iterable[str]) -> Mapping[str, Any]:
    wanted = set(classes)
    for node in nodes.values():
        if isinstance(node, Mapping) and node.get("class_type") in wanted:
            inputs = node.get("inputs")
            return inputs if isinstance(inputs, Mapping) else {}
    return {}


def match_model(nodes: Mapping[str, Any], catalog: Catalog | None) -> tuple[str, Model | None]:
    """The catalog model whose files the graph loads most, else the first file name loaded."""
    names = {
        value
        for node in nodes.values()
        if isinstance(node, Mapping)
        for value in (node.get("inputs") or {}).values()
        if isinstance(value, str)
        and value.endswith((".safetensors", ".ckpt", ".pt", ".pth", ".gguf", ".onnx"))
    }
    best: tuple[int, Model | None] = (0, None)
    for model in catalog.models if catalog else ():
        hits = sum(1 for f in model.files.values() if f in names)
        if hits > best[0]:
            best = (hits, model)
    if best[1] is not None:
        return best[1].id, best[1]
    return (f"unknown:{sorted(names)[0]}" if names else "unknown")[:64], None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def row_for(
    prompt_id: str, entry: Mapping[str, Any], backend: str, catalog: Catalog | None
) -> dict[str, Any] | None:
    """A model_usage_log row for a finished prompt, or None while it has not finished."""
    status = entry.get("status") or {}
    messages = {kind: data for kind, data in status.get("messages") or [] if isinstance(data, Mapping)}
    end_kind = next((k for k in ENDINGS if k in messages), None)
    start = messages.get("execution_start", {}).get("timestamp")
    if end_kind is None or not isinstance(start, int):
        return None
    end = messages[end_kind].get("timestamp")
    end_ms = end if isinstance(end, int) else start
    nodes = _nodes(entry.get("prompt"))
    model_name, model = match_model(nodes, catalog)
    sampler, latent = _inputs_of(nodes, SAMPLER_CLASSES), _inputs_of(nodes, LATENT_CLASSES)
    actual_s = max(0.0, (end_ms - start) / 1000.0)
    outcome, error = ENDINGS[end_kind], None
    if end_kind == "execution_error":
        err = messages[end_kind]
        error = f"{err.get('exception_type', '')}: {err.get('exception_message', '')}"[:2000]
        if is_out_of_memory(str(err.get("exception_type", "")), str(err.get("exception_message", ""))):
            outcome = "oom"
    usd_per_hour = next(
        (b.usd_per_hour for b in (catalog.backends if catalog else ()) if b.id == backend), None
    )
    return {
        "job_id": None,
        "attempt": 1,
        "source": "direct",
        "prompt_id": prompt_id[:64],
        "started_at": datetime.fromtimestamp(start / 1000.0, UTC),
        "finished_at": datetime.fromtimestamp(end_ms / 1000.0, UTC),
        "backend": backend,
        "model_name": model_name,
        "steps": _int(sampler.get("steps")),
        "width": _int(latent.get("width")),
        "height": _int(latent.get("height")),
        "actual_s": round(actual_s, 4),
        "outcome": outcome,
        "error": error,
        "cost_usd": round(usd_per_hour * actual_s / 3600.0, 8) if usd_per_hour is not None else None,
        "hosted_usd": model.hosted_usd_per_image if model is not None and outcome == "ok" else None,
        "degraded": False,
    }


class DirectRunLogger:
    def __init__(
        self,
        targets: list[BackendTarget],
        catalog: Catalog | None,
        engine: Engine,
        session_factory: Callable[[], HttpGetter],
        logger: logging.Logger,
        timeout_s: float = 5.0,
    ) -> None:
        self.targets = targets
        self.catalog = catalog
        self.engine = engine
        self._session = session_factory()
        self.logger = logger
        self.timeout_s = timeout_s
        self._known: set[str] = set()  # prompt ids already logged or known to be the router's

    def run(self) -> int:
        """One pass over every backend; returns how many direct runs were logged. Never raises."""
        logged = 0
        for target in self.targets:
            try:
                logged += self._scan(target)
            except Exception as exc:  # a backend or database problem skips this pass, not the monitor
                self.logger.warning("direct-run scan of %s failed: %s", target.id, exc)
        return logged

    def _scan(self, target: BackendTarget) -> int:
        resp = self._session.get(
            f"{target.url}/history?max_items={HISTORY_ITEMS}", timeout=(2.0, self.timeout_s)
        )
        resp.raise_for_status()
        history = resp.json()
        if not isinstance(history, Mapping):
            return 0
        fresh = [pid for pid in history if isinstance(pid, str) and pid not in self._known]
        if not fresh:
            return 0
        with self.engine.begin() as conn:
            seen = set(
                conn.execute(
                    select(ModelUsageLog.prompt_id).where(ModelUsageLog.prompt_id.in_(fresh))
                ).scalars()
            )
            rows = []
            for pid in fresh:
                if pid in seen:
                    self._known.add(pid)
                    continue
                row = row_for(pid, history[pid], target.id, self.catalog)
                if row is not None:
                    rows.append(row)
                    self._known.add(pid)
            if rows:
                conn.execute(insert(ModelUsageLog), rows)
        if rows:
            self.logger.info("logged %d run(s) on %s that bypassed the router", len(rows), target.id)
        return len(rows)
