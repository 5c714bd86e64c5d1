"""`/select` over HTTP: throughput and latency of the router under gunicorn on loopback.

The router runs as `make run` runs it (`python -m router serve`, gunicorn gthread), with
2 worker processes x 2 threads, the shipped catalog (its two backends served by the built-in
simulator in the gunicorn master) and a SQLite database of its own (every /select writes a `jobs`
row, as in production). The load comes from `wrk` (one thread, 8 keep-alive connections, a Lua
script posting a JSON body); when wrk is missing and cannot be installed (apt-get, as root), a
Python load generator (threads, one keep-alive connection each) stands in and the report says so.

Same-run reference: the same load on `GET /healthz` (a route that does nothing) just before, so
the ratio select/healthz says what selection + the jobs INSERT cost on this machine's noisy cores.
The router's CPU time per request (master + workers, from psutil) is the least noise-sensitive
figure.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
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
    percentile,
    process_tree_cpu_s,
    scratch_dir,
    verdict,
)

WORKERS = 2
THREADS = 2
CONNECTIONS = 8
WARMUP_S = 1
# The bench's own goals (none was set for this section): a floor that one router process pair
# should clear with ease on 2 shared cores with the load generator on the same machine.
GOAL_RPS = 100.0
GOAL_P99_MS = 100.0
GOAL_TEXT = (
    f"rps >= {GOAL_RPS:g}, p99 <= {GOAL_P99_MS:g} ms, 0 errors, every decision recorded"
    " (the bench's own floor)"
)
SELECT_BODY = {
    "purpose": "portrait",
    "urgency": "realtime",
    "quality": "high",
    "prompt": "a chef, studio light",
}

LUA_TEMPLATE = """
wrk.method = "{method}"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {{\\"requests\\": %d, \\"duration_us\\": %d, \\"bytes\\": %d, " ..
    "\\"connect\\": %d, \\"read\\": %d, \\"write\\": %d, \\"status\\": %d, \\"timeout\\": %d, " ..
    "\\"p50_us\\": %d, \\"p90_us\\": %d, \\"p99_us\\": %d, \\"max_us\\": %d, \\"mean_us\\": %f}}\\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0),
    latency.max, latency.mean))
end
"""


def lua_string(text: str) -> str:
    """A Lua long-bracket string literal holding `text` verbatim."""
    level = "=" * 3
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def ensure_wrk() -> tuple[str | None, str]:
    """The wrk binary, installing the Debian package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found, "wrk found on PATH"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "wrk missing and not root (or no apt-get): cannot install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    for step in (install, ["apt-get", "update", "-qq"], install):  # update only if the first try fails
        try:
            done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            return None, f"{' '.join(step)} timed out"
        if step is install and done.returncode == 0 and shutil.which("wrk"):
            return shutil.which("wrk"), "wrk installed with apt-get by the bench"
    return None, "apt-get install wrk failed"


def run_wrk(wrk: str, url: str, method: str, body: str, duration_s: int, workdir: Path) -> dict[str, Any]:
    script = workdir / f"{method.lower()}.lua"
    script.write_text(LUA_TEMPLATE.format(method=method, body=lua_string(body)))
    argv = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{duration_s}s", "--timeout", "5s", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    seconds = raw["duration_us"] / 1e6
    return {
        "generator": "wrk",
        "requests": raw["requests"],
        "duration_s": round(seconds, 3),
        "rps": round(raw["requests"] / seconds, 1),
        "p50_ms": raw["p50_us"] / 1000.0,
        "p90_ms": raw["p90_us"] / 1000.0,
        "p99_ms": raw["p99_us"] / 1000.0,
        "max_ms": raw["max_us"] / 1000.0,
        "errors": errors,
        "errors_by_kind": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
    }


def run_python_load(port: int, method: str, path: str, body: str, duration_s: int) -> dict[str, Any]:
    """Fallback generator: CONNECTIONS threads, one keep-alive http.client connection each."""
    latencies: list[list[float]] = [[] for _ in range(CONNECTIONS)]
    errors = [0] * CONNECTIONS
    start = time.monotonic()
    end = start + duration_s
    payload = body.encode() if body else None
    headers = {"Content-Type": "application/json"} if payload else {}

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                try:
                    conn.request(method, path, body=payload, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    ok = response.status < 400
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                latencies[i].append(time.perf_counter() - t0)
                if not ok:
                    errors[i] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration_s + 30)
    seconds = time.monotonic() - start
    every = [x for per in latencies for x in per]
    return {
        "generator": "python (http.client threads; wrk unavailable)",
        "requests": len(every),
        "duration_s": round(seconds, 3),
        "rps": round(len(every) / seconds, 1),
        "p50_ms": round(percentile(every, 50) * 1000, 3),
        "p90_ms": round(percentile(every, 90) * 1000, 3),
        "p99_ms": round(percentile(every, 99) * 1000, 3),
        "max_ms": round(max(every, default=0.0) * 1000, 3),
        "errors": sum(errors),
        "errors_by_kind": {"any": sum(errors)},
    }


def jobs_recorded(db_path: Path) -> int | None:
    try:
        with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as conn:
            row = conn.execute("SELECT count(*) FROM jobs WHERE status = 'selected'").fetchone()
            return int(row[0])
    except sqlite3.Error:
        return None


def run(quick: bool = False) -> dict[str, Any]:
    with scratch_dir("bench-http-select-") as workdir:
        return run_in(workdir, quick)


