"""One self-contained HTML report over all experiments and zoos (PNG plots embedded as base64).

For each (experiment, zoo) evaluation directory it shows the summary numbers as a table,
the checks, and the three plots with captions that say how to read them.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rpg.errors import RPGInputError
from rpg.evaluate.plots import CAPTIONS
from rpg.io import atomic_path, read_json
from rpg.tasks.plots import TASK_CAPTIONS
from rpg.tasks.summary import summary_html

log = logging.getLogger(__name__)

GENERATED_BN = "generated, BN re-estimated"  # evaluate.bn_recalibrate_generated: the same weights, train-data stats

PLOTS = [
    ("accuracy_vs_similarity", "Accuracy vs similarity"),
    ("distances", "Distance to the nearest original"),
    ("loss", "Generator training loss"),
]

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
tr.generated td { background: #fff1f0; font-weight: 600; }
tr.original td { background: #f4f4f4; }
tr.pdiff td { background: #eef4ff; font-weight: 600; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; width: 520px; }
figure.wide { width: 1060px; }
figure img { width: 100%; border: 1px solid #ddd; }
figcaption, p.caption { font-size: 0.85em; color: #555; }
.pass { color: #137333; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
.na { color: #777; } .missing { color: #b3261e; } .ci { color: #777; font-size: 0.85em; }
"""


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "&ndash;"
    if kind == "score":
        return f"{100 * float(value):.2f}"
    if kind == "iou":
        return f"{float(value):.3f}"
    if kind == "dist":
        return f"{float(value):.4g}"
    return html.escape(str(value))


def _ci(stats: Mapping[str, Any], key: str) -> str:
    ci = (stats.get("ci95") or {}).get(key)
    if not ci or ci[0] is None:
        return ""
    return f' <span class="ci">[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]</span>'


