"""What `POST /select-and-run` adds over submitting the same graph straight to ComfyUI.

One simulator process (`python -m router.simulator serve`, the shipped catalog with millisecond
times from `fast_catalog()`, GPU a100) serves both paths:

  A  direct: `ComfyUIClient.run()` of `checkpoint_txt2img` rendered with the values the router
     picks (sdxl-base, 1 step, 512x512): POST /prompt + WebSocket until done + /history.
  B  routed: `POST /select-and-run` (wait=true) to a live router (`python -m router serve`,
     gunicorn, 1 worker x 4 threads, SQLite database in a temporary folder) whose catalog has that
     simulator as its only backend: validation, selection, 5 SQLite commits (job, attempt),
     the same submission, fetching the PNG and storing it, the job view.

Pairs are interleaved (A/B then B/A, alternately), N=200 (50 with --quick) after a warm-up;
every run has its own seed, so the simulator's output cache never serves one run from the
previous (loader and text encoders are cached in both paths alike). Each process has its own
interpreter, so neither path pays for the other's GIL.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import requests

from router.bench._support import (
    ROOT,
    Child,
    child_env,
    figure,
    free_port,
    ms,
    percentile,
    scratch_dir,
    verdict,
)
from router.catalog import Catalog, load_catalog
from router.comfyui import ComfyUIClient, Succeeded
from router.simulator.testing import fast_catalog
from router.workflows.templates import TemplateRegistry

GOAL_ADDED_MEDIAN_MS = 15.0
SEED_BAR_MS = 5.0
BACKEND = "a100"
MODEL = "sdxl-base"
WARMUP_PAIRS = 5
REQUEST: dict[str, Any] = {
    "purpose": "text-to-image",
    "urgency": "batch",
    "quality": "standard",
    "model": MODEL,
    "steps": 1,
    "width": 512,
    "height": 512,
    "prompt": "a red fox in the snow",
}


@functools.cache
def fast_shipped_catalog() -> Catalog:
    return fast_catalog(load_catalog(ROOT / "models_config.json"))


def write_catalogs(workdir: Path, sim_url: str) -> tuple[Path, Path]:
    """(simulator catalog, router catalog): the fast shipped catalog; the router's names only
    BACKEND, at the simulator's URL."""
    fast = fast_shipped_catalog()
    sim_path = workdir / "sim-catalog.json"
    sim_path.write_text(json.dumps(fast.model_dump(mode="json", by_alias=True, exclude_none=True)))
    routed = fast.model_dump(mode="json", by_alias=True, exclude_none=True)
    routed["backends"] = [{**b, "url": sim_url} for b in routed["backends"] if b["id"] == BACKEND]
    router_path = workdir / "router-catalog.json"
    router_path.write_text(json.dumps(routed))
    return sim_path, router_path


def direct_graph(decision: dict[str, Any], seed: int, prefix: str) -> dict[str, Any]:
    """The graph the router renders for `decision` (router.runs.render.render_graph's values)."""
    model = fast_shipped_catalog().model(decision["model"])
    assert model is not None and model.workflow == "checkpoint_txt2img"
    spec = model.tiers[decision["tier"]]
    values: dict[str, object] = {
        "prompt": REQUEST["prompt"],
        "negative_prompt": "",
        "seed": seed,
        "steps": decision["steps"],
        "cfg": decision["cfg"],
        "width": decision["width"],
        "height": decision["height"],
        "batch_size": 1,
        "sampler": spec.sampler,
        "scheduler": spec.scheduler,
        "filename_prefix": prefix,
        **model.files,
    }
    return TemplateRegistry().get("checkpoint_txt2img").render(values)


def latest_history_graph(sim_url: str) -> dict[str, Any] | None:
    history = requests.get(f"{sim_url}/history", timeout=10).json()
    if not history:
        return None
    entry = max(history.values(), key=lambda e: e["prompt"][0])
    graph: dict[str, Any] = entry["prompt"][2]
    return graph


def normalised(graph: dict[str, Any]) -> dict[str, Any]:
    """The graph without what differs by design between runs: seed and output prefix."""
    out: dict[str, Any] = json.loads(json.dumps(graph))
    for node in out.values():
        node.pop("_meta", None)
        inputs = node.get("inputs", {})
        if "seed" in inputs:
            inputs["seed"] = 0
        if "filename_prefix" in inputs:
            inputs["filename_prefix"] = ""
    return out


