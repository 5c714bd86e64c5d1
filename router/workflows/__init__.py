"""Workflow templates (API-format ComfyUI graphs with named slots) and backend compatibility checks."""

from router.workflows.templates import (
    FILE_SLOTS,
    TEMPLATES_DIR,
    GraphNode,
    Requires,
    Template,
    TemplateError,
    TemplateRegistry,
    coerce_to_placeholder,
    load_template,
    missing_on_backend,
)

__all__ = [
    "FILE_SLOTS",
    "TEMPLATES_DIR",
    "GraphNode",
    "Requires",
    "Template",
    "TemplateError",
    "TemplateRegistry",
    "coerce_to_placeholder",
    "load_template",
    "missing_on_backend",
]