def summary_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows (group, n, score, similarity, distances, distinct) of the summary table of one zoo."""
    diversity = summary.get("generated_diversity") or {}
    rows = [
        {"group": "original", **(summary.get("original") or {})},
        {
            "group": "generated",
            **(summary.get("generated") or {}),
            "distinct": diversity.get("distinct"),
            "clusters": diversity.get("clusters"),
        },  # fmt: skip
    ]
    if summary.get("generated_bn"):  # the same generated weights, BatchNorm statistics re-estimated on train data
        rows.append({"group": GENERATED_BN, **summary["generated_bn"]})
    if summary.get("pdiff"):  # the p-diff baseline (rpg.pdiff), beside RPG's generated models
        p = summary["pdiff"]
        rows.append({"group": "p-diff", **p, "distinct": (p.get("diversity") or {}).get("distinct")})
    rows.append({"group": "original (all)", **(summary.get("original_all") or {})})
    order = {"noise": 0, "interpolated": 1, "gaussian": 2, "average": 3}

    def key(item):
        group, b = item
        return (order.get(b.get("kind"), 4), b.get("level") or 0.0, b.get("weight") or 0.0, group)

    for group, b in sorted(summary.get("baselines", {}).items(), key=key):
        rows.append({"group": group, **b})
    return rows


def _summary_table(summary: Mapping[str, Any]) -> str:
    metric = html.escape(str(summary.get("metric", "score")))
    head = (
        f"<tr><th>models</th><th>n</th><th>distinct</th><th>{metric} best %</th><th>{metric} mean %</th>"
        f"<th>{metric} min %</th><th>similarity mean</th><th>nearest dist. mean</th><th>other-run dist. mean</th>"
        "<th>copies</th></tr>"
    )
    body = []
    for r in summary_rows(summary):
        sc, sim = r.get("score") or {}, r.get("similarity") or {}
        d, lo = r.get("distance") or {}, r.get("loro_distance") or {}
        cls = {"original": "original", "generated": "generated", GENERATED_BN: "generated", "p-diff": "pdiff"}.get(
            r["group"], "baseline"
        )
        distinct = r.get("distinct")
        cells = [
            html.escape(r["group"]),
            _fmt(r.get("n"), "n"),
            ""
            if distinct is None
            else f"{distinct} ({r.get('clusters', '?')} groups)"
            if "clusters" in r
            else str(distinct),
            _fmt(sc.get("best"), "score") + _ci(sc, "best"),
            _fmt(sc.get("mean"), "score") + _ci(sc, "mean"),
            _fmt(sc.get("min"), "score") + _ci(sc, "min"),
            _fmt(sim.get("mean"), "iou"),
            _fmt(d.get("mean"), "dist"),
            _fmt(lo.get("mean"), "dist"),
            _fmt(r.get("copies"), "n"),
        ]
        body.append(f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _mark(value: Any) -> str:
    if value is None:
        return '<span class="na">n/a</span>'
    if isinstance(value, str):  # a three-valued frontier verdict, or why none could be made
        cls = {"pass": "pass", "fail": "fail"}.get(value, "na")
        return f'<span class="{cls}">{html.escape(value.upper() if cls != "na" else value)}</span>'
    return '<span class="pass">PASS</span>' if value else '<span class="fail">FAIL</span>'


def _frontier_line(name: str, block: Mapping[str, Any]) -> str:
    """One frontier: its score at the generated similarity, the margin and its interval (points of the metric)."""
    at = block.get("score_at_generated_similarity")
    if at is None:
        return f"<li>{html.escape(name)} frontier: {html.escape(str(block.get('status', 'n/a')))}</li>"
    ci = block.get("ci95") or [None, None]
    interval = "" if ci[0] is None else f" (95% interval {100 * ci[0]:+.2f} .. {100 * ci[1]:+.2f})"
    return (f"<li>{html.escape(name)} frontier at the generated similarity: {100 * at:.2f}; margin of the generated "
            f"mean {100 * block['margin']:+.2f} points{interval}</li>")  # fmt: skip


def _checks(summary: Mapping[str, Any]) -> str:
    checks = summary.get("checks", {})
    rules = checks.get("rules", {})
    items = []
    keys = ["generated_not_copies", *(k for k in checks if k.startswith("generated_beats_")), "resolution_ok"]
    for key in keys:
        items.append(f"<li>{_mark(checks.get(key))} <code>{key}</code>: {html.escape(rules.get(key, ''))}</li>")
    fronts = summary.get("frontiers") or {}
    for name in ("noise", "interpolation", "gaussian"):
        if name in fronts:
            items.append(_frontier_line(name, fronts[name]))
    applicable = fronts.get("applicable") or {}
    if applicable.get("applicable") is False and applicable.get("originals_minus_generated") is not None:
        items.append(f"<li>frontier claims not applicable: the generated mean lies "
                     f"{100 * applicable['originals_minus_generated']:.2f} points below the originals' (more than "
                     f"evaluate.frontier_max_gap = {100 * applicable['max_gap']:.2f})</li>")  # fmt: skip
    dom = summary.get("dominance") or {}
    if dom.get("n"):
        by_kind = ", ".join(f"{k} {v}" for k, v in (dom.get("dominated_by_kind") or {}).items())
        items.append(f"<li>dominance: {dom['undominated']} of {dom['n']} generated models are dominated by no "
                     "baseline model (at least as accurate and less similar); generated models dominated by some "
                     f"model of each kind: {by_kind}</li>")  # fmt: skip
    res = summary.get("resolution") or {}
    if res.get("wrong_per_model_min") is not None:
        items.append(f"<li>resolution: every model fails at least {int(res['wrong_per_model_min'])} probe samples "
                     f"(required {res.get('required')})</li>")  # fmt: skip
    return f"<ul>{''.join(items)}</ul>"


def _figure(path: Path, caption: str, alt: str, *, wide: bool = False) -> str:
    if not path.is_file():
        log.warning("missing plot %s", path)
        return f'<p class="missing">missing plot: {html.escape(str(path))}</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cls = ' class="wide"' if wide else ""
    return (
        f'<figure{cls}><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _zoo_section(exp: str, zoo: str, directory: Path) -> str:
    summary = read_json(directory / "summary.json")
    if not isinstance(summary, dict):
        raise RPGInputError("summary is not a JSON object", directory / "summary.json")
    parts = [f'<h3 id="{html.escape(exp)}-{html.escape(zoo)}">Zoo {html.escape(zoo)}</h3>']
    settings = summary.get("settings", {})
    if summary.get("kind") == "continuous_tasks":  # a continuous task family (rpg.tasks.continuous_eval)
        from rpg.tasks.continuous_eval import summary_html as continuous_html
        from rpg.tasks.continuous_plots import CONTINUOUS_CAPTIONS

        parts.append(
            f"<p>continuous task family <code>{html.escape(str(settings.get('family')))}</code> of "
            f"<code>{html.escape(str(settings.get('arch')))}</code>: held-out task values inside and beyond the "
            "seen range</p>"
        )
        parts.append(continuous_html(summary))
        for stem in ("accuracy_vs_value", "finetune", "loss"):
            parts.append(_figure(directory / f"{stem}.png", CONTINUOUS_CAPTIONS[stem], f"{exp}/{zoo}: {stem}"))
        return "\n".join(parts)
    if summary.get("kind") == "tasks":  # a task zoo: unseen-task evaluation (rpg.tasks)
        parts.append(
            f"<p>task zoo of <code>{html.escape(str(settings.get('arch')))}</code>: held-out and seen tasks</p>"
        )
        parts.append(summary_html(summary))
        for stem in ("task_accuracy", "init_finetune", "loss"):
            parts.append(_figure(directory / f"{stem}.png", TASK_CAPTIONS[stem], f"{exp}/{zoo}: {stem}"))
        return "\n".join(parts)
    diagnosis = summary.get("diagnosis") or {}
    if diagnosis.get("status") not in (None, "ok"):  # first: the frontier claims say nothing about broken models
        parts.append(f'<p class="fail">Diagnosis ({html.escape(diagnosis["status"])}): '
                     f"{html.escape(diagnosis['message'])}</p>")  # fmt: skip
    elif (diagnosis.get("batchnorm") or {}).get("message"):  # within the tolerance, yet the statistics cost points
        parts.append(f"<p>Diagnosis (ok, BatchNorm): {html.escape(diagnosis['batchnorm']['message'])}</p>")
    if settings.get("arch"):
        parts.append(
            f"<p>architecture <code>{html.escape(str(settings['arch']))}</code>, evaluator "
            f"<code>{html.escape(str(settings.get('evaluator', '?')))}</code>; scores on the "
            f"{html.escape(str(summary.get('split', 'test')))} split, similarity on the probe split; BN re-estimated "
            f"for: {html.escape(str(settings.get('bn_recalibrated', '?')))}.</p>"
        )
    parts.append(_summary_table(summary))
    parts.append(f'<p class="caption">{html.escape(CAPTIONS["table"])}</p>')
    parts.append(_checks(summary))
    for stem, alt in PLOTS:
        parts.append(
            _figure(
                directory / f"{stem}.png", CAPTIONS[stem], f"{exp}/{zoo}: {alt}", wide=stem == "accuracy_vs_similarity"
            )
        )  # two panels: full range and zoom
    return "\n".join(parts)


def build_report(
    *, experiments: Mapping[str, Mapping[str, str | Path]], out_html: str | Path, title: str = "RPG pipeline report"
) -> Path:
    """Write one self-contained HTML file; ``experiments`` maps experiment -> zoo -> evaluation directory."""
    if not experiments:
        raise RPGInputError("no experiments to report", out_html)
    toc, sections = [], []
    for exp, zoos in experiments.items():
        sections.append(f'<h2 id="{html.escape(exp)}">Experiment {html.escape(exp)}</h2>')
        links = []
        for zoo, directory in zoos.items():
            sections.append(_zoo_section(exp, zoo, Path(directory)))
            links.append(f'<a href="#{html.escape(exp)}-{html.escape(zoo)}">{html.escape(zoo)}</a>')
        toc.append(f'<li><a href="#{html.escape(exp)}">{html.escape(exp)}</a>: {", ".join(links)}</li>')
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Recurrent diffusion parameter generation (RPG, arXiv 2501.11587): original checkpoints, generated models and
baselines (noise in the normalised token space, interpolation, averaging) per experiment and zoo. Scores are on the
test split, originals over as many models as were generated; similarity is the maximum IoU of failure sets on the
probe split (test plus seeded corruptions) against the originals.</p>
<ul>{"".join(toc)}</ul>
{chr(10).join(sections)}
</body></html>
"""
    out = Path(out_html)
    with atomic_path(out) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    log.info("wrote report %s", out)
    return out
