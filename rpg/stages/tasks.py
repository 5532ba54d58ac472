"""Stages of a task zoo (unseen tasks, paper section 4): shared backbone, split, task groups, generation, evaluation.

Paths under ``results/<exp>/``:
  zoo/<zoo>/backbone.safetensors, backbone.csv   the shared backbone, trained once on the full problem
  zoo/<zoo>/tasks.json                           the plan: seen / held-out task ids, groups, evaluated tasks
  zoo/<zoo>/<split>/<group>/                     one collection job: member<jj>_ckpt<ii>.safetensors, group.csv
  generated/<zoo>/tasks/<split>/task<kk>_model<mm>.safetensors   models for the evaluated tasks
  evaluation/<zoo>/tasks/                        summary.json, tables, plots
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rpg.config import ZooSettings
from rpg.io import read_json, write_digests, write_json
from rpg.tasks import collect, continuous, continuous_eval, evaluate
from rpg.tasks.plan import TaskZooPlan

GROUP_TABLE = collect.GROUP_TABLE


def backbone(settings: ZooSettings, *, out_path: str | Path, table_path: str | Path) -> None:
    """Train the zoo's shared backbone on the full problem (one run of its collect block, one checkpoint)."""
    s = settings
    collect.train_backbone(arch=s.arch, arch_kwargs=s.arch_kwargs, init=s.init, collect=s.collect, data=s.data,
                           out_path=out_path, table_path=table_path, device=s.device)  # fmt: skip


def write_plan(plan: TaskZooPlan, out_path: str | Path) -> None:
    write_json(plan.to_dict(), out_path)


def collect_group(
    settings: ZooSettings, *, plan: TaskZooPlan, backbone_path: str | Path, split: str, group: str, out_dir: str | Path
) -> None:
    """Train the classifiers of one group of tasks; ``out_dir`` gets their checkpoints and group.csv."""
    s, out_dir = settings, Path(out_dir)
    g = plan.group(split, group)
    names = g.checkpoint_names(plan.checkpoints_per_task)  # <split>/<group>/<file>, relative to the zoo folder
    if s.is_continuous_task_zoo:  # task values: the whole network fine-tuned from the shared backbone
        continuous.collect_value_group(
            arch=s.arch, tasks=s.tasks, data=s.data, backbone_path=backbone_path, split=split, group=group,
            values=list(g.task_ids), out_paths=[out_dir / Path(n).name for n in names],
            table_path=out_dir / GROUP_TABLE, device=s.device,
        )  # fmt: skip
        write_digests(out_dir)
        return
    collect.collect_task_group(
        arch=s.arch, arch_kwargs=s.arch_kwargs, tasks=s.tasks, data=s.data, backbone_path=backbone_path,
        split=split, group=group, task_ids=list(g.task_ids), out_paths=[out_dir / Path(n).name for n in names],
        table_path=out_dir / GROUP_TABLE, device=s.device,
    )  # fmt: skip
    write_digests(out_dir)


def generate(
    settings: ZooSettings, *, models: Sequence[Mapping[str, Any]], generator_dir: str | Path, tokens_dir: str | Path
) -> None:
    """Sample the models of the evaluated tasks: ``models`` rows hold ``path`` and ``task`` (vector)."""
    evaluate.generate_task_models(
        generator_dir=generator_dir, token_dir=tokens_dir, tasks=[m["task"] for m in models],
        out_paths=[m["path"] for m in models], generate_cfg=settings.generate, device=settings.device,
    )  # fmt: skip


def evaluate_tasks(
    settings: ZooSettings,
    *,
    manifest: Sequence[Mapping[str, Any]],
    plan_path: str | Path,
    backbone_path: str | Path,
    tokens_dir: str | Path,
    generator_dir: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Evaluate the task zoo on its held-out and seen tasks; ``out_dir`` gets the summary, tables and plots."""
    if settings.is_continuous_task_zoo:
        return continuous_eval.evaluate_continuous(
            manifest=manifest, data=settings.data, tasks=settings.tasks, backbone_path=backbone_path,
            token_dir=tokens_dir, generator_dir=generator_dir, out_dir=out_dir, device=settings.device,
            plan=read_json(plan_path),
        )  # fmt: skip
    return evaluate.evaluate_tasks(
        manifest=manifest, data=settings.data, tasks=settings.tasks, backbone_path=backbone_path,
        token_dir=tokens_dir, generator_dir=generator_dir, out_dir=out_dir, device=settings.device,
        plan=read_json(plan_path),
    )  # fmt: skip
