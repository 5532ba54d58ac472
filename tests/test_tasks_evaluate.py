"""Unseen-task evaluation (rpg.tasks): baselines, summary, checks, text/HTML, plots, report section."""

from __future__ import annotations

import pandas as pd
import pytest

from rpg.errors import RPGInputError
from rpg.io import write_json
from rpg.tasks.evaluate import generate_task_models, nearest_task
from rpg.tasks.plots import TASK_CAPTIONS, plot_init_finetune, plot_task_accuracy
from rpg.tasks.summary import FINETUNE_COLUMNS, TABLE_COLUMNS, format_summary, summarize_tasks, summary_html
from rpg.tasks.vectors import task_id


def _row(split, tid, kind, acc, bal, pos=0.3):
    row = {c: None for c in TABLE_COLUMNS}
    row.update(
        split=split,
        task_id=tid,
        task=format(tid, "010b")[::-1],
        positive_fraction=pos,
        kind=kind,
        name=f"{kind}{tid}",
        accuracy=acc,
        balanced_accuracy=bal,
    )
    return row


def _table(gen_held=(0.91, 0.96), ref_held=(0.97, 0.99)) -> pd.DataFrame:
    rows = []
    for tid, shift in ((3, 0.0), (12, -0.02)):
        rows += [_row("held_out", tid, "generated", b + 0.01, b + shift) for b in gen_held]
        rows += [_row("held_out", tid, "reference", b + 0.01, b + shift) for b in ref_held]
        rows += [_row("held_out", tid, "majority", 0.7, 0.5), _row("held_out", tid, "untrained_head", 0.4, 0.52)]
        rows += [_row("held_out", tid, "nearest_seen", 0.75, 0.7)]
    rows += [_row("seen", 5, "generated", 0.98, 0.97), _row("seen", 5, "reference", 0.99, 0.98)]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _finetune() -> pd.DataFrame:
    rows = []
    for tid in (3, 12):
        for init, accs in (
            ("generated", (0.95, 0.97, 0.98)),
            ("backbone", (0.5, 0.9, 0.95)),
            ("scratch", (0.5, 0.6, 0.8)),
        ):
            rows += [
                {"task_id": tid, "task": "x", "init": init, "epochs": e, "accuracy": a, "balanced_accuracy": a - 0.01}
                for e, a in zip((0, 1, 5), accs)
            ]
    return pd.DataFrame(rows, columns=FINETUNE_COLUMNS)


def test_nearest_task_excludes_itself_and_breaks_ties_by_id():
    t = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]  # id 3
    assert nearest_task(t, [3, 1, 2, 1000]) == (1, 1)  # ids 1 and 2 are both one bit away: smallest id
    assert nearest_task(t, [3, 7]) == (7, 1)
    assert nearest_task(t, [3, 1020]) == (1020, 10)  # 1020 = complement of 3
    with pytest.raises(ValueError):
        nearest_task(t, [3])
    assert task_id(t) == 3


def test_summary_averages_per_task_stats_and_checks():
    s = summarize_tasks(_table(), _finetune())
    gen = s["splits"]["held_out"]["generated"]["balanced_accuracy"]
    # per task best/mean/min over its 2 models, averaged over tasks 3 (shift 0) and 12 (shift -0.02)
    assert gen["best"] == pytest.approx(0.96 - 0.01)
    assert gen["min"] == pytest.approx(0.91 - 0.01)
    assert gen["mean"] == pytest.approx(0.935 - 0.01)
    assert gen["worst"] == pytest.approx(0.89)
    assert s["splits"]["held_out"]["majority"]["balanced_accuracy"]["mean"] == pytest.approx(0.5)
    assert s["splits"]["held_out"]["num_tasks"] == 2 and s["splits"]["seen"]["num_tasks"] == 1
    assert s["headline"]["held_out_generated_mean_balanced_accuracy"] == pytest.approx(0.925)
    assert s["headline"]["seen_reference_mean_balanced_accuracy"] == pytest.approx(0.98)
    # reference mean 0.97 vs generated 0.925: within 5 points; above the strongest baseline (nearest seen, 0.70)
    assert s["checks"]["held_out_generated_beats_strongest_baseline"] is True
    assert s["comparison"]["strongest_baseline"] == "nearest_seen" and s["comparison"]["winner"] == "generated"
    assert s["checks"]["held_out_generated_near_reference"] is True and s["split"] == "test"
    bad = summarize_tasks(_table(gen_held=(0.6, 0.7)), _finetune())
    assert bad["checks"]["held_out_generated_near_reference"] is False
    assert bad["checks"]["held_out_generated_beats_strongest_baseline"] is False
    assert bad["comparison"]["winner"] == "nearest_seen"
    # a composed head from the 10-class backbone that beats the generated models is named as the winner
    table = pd.concat([_table(), pd.DataFrame([_row("held_out", t, "composed_head", 0.99, 0.98) for t in (3, 12)])])
    strong = summarize_tasks(table, _finetune())
    assert strong["comparison"]["winner"] == "composed_head"
    assert strong["checks"]["held_out_generated_beats_strongest_baseline"] is False
    assert "the composed 10-class head wins" in format_summary(strong)
    init = s["init_finetune"]
    assert init["epochs"] == [0, 1, 5] and init["num_tasks"] == 2
    assert init["generated"]["0"]["accuracy"] == pytest.approx(0.95)
    assert init["scratch"]["5"]["balanced_accuracy"] == pytest.approx(0.79)
    empty = summarize_tasks(_table(), pd.DataFrame(columns=FINETUNE_COLUMNS))
    assert empty["init_finetune"] == {}


