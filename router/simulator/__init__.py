"""A ComfyUI-compatible server whose GPU is simulated (DESIGN.md section 6).

It speaks ComfyUI 0.8.0's HTTP and WebSocket protocol (routes, message sequence, error shapes), runs
the queue with durations from the catalog's time models, models VRAM per loaded model with OOMs and
evictions, and never claims to be a real GPU: `/system_stats` names the device as simulated.

    with start_simulator(load_catalog("models_config.json"), gpu="rtx4090") as sim:
        requests.post(sim.url + "/prompt", json={"prompt": graph, "client_id": "me"})
"""

from router.simulator.faults import Faults
from router.simulator.gpu import PRESETS, GpuSpec, resolve_gpu
from router.simulator.runner import SimulatorHandle, start_simulator
from router.simulator.server import SimulatorConfig, SimulatorServer

__all__ = [
    "PRESETS",
    "Faults",
    "GpuSpec",
    "SimulatorConfig",
    "SimulatorHandle",
    "SimulatorServer",
    "resolve_gpu",
    "start_simulator",
]
