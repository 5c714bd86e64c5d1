"""Which models' workflows a backend can run, from its /object_info (node classes, model files)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.catalog.schema import Catalog
from router.workflows.templates import TemplateError, TemplateRegistry, missing_on_backend


def support_checker(templates: TemplateRegistry) -> Any:
    def check(catalog: Catalog, object_info: Mapping[str, Any]) -> dict[tuple[str, str], tuple[str, ...]]:
        out: dict[tuple[str, str], tuple[str, ...]] = {}
        for model in catalog.models:
            for workflow in {model.workflow, *model.workflows_by_purpose.values()}:
                try:
                    template = templates.get(workflow)
                except TemplateError as exc:
                    out[(model.id, workflow)] = (f"template: {exc}",)
                    continue
                missing = missing_on_backend(template, model.files, object_info)
                if missing:
                    out[(model.id, workflow)] = tuple(missing)
        return out

    return check
