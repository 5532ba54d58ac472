"""Tests of the HTML report and the snakemake --report captions."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd
import pytest

from rpg.errors import RPGInputError
from rpg.evaluate.evaluate import TABLE_COLUMNS
from rpg.evaluate.plots import CAPTIONS, plot_accuracy_vs_similarity, plot_distances, plot_training_loss
from rpg.evaluate.summary import summarize
from rpg.io import write_json
from rpg.report import build_report, summary_rows
from rpg.stages.report import report

ROOT = Path(__file__).resolve().parent.parent


def _table() -> pd.DataFrame:
    """A small evaluation table: originals, generated, two noise levels, an interpolation, an average."""
    rows = [
        ("original", "original", 0.90, 0.8, None, None),
        ("original", "original", 0.94, 0.8, None, None),
        ("generated", "generated", 0.92, 0.5, None, None),
        ("generated", "generated", 0.92, 0.5, None, None),
        ("noise", "noise@0.01", 0.93, 0.9, 0.01, None),
        ("noise", "noise@0.05", 0.70, 0.4, 0.05, None),
        ("interpolated", "interpolated@0.5", 0.60, 0.3, None, 0.5),
        ("average", "average", 0.5, 0.2, None, None),
    ]
    df = pd.DataFrame(rows, columns=["kind", "group", "score", "max_iou", "level", "weight"])
    df = df.reindex(columns=TABLE_COLUMNS)
    df["name"] = [f"m{i}" for i in range(len(df))]
    df["nearest_distance"] = [0.5, 0.5, 0.3, 0.3, 0.01, 0.05, 0.2, 0.4]
    df["failures_probe"] = 80
    df["copy"] = False
    df["in_summary"] = True
    return df


def _evaluation(directory: Path, *, plots: bool = True) -> Path:
    table = _table()
    pairs = {"generated": {"names": ["m2", "m3"], "states": [0, 0], "distance": [[0.0, 0.0], [0.0, 0.0]],
                           "iou": [[1.0, 1.0], [1.0, 1.0]], "same_failures": [[True, True], [True, True]]},
             "spacing": 0.01}  # fmt: skip
    write_json(summarize(table, pairs=pairs), directory / "summary.json")
    if plots:
        plot_accuracy_vs_similarity(table, directory / "accuracy_vs_similarity.png")
        plot_distances(table, directory / "distances.png")
        log = pd.DataFrame({"step": range(1, 51), "loss": [1 / s for s in range(1, 51)], "lr": [1e-3] * 50})
        plot_training_loss(log, directory / "loss.png")
    return directory


def test_report_embeds_plots_tables_and_captions(tmp_path: Path):
    a = _evaluation(tmp_path / "e1" / "zooA")
    b = _evaluation(tmp_path / "e2" / "zooB")
    out = build_report(experiments={"e1": {"zooA": a}, "e2": {"zooB": str(b)}}, out_html=tmp_path / "r" / "report.html")
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 6  # 3 plots x 2 zoos, embedded (self-contained)
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'src="http' not in text and "<link" not in text
    for key in ("accuracy_vs_similarity", "distances", "loss", "table"):
        assert html.escape(CAPTIONS[key]) in text
    assert "Points up and left are" in text
    assert text.index("Experiment e1") < text.index("Zoo zooA") < text.index("Experiment e2") < text.index("Zoo zooB")
    # summary numbers: original best 94.00 % (with its interval), generated mean 92.00 %, noise groups, checks
    assert "<td>94.00 <span" in text and "<td>92.00 <span" in text
    assert "noise@0.05" in text and "interpolated@0.5" in text
    assert text.count('class="pass"') == 6  # 3 checks x 2 zoos (not copies, beats noise, resolution)
    assert "<td>0 (1 groups)</td>" in text  # the two identical generated models: none distinct, one group


def test_report_marks_missing_plots_and_rejects_missing_summary(tmp_path: Path):
    a = _evaluation(tmp_path / "zoo", plots=False)
    text = build_report(experiments={"e": {"z": a}}, out_html=tmp_path / "r.html").read_text()
    assert text.count("missing plot") == 3 and "data:image/png" not in text
    # the workflow's stage writes the same report
    assert report(evaluations={"e": {"z": a}}, out_html=tmp_path / "s.html").read_text() == text
    with pytest.raises(RPGInputError, match="summary.json"):
        build_report(experiments={"e": {"z": tmp_path / "nothing"}}, out_html=tmp_path / "r2.html")
    with pytest.raises(RPGInputError):
        build_report(experiments={}, out_html=tmp_path / "r3.html")
    assert not (tmp_path / "r2.html").exists()


def test_report_names_the_generated_batchnorm_statistics_first(tmp_path: Path):
    """Generated models within the tolerance whose re-estimated statistics score 3 points more: the report says so
    before the table (the diagnosis stays ok)."""
    table = _table()
    bn = table[table["kind"] == "generated"].assign(kind="generated_bn", group="generated_bn", score=0.95)
    directory = tmp_path / "zoo"
    write_json(summarize(pd.concat([table, bn], ignore_index=True)), directory / "summary.json")
    text = build_report(experiments={"e": {"z": directory}}, out_html=tmp_path / "r.html").read_text()
    assert "Diagnosis (ok, BatchNorm): the generated BatchNorm running statistics cost 3.00 points" in text
    assert text.index("Diagnosis (ok, BatchNorm)") < text.index("<table")
    plain = tmp_path / "plain"
    write_json(summarize(table), plain / "summary.json")
    assert "Diagnosis" not in build_report(experiments={"e": {"z": plain}}, out_html=tmp_path / "p.html").read_text()


def test_summary_rows_cover_all_groups():
    rows = summary_rows(summarize(_table()))
    assert [r["group"] for r in rows][:2] == ["original", "generated"]
    assert {r["group"] for r in rows} >= {"noise@0.01", "noise@0.05", "interpolated@0.5", "average"}


@pytest.mark.parametrize("key", ["accuracy_vs_similarity", "loss", "distances", "table"])
def test_snakemake_report_captions(key: str):
    rst = (ROOT / "workflow" / "report" / f"{key}.rst").read_text()
    assert CAPTIONS[key] in rst  # same words as the HTML report
    assert "snakemake.wildcards.zoo" in rst
