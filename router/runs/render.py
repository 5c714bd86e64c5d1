"""Fill a rung's workflow template: model files, prompt, seed, steps, cfg, size, uploaded inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from router.selection import Candidate
from router.workflows.templates import TemplateRegistry

if TYPE_CHECKING:
    from router.runs.runner import JobSpec


class Uploader(Protocol):
    def upload_image(self, data: bytes, filename: str, *, overwrite: bool = False) -> str: ...


def workflow_name(rung: Candidate, purpose: str) -> str:
    return rung.model.workflows_by_purpose.get(purpose, rung.model.workflow)


def render_graph(
    templates: TemplateRegistry, uploader: Uploader, rung: Candidate, spec: JobSpec
) -> dict[str, Any]:
    template = templates.get(workflow_name(rung, spec.need.purpose))
    values: dict[str, object] = {
        "prompt": spec.prompt,
        "negative_prompt": spec.negative_prompt,
        "seed": spec.seed,
        "steps": rung.steps,
        "cfg": rung.cfg,
        "width": rung.width,
        "height": rung.height,
        "batch_size": spec.need.batch_size,
        "sampler": rung.spec.sampler,
        "scheduler": rung.spec.scheduler,
        "filename_prefix": f"comfy_router/{spec.job_id}",
        **rung.model.files,
    }
    for slot, data in spec.inputs.items():
        if slot in template.slots:
            # ComfyUI's LoadImage reads from its input folder: upload first, pass the name it gives.
            values[slot] = uploader.upload_image(data, f"{spec.job_id}-{slot}.png", overwrite=True)
    return template.render({k: v for k, v in values.items() if k in template.slots})


# Template slots whose value comes from the caller, and the request field that carries each.
REQUEST_SLOTS = {"prompt": "prompt", "image": "images", "mask": "mask", "face_image": "face_image"}


def missing_request_fields(
    templates: TemplateRegistry, rung: Candidate, purpose: str, given: set[str]
) -> list[str]:
    """Request fields the rung's workflow requires that the caller left empty."""
    required = templates.get(workflow_name(rung, purpose)).required_slots()
    return sorted(field for slot, field in REQUEST_SLOTS.items() if slot in required and field not in given)
