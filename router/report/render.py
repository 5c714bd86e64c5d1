"""Output: an aligned plain-text table, a JSON document, a PNG (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from router.report.gates import Thresholds, Verdict
from router.report.metrics import WindowStats


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        # The first two columns (names) align left, the numbers right.
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def text(stats: WindowStats, verdict: Verdict) -> str:
    out = [f"comfy-router report  {stats.since.isoformat()} .. {stats.until.isoformat()}", ""]
    out.append(
        table(
            [
                "model",
                "tier",
                "runs",
                "ok %",
                "p50 s",
                "p95 s",
                "est err %",
                "est $",
                "gpu $",
                "$/image",
                "quality",
                "$/q-pt",
                "degr %",
                "hosted $",
            ],
            [
                [
                    m.model_name,
                    m.tier or "-",
                    str(m.runs),
                    _fmt(None if m.success_rate is None else 100 * m.success_rate, ".1f"),
                    _fmt(m.p50_s, ".1f"),
                    _fmt(m.p95_s, ".1f"),
                    _fmt(m.mean_estimate_error_pct, "+.1f"),
                    _fmt(m.estimated_cost_usd, ".4f"),
                    _fmt(m.cost_usd, ".4f"),
                    _fmt(m.gpu_cost_per_image_usd, ".5f"),
                    _fmt(m.mean_quality, ".1f"),
                    _fmt(m.cost_per_quality_point_usd, ".6f"),
                    _fmt(None if m.degraded_share is None else 100 * m.degraded_share, ".1f"),
                    _fmt(m.hosted_usd, ".4f"),
                ]
                for m in stats.models
            ],
        )
    )
    out += [
        "",
        f"requests {stats.requests}, failed {stats.failed_requests}, error rate "
        f"{_fmt(None if stats.error_rate is None else 100 * stats.error_rate, '.2f')} %",
        f"GPU cost {stats.gpu_cost_usd:.4f} USD, hosted API {stats.hosted_usd:.4f} USD, "
        f"savings {stats.savings_usd:.4f} USD, "
        f"projected {stats.projected_monthly_savings_usd:.2f} USD / 30 days",
        "",
        table(
            ["gate", "op", "observed", "target", "status"],
            [[g.name, g.op, _fmt(g.observed, ".4g"), format(g.target, "g"), g.status] for g in verdict.gates],
        ),
        "",
        f"VERDICT: {verdict.verdict} - {verdict.reason}",
    ]
    return "\n".join(out)


def document(stats: WindowStats, thresholds: Thresholds, verdict: Verdict) -> dict[str, Any]:
    doc = asdict(stats)
    doc["since"] = stats.since.isoformat()
    doc["until"] = stats.until.isoformat()
    doc["worst_uptime"] = stats.worst_uptime
    doc["thresholds"] = asdict(thresholds)
    doc["verdict"] = asdict(verdict)
    return doc


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_png(path: Path, stats: WindowStats, thresholds: Thresholds) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, max(5.0, 0.25 * len(stats.models) + 1)))
    rungs = [m for m in stats.models if m.cost_per_quality_point_usd is not None]
    left.barh(
        [f"{m.model_name} {m.tier or ''}".strip() for m in rungs],
        [1000 * (m.cost_per_quality_point_usd or 0.0) for m in rungs],
        color="tab:blue",
    )
    left.set_xlabel("GPU cost per quality point (USD / 1000)")
    left.set_title("Cost per quality point by model and tier")
    targets = {"FLUX": thresholds.p95_flux_s, "Face swap": thresholds.p95_faceswap_s}
    flows = [w for w in stats.workflows if w.workflow in targets]
    names = [w.workflow for w in flows]
    right.bar(names, [w.p95_s or 0.0 for w in flows], color="tab:orange", label="p95 observed")
    right.scatter(names, [targets[n] for n in names], color="black", marker="_", s=900, label="target")
    right.set_ylabel("seconds")
    right.set_title("p95 latency vs target per workflow")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)
