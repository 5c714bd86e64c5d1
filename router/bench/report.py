"""bench.md: one Markdown table line per figure (section, figure, value, goal, met)."""

from __future__ import annotations

from typing import Any


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(fig: dict[str, Any]) -> str:
    value = fig.get("value")
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:,.3f}".rstrip("0").rstrip(".")
    elif isinstance(value, int):
        value = f"{value:,}"
    unit = fig.get("unit") or ""
    return f"{value} {unit}".strip()


def _goal(fig: dict[str, Any]) -> str:
    goal = str(fig.get("goal") or "")
    unit = str(fig.get("unit") or "")
    if goal and unit and not unit.startswith(("of ", "in ")):
        return f"{goal} {unit}"
    return goal


def _met(met: object) -> str:
    return "" if met is None else ("yes" if met else "**no**")


def markdown(report: dict[str, Any]) -> str:
    machine = report.get("machine", {})
    lines = [
        "# comfy-router bench",
        "",
        f"Started {report.get('started_at')}; python {machine.get('python')}, {machine.get('cpus')} CPUs"
        f' ({machine.get("cpu")}); quick: {report.get("quick")}. Ratios marked "same run" were measured'
        " next to the absolute figure, on the same noisy cores.",
        "",
        "| section | figure | value | goal | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for section, result in report.get("results", {}).items():
        if "error" in result:
            lines.append(f"| {_cell(section)} | section failed | {_cell(result['error'])[:300]} | | **no** |")
            continue
        for fig in result.get("figures", []):
            lines.append(
                f"| {_cell(section)} | {_cell(fig['figure'])} | {_cell(_value(fig))} |"
                f" {_cell(_goal(fig))} | {_met(fig.get('met'))} |"
            )
    notes = [
        (section, result["setup"])
        for section, result in report.get("results", {}).items()
        if "setup" in result
    ]
    if notes:
        lines += ["", "## Setups", ""]
        for section, setup in notes:
            described = "; ".join(
                f"{key}: {value}"
                for key, value in setup.items()
                if isinstance(value, str | int | float | bool)
            )
            lines.append(f"- **{_cell(section)}**: {_cell(described)}")
    return "\n".join(lines) + "\n"
