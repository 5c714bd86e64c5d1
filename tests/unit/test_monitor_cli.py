"""Command line: which backends are probed, argument checks, exit statuses."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from monitor.__main__ import main
from monitor.cli import ConfigError, build_config, build_parser
from monitor.targets import BackendTarget, parse_backend_arg, resolve_targets
from router.catalog import Catalog
from router.settings import Settings

LOG = logging.getLogger("t.cli")


def test_catalog_backends_without_url_are_the_simulator_and_skipped(catalog: Catalog) -> None:
    assert all(b.url is None for b in catalog.backends)
    assert resolve_targets([], None, catalog) == []


def test_catalog_backends_with_url_are_probed(catalog: Catalog) -> None:
    first = catalog.backends[0].model_copy(update={"url": "http://gpu0:8188/"})
    with_url = catalog.model_copy(update={"backends": (first, *catalog.backends[1:])})
    assert resolve_targets([], None, with_url) == [BackendTarget(first.id, "http://gpu0:8188")]
    # COMFYUI_URL replaces the catalog's backends (DESIGN.md section 5)...
    assert resolve_targets([], "http://one:8188", with_url) == [BackendTarget("comfyui", "http://one:8188")]
    # ...and --backend replaces both; a bare URL the catalog knows gets the catalog's id.
    assert resolve_targets(["http://gpu0:8188", "x=http://x:1"], "http://one:8188", with_url) == [
        BackendTarget(first.id, "http://gpu0:8188"),
        BackendTarget("x", "http://x:1"),
    ]


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        pytest.param(
            "http://127.0.0.1:8188", BackendTarget("127.0.0.1:8188", "http://127.0.0.1:8188"), id="bare-url"
        ),
        pytest.param("gpu0=http://h:8188/", BackendTarget("gpu0", "http://h:8188"), id="id-and-url"),
        pytest.param("https://h/comfy/", BackendTarget("h", "https://h/comfy"), id="https-with-path"),
    ],
)
def test_parse_backend_arg(arg: str, expected: BackendTarget) -> None:
    assert parse_backend_arg(arg) == expected


def test_parse_backend_arg_refuses_a_non_url() -> None:
    with pytest.raises(ValueError, match="not an http"):
        parse_backend_arg("localhost")


def test_defaults(tmp_path: Path) -> None:
    settings = Settings(database_url="sqlite:///x.db", config_path=tmp_path / "absent.json", comfyui_url=None)
    config = build_config(build_parser().parse_args([]), settings, LOG)
    assert (config.interval_s, config.once, config.metrics_port) == (5.0, False, 0)
    assert (config.retention_days, config.aggregate_days, config.buffer_samples) == (7.0, 90.0, 720)
    assert config.database_url == "sqlite:///x.db"
    assert config.targets == ()


def test_aggregates_must_outlive_raw_rows(tmp_path: Path) -> None:
    settings = Settings(config_path=tmp_path / "absent.json")
    args = build_parser().parse_args(["--retention-days", "30", "--aggregate-days", "7"])
    with pytest.raises(ConfigError):
        build_config(args, settings, LOG)


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        pytest.param(["--help"], 0, id="help"),
        pytest.param(["--interval-s", "0"], 2, id="zero-interval"),
        pytest.param(["--metrics-port", "70000"], 2, id="bad-port"),
        pytest.param(["--no-such-flag"], 2, id="unknown-flag"),
        pytest.param(
            ["--once", "--config", "/nonexistent/models_config.json"], 2, id="explicit-catalog-missing"
        ),
        pytest.param(["--once", "--backend", "nonsense"], 2, id="backend-not-a-url"),
    ],
)
def test_exit_status(argv: list[str], status: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == status


def test_a_taken_metrics_port_is_a_configuration_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["--metrics-port", str(port), "--database-url", f"sqlite:///{tmp_path / 'm.db'}"]
        assert main(argv) == 2