def run_in(workdir: Path, quick: bool) -> dict[str, Any]:
    duration_s = 3 if quick else 10
    db_path = workdir / "router.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    body = json.dumps(SELECT_BODY)
    wrk, wrk_note = ensure_wrk()
    print(f"  load generator: {'wrk' if wrk else 'python fallback'} ({wrk_note})", flush=True)
    env = child_env(
        DATABASE_URL=f"sqlite:///{db_path}",
        COMFY_ROUTER_CONFIG=str(ROOT / "models_config.json"),
        COMFY_ROUTER_DATA_DIR=str(workdir / "data"),
    )
    argv = [sys.executable, "-m", "router", "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(WORKERS), "--threads", str(THREADS)]
    with Child(argv, log_path=workdir / "router.log", env=env, cwd=workdir) as router:
        router.wait_http(f"{url}/healthz", timeout_s=90)
        t0 = time.monotonic()
        probe = requests.post(f"{url}/select", json=SELECT_BODY, timeout=90)
        first_select_s = round(time.monotonic() - t0, 3)
        if first_select_s > 5:  # a slow first request after start is worth seeing (it has happened)
            print(f"  WARNING: the first /select took {first_select_s} s", flush=True)
        if probe.status_code != 200:
            raise RuntimeError(f"/select answered {probe.status_code}: {probe.text[:500]}")
        chosen = probe.json()

        def load(method: str, path: str, payload: str, seconds: int = duration_s) -> dict[str, Any]:
            if wrk:
                return run_wrk(wrk, url + path, method, payload, seconds, workdir)
            return run_python_load(port, method, path, payload, seconds)

        load("POST", "/select", body, WARMUP_S)  # every worker booted and warm; not counted
        reference = load("GET", "/healthz", "")
        jobs_before = jobs_recorded(db_path) or 0
        cpu0 = process_tree_cpu_s(router.pid)
        result = load("POST", "/select", body)
        cpu_s = process_tree_cpu_s(router.pid) - cpu0
        jobs_after = jobs_recorded(db_path)
    recorded = None if jobs_after is None else jobs_after - jobs_before
    # /select answers even when its INSERT fails (logged, job_id null): count what was not written.
    unrecorded = None if recorded is None else max(0, result["requests"] - recorded)
    rps_ok = result["rps"] >= GOAL_RPS
    p99_ok = result["p99_ms"] <= GOAL_P99_MS
    errors_ok = result["errors"] == 0
    cpu_ms_per_req = round(cpu_s * 1000 / result["requests"], 3) if result["requests"] else None
    out: dict[str, Any] = {
        "setup": {
            "server": f"python -m router serve: gunicorn gthread, {WORKERS} workers x {THREADS} threads",
            "database": "SQLite (WAL) in a temporary folder; each /select writes a jobs row",
            "catalog": "models_config.json (2 backends, built-in simulator in the gunicorn master)",
            "generator": result["generator"],
            "generator_note": wrk_note,
            "connections": CONNECTIONS,
            "duration_s": duration_s,
            "body": SELECT_BODY,
            "first_select_s": first_select_s,
            "chosen": f"{chosen.get('model')}/{chosen.get('tier')} on {chosen.get('backend')}",
        },
        "select": result,
        "healthz_reference": reference,
        "ratio_select_to_healthz_rps": round(result["rps"] / reference["rps"], 3)
        if reference["rps"]
        else None,
        "ratio_select_to_healthz_p50": round(result["p50_ms"] / reference["p50_ms"], 2)
        if reference["p50_ms"]
        else None,
        "router_cpu_ms_per_request": cpu_ms_per_req,
        "jobs_rows_written": recorded,
        "decisions_not_recorded": unrecorded,
        "goal": GOAL_TEXT,
        "goal_met": rps_ok and p99_ok and errors_ok and unrecorded == 0,
    }
    out["figures"] = [
        figure("requests/s", result["rps"], "req/s", f">= {GOAL_RPS:g}", rps_ok),
        figure("p50 latency", result["p50_ms"], "ms"),
        figure("p99 latency", result["p99_ms"], "ms", f"<= {GOAL_P99_MS:g}", p99_ok),
        figure("errors", result["errors"], f"of {result['requests']}", "= 0", errors_ok),
        figure(
            "decisions not recorded (jobs rows)",
            unrecorded,
            f"of {result['requests']}",
            "= 0",
            unrecorded == 0,
        ),
        figure("router CPU per request", cpu_ms_per_req, "ms"),
        figure("rps /select vs /healthz (same run)", out["ratio_select_to_healthz_rps"], "x"),
        figure("p50 /select vs /healthz (same run)", out["ratio_select_to_healthz_p50"], "x"),
    ]
    print(f"  router: {out['setup']['server']}; {out['setup']['database']}")
    print(
        f"  GET /healthz  (reference): {reference['rps']:8.1f} req/s  p50 {reference['p50_ms']:.2f} ms"
        f"  p99 {reference['p99_ms']:.2f} ms  errors {reference['errors']}"
    )
    print(
        f"  POST /select ({duration_s} s, {CONNECTIONS} conns): {result['rps']:8.1f} req/s"
        f"  p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  max {result['max_ms']:.1f} ms"
        f"  errors {result['errors']} of {result['requests']}"
    )
    print(
        f"  same-run ratios /select:/healthz  rps x{out['ratio_select_to_healthz_rps']}"
        f"  p50 x{out['ratio_select_to_healthz_p50']};  router CPU {cpu_ms_per_req} ms/request;"
        f"  jobs rows written {recorded} (not recorded: {unrecorded})"
    )
    print(f"  goal {out['goal']}: {verdict(out['goal_met'])}")
    return out
