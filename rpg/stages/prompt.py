"""Weights from a sentence: ``results/<exp>/prompted/<slug>/`` for a prompt and the experiment's task zoo.

One job: the prompt becomes a task vector (:mod:`rpg.prompt`); the task zoo's generator makes ``generate.num_models``
models for it; a reference classifier is trained for the same task with the task zoo's recipe (shared backbone, new
head, fine-tuning: :func:`rpg.tasks.collect.collect_task_group`); and both are evaluated like a held-out task
(:func:`rpg.tasks.evaluate.evaluate_task_models`: accuracy and balanced accuracy on the task's test split, with the
majority, untrained-head, nearest-seen-task, composed-head and (where the complement was seen) swapped-complement
baselines).

Outputs: ``summary.json`` (prompt, vector, how it was chosen, whether the generator saw the task, the figures),
``table.csv`` (a row per model), ``reference/`` and ``generated/`` (the models).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rpg.config import ZooSettings, resolve_config
from rpg.errors import RPGInputError
from rpg.io import read_json, write_json, write_table
from rpg.prompt import class_names, noun, prompt_task, slug
from rpg.runtime import resolve_device
from rpg.tasks.vectors import task_id

log = logging.getLogger(__name__)

BASELINES = ("majority", "untrained_head", "nearest_seen", "composed_head", "complement_swapped")

__all__ = ["prompt_zoo", "prompted", "prompts_of", "settings_for", "slug"]


def prompts_of(config: Mapping[str, Any]) -> dict[str, str]:
    """``{slug: prompt}`` of the config's ``prompt`` and ``prompts`` keys."""
    texts = ([config["prompt"]] if config.get("prompt") else []) + list(config.get("prompts") or [])
    return {slug(str(p)): str(p) for p in texts}


def prompt_zoo(settings: Mapping[str, Mapping[str, ZooSettings]], experiment: str) -> str | None:
    """The binary task zoo of ``experiment`` that prompts use (its first one), or None."""
    zoos = settings.get(experiment, {}).items()
    return next((zoo for zoo, s in zoos if s.is_task_zoo and not s.is_continuous_task_zoo), None)


def settings_for(config: Mapping[str, Any], experiment: str) -> ZooSettings:
    """The settings of the task zoo that serves prompts in ``experiment`` (RPGInputError when there is none)."""
    resolved = resolve_config(config)
    zoo = prompt_zoo(resolved, experiment)
    if zoo is None:
        raise RPGInputError(f"experiment {experiment!r} has no task zoo to make weights from a prompt", "config")
    return resolved[experiment][zoo]


def prompted(
    settings: ZooSettings,
    *,
    prompt: str,
    backbone_path: str | Path,
    tokens_dir: str | Path,
    generator_dir: str | Path,
    plan_path: str | Path,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Make and evaluate weights for ``prompt`` (see the module docstring); returns the summary."""
    from rpg.adapters.encoder import sentence_encoder
    from rpg.tasks.collect import collect_task_group  # the training and evaluation stacks: not at DAG time
    from rpg.tasks.evaluate import evaluate_task_models, generate_task_models

    s, out = settings, Path(out_dir)
    assert s.tasks is not None
    pcfg = s.tasks.prompt
    names = class_names(s.data, pcfg.class_names)
    found = prompt_task(prompt, names=names, encoder=sentence_encoder(pcfg.encoder), rule=pcfg.rule,
                        prefix=noun(s.data.name))  # fmt: skip
    vector, tid = found.vector, task_id(found.vector)
    log.info("prompt %r -> task %s (%s)", prompt, "".join(map(str, vector)), ", ".join(found.positive_classes))
    plan = read_json(plan_path)
    seen = tid in set(plan["seen"])
    split = "seen" if seen else "held_out" if tid in set(plan["held_out"]) else "new"

    n_ref = s.tasks.checkpoints_per_task
    ref_paths = [out / "reference" / f"ckpt_{i:02d}.safetensors" for i in range(n_ref)]
    collect_task_group(arch=s.arch, arch_kwargs=s.arch_kwargs, tasks=s.tasks, data=s.data, backbone_path=backbone_path,
                       split="prompted", group=slug(prompt), task_ids=[tid], out_paths=ref_paths,
                       table_path=out / "reference" / "group.csv", device=s.device)  # fmt: skip
    gen_paths = [out / "generated" / f"model_{m:02d}.safetensors" for m in range(s.generate.num_models)]
    generate_task_models(generator_dir=generator_dir, token_dir=tokens_dir, tasks=[vector] * len(gen_paths),
                         out_paths=gen_paths, generate_cfg=s.generate, device=s.device)  # fmt: skip
    manifest = [{"split": "prompted", "task": vector, "reference": [str(p) for p in ref_paths],
                 "generated": [str(p) for p in gen_paths]}]  # fmt: skip
    table = evaluate_task_models(manifest=manifest, data=s.data, tasks=s.tasks, backbone_path=backbone_path,
                                 token_dir=tokens_dir, device=resolve_device(s.device))  # fmt: skip

    def bal(kind: str) -> dict[str, float]:
        v = table.loc[table["kind"] == kind, "balanced_accuracy"].to_numpy(dtype=float)
        return {"mean": float(np.mean(v)), "best": float(v.max()), "min": float(v.min()), "n": int(len(v))}

    gen, ref = bal("generated"), table.loc[table["kind"] == "reference", "balanced_accuracy"].to_numpy(dtype=float)
    summary = {
        "prompt": prompt,
        "slug": slug(prompt),
        "task": vector,
        "task_bits": "".join(map(str, vector)),
        "task_id": tid,
        "positive_classes": found.positive_classes,
        "task_split": split,  # seen: the generator was trained on this task; held_out / new: it never saw it
        "rule": found.to_dict(),
        "generated_balanced_accuracy": gen,
        "reference_balanced_accuracy": float(ref[-1]),  # the reference's final checkpoint
        "reference_checkpoints_balanced_accuracy": [float(x) for x in ref],
        "ratio_to_reference": gen["mean"] / float(ref[-1]) if ref[-1] > 0 else None,
        "baselines": {k: bal(k) for k in BASELINES if (table["kind"] == k).any()},
        "split": "test (the task's relabelled test split, as for held-out tasks)",
        "generator": str(generator_dir),
    }
    write_table(table, out / "table.csv")
    write_json(summary, out / "summary.json")
    log.info("prompt %r: generated balanced accuracy mean %.4f (best %.4f), reference %.4f", prompt, gen["mean"],
             gen["best"], float(ref[-1]))  # fmt: skip
    return summary
