"""Model files outside the pipeline: loading one as an ``nn.Module``, what is known about it, and model folders.

- :func:`read_model`: a checkpoint, a generated model or an exported folder as a ready module (architecture and
  keyword arguments from the file's metadata, or from the folder's ``config.json``), strict load.
- :func:`find_evaluation`: the row of the evaluation table that scored a file of a results tree
  (``results/<exp>/evaluation/<zoo>/table.csv``, matched by path) and the zoo's ``summary.json``.
- :func:`export_folder`: a model folder as the Hugging Face Hub lays them out: ``config.json`` (the architecture and
  its keyword arguments; for timm models also what ``timm.create_model("local-dir:<folder>", pretrained=True)``
  and ``pretrained_cfg_overlay`` read), ``model.safetensors`` and a ``README.md`` model card (YAML header: library,
  tags, metrics; body: how the model was made and how it scored).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rpg.errors import RPGInputError
from rpg.io import read_json, read_safetensors_metadata, read_table, save_safetensors, write_json
from rpg.zoo.checkpoint import ORDER_KEY, check_compatible, load_checkpoint
from rpg.zoo.detectors import DETECTORS
from rpg.zoo.models import BUILTIN_ARCHS, build_model, count_parameters

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
STAGES = ("zoo", "generated", "generated_pdiff", "generator", "tokens", "evaluation", "pdiff")
ROW_KINDS = ("generated", "original", "pdiff")  # table rows that are files (generated_bn: the same file, recalibrated)


def pipeline_version() -> str:
    import rpg

    return str(getattr(rpg, "__version__", "unknown"))


def weights_file(path: str | Path) -> Path:
    """The weights file of ``path`` (a ``.safetensors`` file, or a model folder's ``model.safetensors``)."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
        if not path.is_file():
            raise RPGInputError(f"not a model folder: {WEIGHTS_FILE} is missing", path.parent)
        return path
    if not path.exists():
        raise RPGInputError("file does not exist", path)
    if path.suffix != ".safetensors":
        raise RPGInputError("not a .safetensors file (rpg reads models as safetensors)", path)
    return path


def folder_config(path: Path) -> dict[str, Any] | None:
    """The ``config.json`` beside a model folder's weights file, when it is one this module wrote."""
    cfg_path = path.parent / CONFIG_FILE
    if path.name != WEIGHTS_FILE or not cfg_path.is_file():
        return None
    cfg = read_json(cfg_path)
    return cfg if isinstance(cfg, dict) and ("rpg" in cfg or "architecture" in cfg) else None


def architecture(path: str | Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(arch, arch_kwargs, metadata)`` of a model file or folder: from the file's metadata, else the folder's
    config.json (RPGInputError naming the file when neither says)."""
    file = weights_file(path)
    meta = read_safetensors_metadata(file)
    if meta.get("arch"):
        return str(meta["arch"]), dict(meta.get("arch_kwargs") or {}), meta
    cfg = folder_config(file)
    if cfg is not None:
        rpg_cfg = cfg.get("rpg") or {}
        arch = rpg_cfg.get("arch") or cfg.get("architecture")
        kwargs = rpg_cfg.get("arch_kwargs", cfg.get("model_args") or {})
        return str(arch), dict(kwargs), {**dict(rpg_cfg.get("metadata") or {}), **meta}
    if meta.get("kind") == "generator":
        raise RPGInputError("this is a generator's weights, not a model (load its folder with rpg.load_generator)",
                            file)  # fmt: skip
    raise RPGInputError("no architecture in the file's metadata (not a checkpoint or generated model of rpg)", file)


def read_model(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode, metadata)``: the architecture of the file's metadata with its weights (strict)."""
    file = weights_file(path)
    arch, kwargs, meta = architecture(file)
    if meta.get("arch"):
        state, meta = load_checkpoint(file)
    else:  # an exported folder whose weights file lost its metadata
        from rpg.io import load_safetensors

        state = load_safetensors(file)[0]
    model = build_model(arch, kwargs)
    expected = model.state_dict()
    try:
        check_compatible(state, expected, file)
    except RPGInputError as exc:
        raise RPGInputError(f"weights do not fit the architecture {arch} {json.dumps(kwargs, sort_keys=True)} of "
                            f"its metadata: {exc.problem}", file) from None  # fmt: skip
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta


def pipeline_location(path: str | Path) -> tuple[Path, str, str] | None:
    """``(results/<exp> folder, experiment, zoo)`` of a path inside a results tree
    (``results/<exp>/<stage>/<zoo>/...``), else None."""
    parts = Path(os.path.abspath(path)).parts
    for i in range(len(parts) - 4, -1, -1):
        if parts[i] == "results" and parts[i + 2] in STAGES:
            return Path(*parts[: i + 2]), parts[i + 1], parts[i + 3]
    return None


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation knows about one file: its table row and the zoo's summary."""

    table: Path  # as seen from the folder that holds results/ (results/<exp>/evaluation/<zoo>/table.csv)
    row: dict[str, Any]
    summary: dict[str, Any] | None
    zoo: str = ""  # <exp>/<zoo>

    def to_dict(self) -> dict[str, Any]:
        s = self.summary or {}
        metric = s.get("metric") or "score"
        out: dict[str, Any] = {
            "table": str(self.table), "zoo": self.zoo, "kind": self.row.get("kind"), "split": s.get("split", "test"),
            "metric": metric,
            "score": _num(self.row.get("score")), "similarity": _num(self.row.get("max_iou")),
            "nearest_distance": _num(self.row.get("nearest_distance")),
            "functional_distance": _num(self.row.get("functional_distance")), "copy": self.row.get("copy"),
        }  # fmt: skip
        for kind in ("original", "generated"):
            block = (s.get(kind) or {}).get("score") or {}
            if block:
                ci = (block.get("ci95") or {}).get("mean")
                out[kind] = {"mean": block.get("mean"), "ci95": ci, "best": block.get("best"), "min": block.get("min"),
                             "n": (s.get(kind) or {}).get("n")}  # fmt: skip
        novelty = s.get("novelty") or {}
        other = (novelty.get("original_nearest_other_distance") or {}).get("mean")
        if other is not None:
            out["original_nearest_other_distance"] = other
        return out


def _num(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if x != x else x  # NaN -> None


def find_evaluation(path: str | Path) -> Evaluation | None:
    """The evaluation that scored ``path``, when it lies in a results tree whose zoo was evaluated: the row of
    ``results/<exp>/evaluation/<zoo>/table.csv`` whose path ends like the file's path inside ``results/<exp>``."""
    loc = pipeline_location(path)
    if loc is None:
        return None
    root, exp, zoo = loc
    rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).parts
    tables = [root / "evaluation" / zoo / "table.csv"]
    tables += [t for t in sorted((root / "evaluation").glob("*/table.csv")) if t not in tables]
    for table in (t for t in tables if t.is_file()):
        df = read_table(table)
        for row in df.to_dict("records"):
            p = str(row.get("path") or "")
            if p and row.get("kind") in ROW_KINDS and Path(p).parts[-len(rel) :] == rel:
                summary_path = table.parent / "summary.json"
                summary = read_json(summary_path) if summary_path.is_file() else None
                shown = Path(os.path.relpath(table, root.parent.parent))
                return Evaluation(table=shown, row=row, summary=summary, zoo=f"{exp}/{table.parent.name}")
    return None


def is_timm(arch: str) -> bool:
    if arch in BUILTIN_ARCHS or arch in DETECTORS or ":" in arch:
        return False
    import timm

    return bool(timm.is_model(arch))


def describe(path: str | Path) -> dict[str, Any]:
    """What is known about a model file or folder: architecture, parameter count, provenance, evaluation."""
    file = weights_file(path)
    model, meta = read_model(file)
    arch, kwargs, _ = architecture(file)
    cfg = folder_config(file)
    evaluation = find_evaluation(file)
    if evaluation is not None:
        known = evaluation.to_dict()
    elif cfg is not None and (cfg.get("rpg") or {}).get("evaluation"):
        known = cfg["rpg"]["evaluation"]
    else:
        known = None
    return {
        "path": str(path),
        "kind": meta.get("kind"),
        "arch": arch,
        "arch_kwargs": kwargs,
        "parameters": count_parameters(model),
        "tensors": len(model.state_dict()),
        "provenance": provenance(meta),
        "evaluation": known,
    }


def provenance(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata keys that say how a file was made (generated: generator, seed, state, sampler; checkpoint: run,
    seed, step, validation accuracy)."""
    keys = ("kind", "generator", "sample_seed", "state", "sampler", "sampling_steps", "index", "task", "run", "seed",
            "step", "val_accuracy", "source")  # fmt: skip
    return {k: meta[k] for k in keys if meta.get(k) is not None}


def export_folder(path: str | Path, out_dir: str | Path) -> Path:
    """Write a model folder for ``path`` (see the module docstring); returns the folder."""
    file = weights_file(path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RPGInputError("the export target exists and is not a folder", out)
    model, meta = read_model(file)
    arch, kwargs, _ = architecture(file)
    evaluation = find_evaluation(file)
    known = evaluation.to_dict() if evaluation is not None else ((folder_config(file) or {}).get("rpg") or {}).get(
        "evaluation")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    file_meta = {k: v for k, v in meta.items() if k != ORDER_KEY}
    file_meta.update(arch=arch, arch_kwargs=kwargs)
    save_safetensors({k: v.detach().cpu().contiguous() for k, v in state.items()}, out / WEIGHTS_FILE,
                     {**file_meta, ORDER_KEY: list(state)})  # fmt: skip
    timm_model = is_timm(arch)
    config: dict[str, Any] = {"architecture": arch, "model_args": kwargs}
    if timm_model:
        config = timm_config(model, kwargs)
    config["library_name"] = "timm" if timm_model else "rpg"
    config["rpg"] = {"arch": arch, "arch_kwargs": kwargs, "version": pipeline_version(), "source": str(file),
                     "metadata": provenance(meta), "evaluation": known}  # fmt: skip
    write_json(config, out / CONFIG_FILE)
    card = model_card(out, arch=arch, kwargs=kwargs, meta=meta, parameters=count_parameters(model), evaluation=known,
                      timm_model=timm_model)  # fmt: skip
    (out / CARD_FILE).write_text(card)
    log.info("exported %s to %s", file, out)
    return out


def timm_config(model: nn.Module, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """timm's own config.json for ``model`` (architecture, num_classes, model_args, pretrained_cfg), as
    ``timm.create_model("local-dir:<folder>", pretrained=True)`` reads it; the upstream tag and license of the
    architecture's default weights are dropped (these weights are not those)."""
    import tempfile

    from timm.models._hub import save_config_for_hf

    with tempfile.TemporaryDirectory() as tmp:
        save_config_for_hf(model, str(Path(tmp) / CONFIG_FILE), model_args=dict(kwargs))
        cfg = json.loads((Path(tmp) / CONFIG_FILE).read_text())
    pretrained = cfg.setdefault("pretrained_cfg", {})
    for key in ("license", "hf_hub_id", "url", "file", "source"):
        pretrained.pop(key, None)
    pretrained["tag"] = "rpg"
    return cfg


def _fmt(x: Any, digits: int = 4) -> str:
    return "n/a" if x is None else f"{float(x):.{digits}f}"


def _interval(block: Mapping[str, Any] | None) -> str:
    if not block:
        return "n/a"
    ci = block.get("ci95")
    tail = f" (95% interval of the mean {_fmt(ci[0])} to {_fmt(ci[1])})" if ci else ""
    n = f", n = {block['n']}" if block.get("n") else ""
    return f"mean {_fmt(block.get('mean'))}{tail}, best {_fmt(block.get('best'))}, min {_fmt(block.get('min'))}{n}"


def model_card(
    folder: Path,
    *,
    arch: str,
    kwargs: Mapping[str, Any],
    meta: Mapping[str, Any],
    parameters: int,
    evaluation: Mapping[str, Any] | None,
    timm_model: bool,
) -> str:
    """README.md of an exported folder: YAML header (library_name, tags, metrics, results) and the model's story."""
    import yaml

    metric = (evaluation or {}).get("metric") or "accuracy"
    kind = meta.get("kind") or "model"
    header: dict[str, Any] = {
        "library_name": "timm" if timm_model else "rpg",
        "tags": ["rpg", "image-classification", arch] + (["generated-weights"] if kind == "generated" else []),
        "metrics": [metric],
    }
    if evaluation and evaluation.get("score") is not None:
        header["model-index"] = [{"name": folder.name, "results": [{
            "task": {"type": "image-classification"},
            "dataset": {"name": f"{evaluation.get('zoo') or 'zoo'} test split", "type": "rpg-zoo", "split": "test"},
            "metrics": [{"type": metric, "value": round(float(evaluation["score"]), 6), "name": f"test {metric}"}],
        }]}]  # fmt: skip
    lines = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "", f"# {folder.name}", ""]
    if kind == "generated":
        lines.append(f"Weights of a `{arch}` ({parameters:,} parameters) sampled by a recurrent-diffusion parameter "
                     "generator (RPG) trained on a zoo of checkpoints of the same architecture.")  # fmt: skip
    else:
        lines.append(f"A `{arch}` checkpoint ({parameters:,} parameters) of an RPG model zoo (kind: {kind}).")
    lines += ["", "## How it was made", ""]
    prov = provenance(meta)
    if kind == "generated":
        loc = pipeline_location(meta["generator"]) if meta.get("generator") else None
        lines += [
            f"- zoo: {f'{loc[1]}/{loc[2]}' if loc else 'n/a'} (architecture `{arch}`)",
            f"- generator: `{prov.get('generator', 'n/a')}`",
            f"- seed: {prov.get('sample_seed', 'n/a')}; permutation state: {prov.get('state', 'n/a')}; "
            f"sampler: {prov.get('sampler', 'n/a')}-{prov.get('sampling_steps', '?')}",
        ]  # fmt: skip
        if prov.get("task") is not None:
            lines.append(f"- task vector: {''.join(map(str, prov['task']))}")
    else:
        lines += [f"- {k}: {v}" for k, v in prov.items() if k != "kind"]
    lines += [f"- architecture keyword arguments: `{json.dumps(dict(kwargs), sort_keys=True)}`",
              f"- rpg-pipeline version: {pipeline_version()}", "", "## Evaluation", ""]  # fmt: skip
    if evaluation and evaluation.get("score") is not None:
        other = evaluation.get("original_nearest_other_distance")
        spacing = "" if other is None else f" (originals to their nearest other original: mean {_fmt(other)})"
        lines += [
            f"Scored by the pipeline's evaluation (`{evaluation.get('table')}`) on the "
            f"{evaluation.get('split', 'test')} split, which no choice was made on.",
            "",
            f"- this model: test {metric} {_fmt(evaluation['score'])}",
            f"- the zoo's originals: {_interval(evaluation.get('original'))}",
            f"- the generated set: {_interval(evaluation.get('generated'))}",
            f"- similarity to the originals (max IoU of failure sets on the probe split): "
            f"{_fmt(evaluation.get('similarity'))}",
            f"- distance to the nearest original (RMS, normalised parameter space): "
            f"{_fmt(evaluation.get('nearest_distance'))}{spacing}",
        ]  # fmt: skip
    else:
        lines.append("No evaluation of this file is known (it was not scored by the pipeline's evaluation); "
                     "`rpg inspect <file> --evaluate` scores it on the test split.")  # fmt: skip
    lines += ["", "## Use", "", "```python"]
    if timm_model:
        lines += ["import timm", "", f'model = timm.create_model("local-dir:{folder.name}", pretrained=True)',
                  "# or: timm.create_model(config['architecture'], pretrained=True, **config['model_args'],",
                  "#                       pretrained_cfg_overlay=dict(config['pretrained_cfg'], "
                  f'file="{folder.name}/{WEIGHTS_FILE}"))']  # fmt: skip
    else:
        lines += ["import rpg", "", f'model = rpg.load_model("{folder.name}")']
    lines += ["```", ""]
    return "\n".join(lines)