def summary(samples_s: list[float]) -> dict[str, float]:
    return {
        "median_ms": ms(statistics.median(samples_s)),
        "p90_ms": ms(percentile(samples_s, 90)),
        "min_ms": ms(min(samples_s)),
        "max_ms": ms(max(samples_s)),
    }


class Pairs:
    """The two paths against the live simulator and router; successful times in seconds."""

    def __init__(self, sim_url: str, router_url: str) -> None:
        self.sim_url = sim_url
        self.router_url = router_url
        self.session = requests.Session()
        self.client = ComfyUIClient(sim_url, timeout_s=10.0)
        t0 = time.monotonic()
        r = self.session.post(f"{router_url}/select", json=REQUEST, timeout=90)
        self.first_select_s = round(time.monotonic() - t0, 3)
        if r.status_code != 200:
            raise RuntimeError(f"/select answered {r.status_code}: {r.text[:500]}")
        self.decision: dict[str, Any] = r.json()
        self.seed = 1000  # every run its own seed: the simulator's cache never serves a whole run
        self.direct: list[float] = []
        self.routed: list[float] = []
        self.fetch: list[float] = []
        self.failures: list[str] = []

    def run_direct(self, i: int) -> None:
        self.seed += 1
        graph = direct_graph(self.decision, self.seed, f"bench/direct-{i}")
        t0 = time.perf_counter()
        outcome = self.client.run(graph, timeout_s=30)
        elapsed = time.perf_counter() - t0
        if not isinstance(outcome, Succeeded):
            self.failures.append(f"direct {i}: {outcome.kind}")
            return
        self.direct.append(elapsed)
        t1 = time.perf_counter()
        self.client.fetch_image(outcome.images[0])  # not in A: what fetching the PNG costs
        self.fetch.append(time.perf_counter() - t1)

    def run_routed(self, i: int) -> None:
        self.seed += 1
        body = {**REQUEST, "seed": self.seed}
        t0 = time.perf_counter()
        r = self.session.post(f"{self.router_url}/select-and-run", json=body, timeout=60)
        elapsed = time.perf_counter() - t0
        job = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code != 200 or job.get("status") != "succeeded":
            self.failures.append(f"routed {i}: HTTP {r.status_code} {str(job)[:300]}")
            return
        self.routed.append(elapsed)

    def warm_up(self) -> bool:
        """WARMUP_PAIRS pairs, not counted; True when the router submitted the graph A renders."""
        for i in range(WARMUP_PAIRS):
            self.run_direct(-1 - i)
            self.run_routed(-1 - i)
        routed_graph = latest_history_graph(self.sim_url)
        same = routed_graph is not None and normalised(routed_graph) == normalised(
            direct_graph(self.decision, 0, "")
        )
        for kept in (self.direct, self.routed, self.fetch, self.failures):
            kept.clear()
        return same

    def measure(self, pairs: int) -> None:
        for i in range(pairs):
            order = (self.run_direct, self.run_routed) if i % 2 == 0 else (self.run_routed, self.run_direct)
            for step in order:
                step(i)

    def close(self) -> None:
        self.client.close()
        self.session.close()


def run(quick: bool = False) -> dict[str, Any]:
    with scratch_dir("bench-run-overhead-") as workdir:
        return run_in(workdir, quick)


def run_in(workdir: Path, quick: bool) -> dict[str, Any]:
    pairs = 50 if quick else 200
    sim_port, router_port = free_port(), free_port()
    sim_url, router_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{router_port}"
    sim_catalog, router_catalog = write_catalogs(workdir, sim_url)
    sim_argv = [sys.executable, "-m", "router.simulator", "serve", "--host", "127.0.0.1"]
    sim_argv += ["--port", str(sim_port), "--gpu", BACKEND, "--config", str(sim_catalog)]
    router_env = child_env(
        DATABASE_URL=f"sqlite:///{workdir / 'router.db'}",
        COMFY_ROUTER_CONFIG=str(router_catalog),
        COMFY_ROUTER_DATA_DIR=str(workdir / "data"),
    )
    router_argv = [sys.executable, "-m", "router", "serve", "--host", "127.0.0.1", "--port", str(router_port)]
    router_argv += ["--workers", "1", "--threads", "4"]
    with (
        Child(sim_argv, log_path=workdir / "simulator.log", env=child_env(), cwd=workdir) as sim,
        Child(router_argv, log_path=workdir / "router.log", env=router_env, cwd=workdir) as router,
    ):
        sim.wait_http(f"{sim_url}/system_stats", timeout_s=60)
        router.wait_http(f"{router_url}/healthz", timeout_s=90)
        runs = Pairs(sim_url, router_url)
        try:
            same_graph = runs.warm_up()
            runs.measure(pairs)
        finally:
            runs.close()
    if not runs.direct or not runs.routed:
        raise RuntimeError(f"no successful runs: {runs.failures[:5]}")
    return summarise(runs, pairs, same_graph)


