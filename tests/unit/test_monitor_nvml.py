"""NvmlReader against the real pynvml module with its functions patched per scenario."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pynvml
import pytest

from monitor.nvml import NvmlReader, mig_profile_from_attributes, mig_profile_from_name
from monitor.rows import blank_row
from tests.support.nvml_fixtures import FakeGpu, NvmlScenario, install

TS = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
HOST = "gpu-box"


def gpu_row(**fields: Any) -> dict[str, Any]:
    row = blank_row(TS, HOST, "nvml")
    row.update(fields)
    return row


def reader(retry_init_every: int = 3) -> NvmlReader:
    return NvmlReader(
        pynvml, host=HOST, logger=logging.getLogger("test.nvml"), retry_init_every=retry_init_every
    )


A100 = FakeGpu(
    name="NVIDIA A100 80GB PCIe",
    uuid="GPU-a100",
    total_mib=81920,
    used_mib=1024,
    util_pct=37,
    temperature_c=51,
    power_mw=212_500,
    processes=[(111, 512), (222, None)],
)
RTX = FakeGpu(
    name="NVIDIA GeForce RTX 4090",
    uuid="GPU-4090",
    total_mib=24564,
    used_mib=2048,
    util_pct=0,
    temperature_c=30,
    power_mw=80_000,
    processes=[],
)
A100_ROW = gpu_row(
    gpu_index=0,
    gpu_uuid="GPU-a100",
    gpu_name="NVIDIA A100 80GB PCIe",
    vram_total_mb=81920.0,
    vram_used_mb=1024.0,
    vram_free_mb=80896.0,
    gpu_util_pct=37.0,
    temperature_c=51.0,
    power_w=212.5,
    processes=[{"pid": 111, "used_mb": 512.0}, {"pid": 222, "used_mb": None}],
    up=True,
)
RTX_ROW = gpu_row(
    gpu_index=1,
    gpu_uuid="GPU-4090",
    gpu_name="NVIDIA GeForce RTX 4090",
    vram_total_mb=24564.0,
    vram_used_mb=2048.0,
    vram_free_mb=22516.0,
    gpu_util_pct=0.0,  # a real 0 % reading stays 0, only a missing one is None
    temperature_c=30.0,
    power_w=80.0,
    processes=[],
    up=True,
)
LOST_ROW = gpu_row(gpu_index=1, up=False, error="NVMLError_GpuIsLost: GPU is lost")


def replace(gpu: FakeGpu, **changes: Any) -> FakeGpu:
    return FakeGpu(**{**gpu.__dict__, **changes})


def mig_slice(name: str, uuid: str, total_mib: int, used_mib: int) -> FakeGpu:
    # MIG devices have memory and processes but no utilisation, temperature or power of their own.
    return FakeGpu(
        name=name,
        uuid=uuid,
        total_mib=total_mib,
        used_mib=used_mib,
        util_pct=pynvml.NVMLError_NotSupported,
        temperature_c=pynvml.NVMLError_NotSupported,
        power_mw=pynvml.NVMLError_NotSupported,
        processes=[(333, used_mib)],
    )


MIG_PARENT = replace(
    A100,
    name="NVIDIA A100-SXM4-80GB",
    uuid="GPU-parent",
    util_pct=pynvml.NVMLError_NotSupported,
    processes=[],
    mig_mode=[pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE],
    mig_slots=[
        mig_slice("NVIDIA A100-SXM4-80GB MIG 3g.40gb", "MIG-aaaa", 40192, 1000),
        None,  # an empty slot
        mig_slice("NVIDIA A100-SXM4-80GB MIG 1g.10gb", "MIG-bbbb", 9728, 0),
    ],
)
MIG_PARENT_ROW = {
    **A100_ROW,
    "gpu_uuid": "GPU-parent",
    "gpu_name": "NVIDIA A100-SXM4-80GB",
    "gpu_util_pct": None,
    "processes": [],
}


def mig_row(profile: str, uuid: str, total_mb: float, used_mb: float) -> dict[str, Any]:
    return gpu_row(
        gpu_index=0,
        gpu_uuid=uuid,
        gpu_name=f"NVIDIA A100-SXM4-80GB MIG {profile}",
        mig_profile=profile,
        vram_total_mb=total_mb,
        vram_used_mb=used_mb,
        vram_free_mb=total_mb - used_mb,
        processes=[{"pid": 333, "used_mb": used_mb}],
        up=True,
    )


SCENARIOS = [
    pytest.param([A100, RTX], [A100_ROW, RTX_ROW], id="two-gpus"),
    pytest.param(
        [A100, replace(RTX, handle_error=pynvml.NVMLError_GpuIsLost)],
        [A100_ROW, LOST_ROW],
        id="gpu-lost-at-handle",
    ),
    pytest.param(
        [A100, replace(RTX, memory=pynvml.NVMLError_GpuIsLost)], [A100_ROW, LOST_ROW], id="gpu-lost-mid-read"
    ),
    pytest.param(
        [replace(A100, power_mw=pynvml.NVMLError_NotSupported)],
        [{**A100_ROW, "power_w": None}],
        id="power-unsupported-is-null-not-zero",
    ),
    pytest.param(
        [
            replace(
                A100,
                util_pct=pynvml.NVMLError_FunctionNotFound,
                temperature_c=pynvml.NVMLError_NotSupported,
                processes=pynvml.NVMLError_NoPermission,
            )
        ],
        [{**A100_ROW, "gpu_util_pct": None, "temperature_c": None, "processes": None}],
        id="unsupported-readings-and-hidden-processes",
    ),
    pytest.param(
        [MIG_PARENT],
        [
            MIG_PARENT_ROW,
            mig_row("3g.40gb", "MIG-aaaa", 40192.0, 1000.0),
            mig_row("1g.10gb", "MIG-bbbb", 9728.0, 0.0),
        ],
        id="mig-parent-and-two-slices",
    ),
    pytest.param(
        [replace(MIG_PARENT, mig_mode=[0, 0])],
        [MIG_PARENT_ROW],
        id="mig-capable-but-disabled",
    ),
    pytest.param([], [], id="driver-without-gpus"),
]


@pytest.mark.parametrize(("gpus", "expected"), SCENARIOS)
def test_rows_per_scenario(monkeypatch: pytest.MonkeyPatch, gpus: list[FakeGpu], expected: list[Any]) -> None:
    install(monkeypatch, NvmlScenario(gpus=gpus))
    assert reader().read(TS) == expected


def test_no_library_gives_no_rows_and_one_log_line_over_many_samples(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    scenario = install(monkeypatch, NvmlScenario(gpus=[A100], init_error=pynvml.NVMLError_LibraryNotFound))
    nvml = reader(retry_init_every=3)
    with caplog.at_level(logging.DEBUG, logger="test.nvml"):
        rows = [nvml.read(TS) for _ in range(7)]
    assert rows == [[]] * 7
    assert scenario.init_calls == 3  # samples 1, 4 and 7: retried, not on every sample
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.INFO,
            "nvml: not available (NVMLError_LibraryNotFound: NVML Shared Library Not Found); "
            "no GPU rows, host and ComfyUI rows go on; retrying every 3 samples",
        )
    ]


def test_driver_that_appears_later_is_picked_up_at_the_next_retry(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    scenario = install(monkeypatch, NvmlScenario(gpus=[A100], init_error=pynvml.NVMLError_DriverNotLoaded))
    nvml = reader(retry_init_every=2)
    with caplog.at_level(logging.INFO, logger="test.nvml"):
        assert nvml.read(TS) == []
        scenario.init_error = None
        assert nvml.read(TS) == []  # not yet: waiting for the retry
        assert nvml.read(TS) == [A100_ROW]
    assert nvml.initialised
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "nvml: not available",
        "nvml: initialised",
    ]


def test_a_lost_gpu_keeps_the_identity_it_had_and_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    scenario = install(monkeypatch, NvmlScenario(gpus=[A100, RTX]))
    nvml = reader()
    assert nvml.read(TS) == [A100_ROW, RTX_ROW]
    scenario.gpus[1] = replace(RTX, memory=pynvml.NVMLError_GpuIsLost)
    with caplog.at_level(logging.WARNING, logger="test.nvml"):
        first, second = nvml.read(TS), nvml.read(TS)
    lost = {**LOST_ROW, "gpu_uuid": "GPU-4090", "gpu_name": "NVIDIA GeForce RTX 4090"}
    assert first == second == [A100_ROW, lost]
    assert [r.getMessage() for r in caplog.records] == [
        "nvml gpu 1: marked failed: NVMLError_GpuIsLost: GPU is lost"
    ]


def test_an_unexpected_error_on_one_reading_nulls_that_reading_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install(monkeypatch, NvmlScenario(gpus=[replace(A100, temperature_c=pynvml.NVMLError_Timeout)]))
    nvml = reader()
    with caplog.at_level(logging.WARNING, logger="test.nvml"):
        rows = [nvml.read(TS), nvml.read(TS)]
    assert rows == [[{**A100_ROW, "temperature_c": None}]] * 2
    assert len(caplog.records) == 1
    assert "nvml gpu 0 temperature: reading is NULL: NVMLError_Timeout" in caplog.records[0].getMessage()


def test_driver_lost_after_init_shuts_down_and_retries_later(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = install(monkeypatch, NvmlScenario(gpus=[A100]))
    nvml = reader(retry_init_every=2)
    assert nvml.read(TS) == [A100_ROW]

    def unloaded() -> int:
        raise pynvml.NVMLError_DriverNotLoaded()

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", unloaded)
    assert nvml.read(TS) == []
    assert not nvml.initialised
    assert scenario.shutdown_calls == 1
    assert nvml.read(TS) == []  # waiting for the retry
    assert scenario.init_calls == 1


def test_close_shuts_nvml_down_once(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = install(monkeypatch, NvmlScenario(gpus=[A100]))
    nvml = reader()
    nvml.read(TS)
    nvml.close()
    nvml.close()
    assert scenario.shutdown_calls == 1


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("NVIDIA A100-SXM4-80GB MIG 3g.40gb", "3g.40gb"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "1g.10gb"),
        ("NVIDIA A100-SXM4-80GB", None),
        (None, None),
    ],
)
def test_mig_profile_from_name(name: str | None, profile: str | None) -> None:
    assert mig_profile_from_name(name) == profile


def test_mig_profile_from_attributes_rounds_memory_up_like_nvidia_names() -> None:
    attrs = pynvml.c_nvmlDeviceAttributes(gpuInstanceSliceCount=1, memorySizeMB=4864)
    assert mig_profile_from_attributes(attrs) == "1g.5gb"
    assert mig_profile_from_attributes(None) is None
