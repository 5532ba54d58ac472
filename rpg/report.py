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
figure img { width: 100%; border: 1px solid #ddd; }
figcaption, p.caption { font-size: 0.85em; color: #555; }
.pass { color: #137333; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
.na { color: #777; } .missing { color: #b3261e; }
"""


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "&ndash;"
    if kind == "acc":
        return f"{100 * float(value):.2f}"
    if kind == "iou":
        return f"{float(value):.3f}"
    if kind == "dist":
        return f"{float(value):.4g}"
    return html.escape(str(value))


def summary_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows (group, n, accuracy, similarity, distance) for the summary table of one zoo."""
    n = summary.get("num_models", {})
    dists = summary.get("distances", {})
    rows = [
        {
            "group": "original",
            "n": n.get("original"),
            "accuracy": summary.get("original_accuracy", {}),
            "similarity": summary.get("original_similarity", {}),
            "distance": dists.get("original_nearest_other", {}),
        },
        {
            "group": "generated",
            "n": n.get("generated"),
            "accuracy": summary.get("generated_accuracy", {}),
            "similarity": summary.get("generated_similarity", {}),
            "distance": dists.get("generated_nearest", {}),
        },
    ]
    if summary.get("pdiff"):  # the p-diff baseline (rpg.pdiff), beside RPG's generated models
        p = summary["pdiff"]
        rows.append({"group": "p-diff", "n": p.get("n"), "accuracy": p.get("accuracy", {}),
                     "similarity": p.get("similarity", {}), "distance": p.get("distance", {})})  # fmt: skip
    order = {"noise": 0, "interpolated": 1, "average": 2}

    def key(item):
        group, b = item
        return (order.get(b.get("kind"), 3), b.get("level") or 0.0, b.get("weight") or 0.0, group)

    for group, b in sorted(summary.get("baselines", {}).items(), key=key):
        rows.append(
            {
                "group": group,
                "n": b.get("n"),
                "accuracy": b.get("accuracy", {}),
                "similarity": b.get("similarity", {}),
                "distance": b.get("distance", {}),
            }
        )
    return rows


def _summary_table(summary: Mapping[str, Any]) -> str:
    head = (
        "<tr><th>models</th><th>n</th><th>acc. best %</th><th>acc. mean %</th><th>acc. min %</th>"
        "<th>similarity mean</th><th>similarity max</th><th>nearest dist. mean</th><th>nearest dist. min</th></tr>"
    )
    body = []
    for r in summary_rows(summary):
        a, s, d = r["accuracy"] or {}, r["similarity"] or {}, r["distance"] or {}
        cls = {"original": "original", "generated": "generated", "p-diff": "pdiff"}.get(r["group"], "baseline")
        cells = [
            html.escape(r["group"]),
            _fmt(r["n"], "n"),
            _fmt(a.get("best"), "acc"),
            _fmt(a.get("mean"), "acc"),
            _fmt(a.get("min"), "acc"),
            _fmt(s.get("mean"), "iou"),
            _fmt(s.get("max"), "iou"),
            _fmt(d.get("mean"), "dist"),
            _fmt(d.get("min"), "dist"),
        ]
        body.append(f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _checks(summary: Mapping[str, Any]) -> str:
    checks = summary.get("checks", {})
    rules = checks.get("rules", {})
    items = []
    for key in ("generated_not_copies", "generated_beats_noise_at_equal_similarity"):
        value = checks.get(key)
        mark = (
            '<span class="na">n/a</span>'
            if value is None
            else ('<span class="pass">PASS</span>' if value else '<span class="fail">FAIL</span>')
        )
        rule = html.escape(rules.get(key, ""))
        items.append(f"<li>{mark} <code>{key}</code>: {rule}</li>")
    noise_acc = checks.get("noise_accuracy_at_generated_similarity")
    if noise_acc is not None:
        items.append(f"<li>noise-baseline accuracy at the generated similarity: {100 * noise_acc:.2f}%</li>")
    return f"<ul>{''.join(items)}</ul>"


def _figure(path: Path, caption: str, alt: str) -> str:
    if not path.is_file():
        log.warning("missing plot %s", path)
        return f'<p class="missing">missing plot: {html.escape(str(path))}</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _zoo_section(exp: str, zoo: str, directory: Path) -> str:
    summary = read_json(directory / "summary.json")
    if not isinstance(summary, dict):
        raise RPGInputError("summary is not a JSON object", directory / "summary.json")
    parts = [f'<h3 id="{html.escape(exp)}-{html.escape(zoo)}">Zoo {html.escape(zoo)}</h3>']
    settings = summary.get("settings", {})
    if summary.get("kind") == "tasks":  # a task zoo: unseen-task evaluation (rpg.tasks)
        parts.append(
            f"<p>task zoo of <code>{html.escape(str(settings.get('arch')))}</code>: held-out and seen tasks</p>"
        )
        parts.append(summary_html(summary))
        for stem in ("task_accuracy", "init_finetune", "loss"):
            parts.append(_figure(directory / f"{stem}.png", TASK_CAPTIONS[stem], f"{exp}/{zoo}: {stem}"))
        return "\n".join(parts)
    if settings.get("arch"):
        parts.append(
            f"<p>architecture <code>{html.escape(str(settings['arch']))}</code>, "
            f"{settings.get('num_val_samples', '?')} validation samples, BN re-estimated for: "
            f"{html.escape(str(settings.get('bn_recalibrated', '?')))}.</p>"
        )
    parts.append(_summary_table(summary))
    parts.append(f'<p class="caption">{html.escape(CAPTIONS["table"])}</p>')
    parts.append(_checks(summary))
    for stem, alt in PLOTS:
        parts.append(_figure(directory / f"{stem}.png", CAPTIONS[stem], f"{exp}/{zoo}: {alt}"))
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
baselines (noise in the normalised token space, interpolation, averaging) per experiment and zoo. Accuracy is on the
validation split; similarity is the maximum IoU of wrongly classified validation samples against the originals.</p>
<ul>{"".join(toc)}</ul>
{chr(10).join(sections)}
</body></html>
"""
    out = Path(out_html)
    with atomic_path(out) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    log.info("wrote report %s", out)
    return out