def summarise(runs: Pairs, pairs: int, same_graph: bool) -> dict[str, Any]:
    n = min(len(runs.direct), len(runs.routed))
    diffs = [b - a for a, b in zip(runs.direct[:n], runs.routed[:n], strict=True)]
    a, b = summary(runs.direct), summary(runs.routed)
    added_median = ms(statistics.median(diffs))
    added_p90 = ms(percentile(diffs, 90))
    diff_of_medians = round(b["median_ms"] - a["median_ms"], 3)
    met = added_median <= GOAL_ADDED_MEDIAN_MS
    seed_met = added_median <= SEED_BAR_MS
    ratio = round(b["median_ms"] / a["median_ms"], 2) if a["median_ms"] else None
    failures = runs.failures
    chosen = {
        k: runs.decision.get(k) for k in ("model", "tier", "backend", "steps", "cfg", "width", "height")
    }
    out: dict[str, Any] = {
        "setup": {
            "simulator": f"python -m router.simulator serve --gpu {BACKEND}, fast_catalog() times",
            "router": "python -m router serve: gunicorn gthread, 1 worker x 4 threads",
            "database": "SQLite (WAL) in a temporary folder",
            "request": REQUEST,
            "chosen": chosen,
            "same_graph_as_router": same_graph,
            "first_select_s": runs.first_select_s,
            "pairs": pairs,
            "warmup_pairs": WARMUP_PAIRS,
            "order": "interleaved: A,B then B,A alternately",
        },
        "direct": a,
        "routed": b,
        "added_median_ms": added_median,
        "added_p90_ms": added_p90,
        "median_routed_minus_median_direct_ms": diff_of_medians,
        "ratio_routed_to_direct_median": ratio,
        "image_fetch_median_ms": ms(statistics.median(runs.fetch)) if runs.fetch else None,
        "failures": failures[:20],
        "failure_count": len(failures),
        "goal": f"added median <= {GOAL_ADDED_MEDIAN_MS:g} ms (seed's bar about {SEED_BAR_MS:g} ms)",
        "goal_met": met and not failures,
        "seed_bar_met": seed_met,
    }
    out["figures"] = [
        figure("A direct ComfyUIClient.run median", a["median_ms"], "ms"),
        figure("A direct p90", a["p90_ms"], "ms"),
        figure("B /select-and-run median", b["median_ms"], "ms"),
        figure("B /select-and-run p90", b["p90_ms"], "ms"),
        figure("added median (paired B-A)", added_median, "ms", f"<= {GOAL_ADDED_MEDIAN_MS:g}", met),
        figure("added median vs the seed's bar", added_median, "ms", f"<= {SEED_BAR_MS:g} (seed)", seed_met),
        figure("added p90 (paired B-A)", added_p90, "ms"),
        figure("B/A median ratio (same run)", ratio, "x"),
        figure("failed runs", len(failures), f"of {2 * pairs}", "= 0", not failures),
    ]
    print(f"  simulator: {out['setup']['simulator']}; router: {out['setup']['router']}, SQLite")
    size = f"{chosen['width']}x{chosen['height']}"
    print(
        f"  graph: {chosen['model']}/{chosen['tier']} {chosen['steps']} step {size} on {chosen['backend']};"
        f" same graph as the router submits: {same_graph}"
    )
    print(f"  {n} interleaved pairs (+{WARMUP_PAIRS} warm-up), failures {len(failures)}")
    print(f"  A direct ComfyUIClient.run : median {a['median_ms']:7.2f} ms  p90 {a['p90_ms']:7.2f} ms")
    print(f"  B POST /select-and-run     : median {b['median_ms']:7.2f} ms  p90 {b['p90_ms']:7.2f} ms")
    print(
        f"  added (paired B-A): median {added_median:.2f} ms  p90 {added_p90:.2f} ms;"
        f" median(B)-median(A) {diff_of_medians:.2f} ms; B/A x{ratio} (same run);"
        f" fetching the PNG (timed after A, not in A) ~{out['image_fetch_median_ms']} ms"
    )
    print(f"  goal added median <= {GOAL_ADDED_MEDIAN_MS:g} ms: {verdict(out['goal_met'])}")
    print(f"  the seed's bar, about {SEED_BAR_MS:g} ms: {verdict(seed_met)}")
    return out
