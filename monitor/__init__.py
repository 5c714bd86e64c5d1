"""The vram_monitor: samples NVML GPUs, the host and each ComfyUI backend into `vram_usage_log`.

Run it with `python -m monitor` or `comfy-router monitor` (DESIGN.md sections 1, 4 and 5).
"""