def test_text_and_html_forms():
    s = summarize_tasks(_table(), _finetune())
    text = format_summary(s)
    assert "| held_out | generated (RPG) | 4 | 97.0 | 94.5 | 92.0 | 95.0 | 92.5 | 90.0 |" in text
    assert "| scratch | 50.0 | 49.0 | 60.0 | 59.0 | 80.0 | 79.0 |" in text
    page = summary_html(s)
    assert "generated (RPG)" in page and "PASS" in page and "<table>" in page
    assert "bal. acc. @5 ep. %" in page


def test_plots(tmp_path):
    a = plot_task_accuracy(_table(), tmp_path / "acc.png")
    b = plot_init_finetune(_finetune(), tmp_path / "ft.png")
    c = plot_init_finetune(pd.DataFrame(columns=FINETUNE_COLUMNS), tmp_path / "none.png")
    for p in (a, b, c):
        assert p.stat().st_size > 1000
    assert set(TASK_CAPTIONS) >= {"task_accuracy", "init_finetune", "loss", "table"}


def test_report_shows_a_task_zoo(tmp_path):
    from rpg.report import build_report

    d = tmp_path / "evaluation" / "cnn_m" / "tasks"
    d.mkdir(parents=True)
    summary = summarize_tasks(_table(), _finetune())
    summary["settings"] = {"arch": "cnn_m"}
    write_json(summary, d / "summary.json")
    plot_task_accuracy(_table(), d / "task_accuracy.png")
    plot_init_finetune(_finetune(), d / "init_finetune.png")
    out = build_report(experiments={"unseen": {"cnn_m": d}}, out_html=tmp_path / "r.html")
    page = out.read_text()
    assert "generated (RPG)" in page and "backbone + untrained head" in page
    assert page.count("data:image/png;base64") == 2  # loss.png is missing: reported, not fatal
    assert "missing plot" in page


def test_generate_task_models_checks_its_input(tmp_path):
    write_json({"generator": {"task_condition": "head", "task_bits": 10}}, tmp_path / "config.json")
    with pytest.raises(ValueError, match="task vectors for"):
        generate_task_models(
            generator_dir=tmp_path,
            token_dir=tmp_path,
            tasks=[[1] + [0] * 9],
            out_paths=[tmp_path / "a", tmp_path / "b"],
            generate_cfg={},
        )
    with pytest.raises(RPGInputError, match="10-bit"):
        generate_task_models(
            generator_dir=tmp_path, token_dir=tmp_path, tasks=[[1, 0, 0]], out_paths=[tmp_path / "a"], generate_cfg={}
        )


def test_composed_head_and_swapped_outputs_solve_tasks_without_training():
    import torch

    from rpg.tasks.heads import ComposedHead, SwappedOutputs

    oracle = torch.nn.Identity()  # a "10-class model" whose logits are its input
    x = torch.eye(10) * 5  # sample c is class c, confidently
    task = [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]  # classes 0, 2, 9 positive
    composed = ComposedHead(oracle, task)
    preds = composed(x).argmax(1)
    assert preds.tolist() == task  # exactly the task's labels
    assert SwappedOutputs(composed)(x).argmax(1).tolist() == [1 - b for b in task]  # the complementary task
