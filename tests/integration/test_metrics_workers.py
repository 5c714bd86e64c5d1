"""/metrics under gunicorn with two workers counts every worker's requests (multiprocess mode)."""

from __future__ import annotations

import re
from pathlib import Path

import requests

from tests.conftest import ROOT
from tests.support.live_router import LiveRouter

REQUESTS = 40
LINE = re.compile(
    r'^comfy_router_http_requests_total\{method="GET",route="/models",status="200"\} (\S+)$', re.M
)


def models_served(text: str) -> float:
    match = LINE.search(text)
    return float(match.group(1)) if match else 0.0


def test_every_scrape_counts_the_requests_of_both_workers(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # an earlier run's file: emptied at start
    router = LiveRouter(
        ROOT / "models_config.json",
        f"sqlite:///{tmp_path / 'r.db'}",
        workdir=tmp_path / "router",
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        serve_args=["--workers", "2", "--threads", "2"],
    )
    with router:
        for _ in range(REQUESTS):  # a new connection each time: both workers take some
            with requests.Session() as s:
                assert s.get(f"{router.url}/models", timeout=10).status_code == 200
        scrapes = []
        for _ in range(6):
            with requests.Session() as s:
                scrapes.append(models_served(s.get(f"{router.url}/metrics", timeout=10).text))
    assert not (metrics_dir / "counter_1.db").exists()
    # Whichever worker answers the scrape, it reports what both served (each worker alone would
    # report only its share: gunicorn hands new connections to whichever worker accepts first).
    assert scrapes == [float(REQUESTS)] * len(scrapes)
