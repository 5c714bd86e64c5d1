"""`--benchmark`: time each enabled model at a few step counts on a real backend, for the same fit.

Each model runs once to load (not timed), then at every step count `runs` times, at its
reference resolution. ComfyUI's own execution timestamps give the run seconds, so neither the
network nor the queue counts. Models whose workflow needs input images are skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from router.catalog.schema import Catalog, Model
from router.catalog.update.calibrate import RunRow
from router.comfyui import ComfyUIClient, Succeeded
from router.workflows.templates import TemplateRegistry

INPUT_SLOTS = frozenset({"image", "mask", "face_image"})


def runnable_models(catalog: Catalog, templates: TemplateRegistry) -> list[Model]:
    return [
        m
        for m in catalog.models
        if m.enabled and not (templates.get(m.workflow).required_slots() & INPUT_SLOTS)
    ]


def _graph(templates: TemplateRegistry, model: Model, steps: int, seed: int) -> dict[str, Any]:
    template = templates.get(model.workflow)
    tier = next(iter(model.tiers.values()))
    values: dict[str, object] = {
        "prompt": "a calibration image of a red cube on a table",
        "negative_prompt": "",
        "seed": seed,
        "steps": steps,
        "cfg": tier.cfg,
        "width": model.time.ref_width,
        "height": model.time.ref_height,
        "batch_size": 1,
        "filename_prefix": "comfy_router/calibration",
        **model.files,
    }
    return template.render({k: v for k, v in values.items() if k in template.slots})


def _seconds(outcome: Succeeded) -> float:
    server = outcome.timings.server_run_s
    if server is not None:
        return server
    started = outcome.started_at_s or 0.0
    return outcome.duration_s - started


def benchmark(
    catalog: Catalog,
    client: ComfyUIClient,
    backend_id: str,
    *,
    steps: Sequence[int] = (4, 8, 16),
    runs: int = 2,
    timeout_s: float = 600.0,
    out: TextIO = sys.stderr,
    templates: TemplateRegistry | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[RunRow]:
    templates = templates or TemplateRegistry()
    models = runnable_models(catalog, templates)
    total = len(models) * (1 + len(steps) * runs)
    done = 0
    rows: list[RunRow] = []

    def tick(label: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, label)
        else:
            filled = int(30 * done / max(1, total))
            print(
                f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} {label:<50}",
                end="",
                file=out,
                flush=True,
            )

    seed = 1
    for model in models:
        warm = client.run(_graph(templates, model, steps[0], seed), timeout_s=timeout_s)
        tick(f"{model.id} load" + ("" if isinstance(warm, Succeeded) else f" failed: {warm.kind}"))
        if not isinstance(warm, Succeeded):
            continue
        for n in steps:
            for _ in range(runs):
                seed += 1  # a new seed each run: ComfyUI would otherwise answer from its cache
                outcome = client.run(_graph(templates, model, n, seed), timeout_s=timeout_s)
                if isinstance(outcome, Succeeded):
                    s = _seconds(outcome)
                    rows.append(
                        RunRow(model.id, backend_id, "ok", n, model.time.ref_width, model.time.ref_height, s)
                    )
                    tick(f"{model.id} {n} steps {s:.2f} s")
                else:
                    tick(f"{model.id} {n} steps failed: {outcome.kind}")
    if progress is None:
        print(file=out)
    return rows
