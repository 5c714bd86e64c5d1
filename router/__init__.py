"""comfy-router: picks model, steps and quality per request and runs it on ComfyUI."""
