"""Backend state providers: what the selector knows of each ComfyUI backend right now."""
