"""Sampling steps against accuracy (paper Table 7): DDIM 10/20/60/100 and DDPM 1000 on the default zoo.

    python benchmarks/studies/sampling_steps.py                               # results/digits/{tokens,generator}/cnn_m
    python benchmarks/studies/sampling_steps.py --results /tmp/run/results --num-models 10 --threads 2

For every setting the same ``--num-models`` models (seeds ``generate.seed + i``, so the same permutation states)
are generated with the pipeline's :func:`rpg.generator.sampling.generate_models` from the trained generator, and
evaluated on the validation split: accuracy best / mean / min, similarity (max IoU of wrongly classified samples
against the originals, as in the evaluation stage) and seconds per generated model. The originals are the reference row.
Re-runnable: it only reads the token store and the generator (whatever is there) and writes into a temporary
folder. Prints the table and writes ``benchmarks/results/sampling_steps.{csv,md}``.

A study (docs/development.md, "Studies"): its finding is there; the table stays in
benchmarks/results/sampling_steps.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SETTINGS = [("ddim", 10), ("ddim", 20), ("ddim", 60), ("ddim", 100), ("ddpm", 1000)]


def accuracy_and_wrong(paths, val, labels) -> tuple[list[float], torch.Tensor]:  # noqa: F821
    """Validation accuracy and wrong-sample masks [n, N] of the checkpoint files ``paths``."""
    import torch

    from rpg.classifier import evaluate_accuracy
    from rpg.evaluate.similarity import wrong_mask
    from rpg.zoo.checkpoint import load_checkpoint
    from rpg.zoo.models import build_model

    accs, wrongs = [], []
    for p in paths:
        state, meta = load_checkpoint(p)
        model = build_model(meta["arch"], meta.get("arch_kwargs") or {})
        model.load_state_dict(state, strict=True)
        acc, preds = evaluate_accuracy(model, val, device="cpu")
        accs.append(float(acc))
        wrongs.append(wrong_mask(preds, labels))
    return accs, torch.stack(wrongs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(ROOT / "results"), help="the pipeline's results folder")
    p.add_argument("--experiment", default="digits")
    p.add_argument("--zoo", default="cnn_m")
    p.add_argument("--config", default=str(ROOT / "config.yaml"), help="for the data and generate settings")
    p.add_argument("--num-models", type=int, default=5)
    p.add_argument("--settings", default=",".join(f"{s}-{n}" for s, n in SETTINGS), help="e.g. ddim-10,ddpm-1000")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--render-only", action="store_true", help="rewrite the Markdown table from the last CSV")
    args = p.parse_args(argv)

    import pandas as pd
    import torch
    import yaml

    from rpg.classifier import dataset_labels
    from rpg.config import resolve_config
    from rpg.data import build_dataset
    from rpg.evaluate.similarity import max_iou
    from rpg.generator.sampling import generate_models
    from rpg.tokens.store import TokenStore

    torch.set_num_threads(args.threads)
    settings = resolve_config(yaml.safe_load(Path(args.config).read_text()))[args.experiment][args.zoo]
    results = Path(args.results) / args.experiment
    token_dir, generator_dir = results / "tokens" / args.zoo, results / "generator" / args.zoo
    store = TokenStore(token_dir)
    if args.render_only:  # the table again from the CSV of the last run
        render(pd.read_csv(Path(args.out) / "sampling_steps.csv").to_dict("records"), args, store, generator_dir)
        return
    val = build_dataset(settings.data, "val")
    labels = dataset_labels(val)
    base = Path(args.results).resolve().parent  # the index holds paths relative to the workflow's directory
    originals = [Path(c) if Path(c).is_absolute() else base / c for c in store.index["checkpoint"]]
    orig_acc, orig_wrong = accuracy_and_wrong(originals, val, labels)
    orig_sim = max_iou(orig_wrong, orig_wrong, exclude=torch.eye(len(originals), dtype=torch.bool))[0]
    rows = [{"sampler": "originals", "steps": None, "models": len(originals), "acc_best": max(orig_acc),
             "acc_mean": sum(orig_acc) / len(orig_acc), "acc_min": min(orig_acc),
             "similarity_mean": float(orig_sim.mean()), "s_per_model": None}]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rpg_sampling_") as tmp:
        for item in args.settings.split(","):
            sampler, steps = item.split("-")
            paths = [Path(tmp) / f"{item}_{i:03d}.safetensors" for i in range(args.num_models)]
            cfg = {**settings.generate.to_dict(), "sampler": sampler, "steps": int(steps), "threads": args.threads,
                   "num_models": args.num_models}  # fmt: skip
            print(f"{item}: generating {args.num_models} models", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            generate_models(generator_dir=generator_dir, token_dir=token_dir, out_paths=paths, generate_cfg=cfg,
                            device="cpu")  # fmt: skip
            seconds = (time.perf_counter() - t0) / args.num_models
            accs, wrong = accuracy_and_wrong(paths, val, labels)
            sim = max_iou(wrong, orig_wrong)[0]
            rows.append({"sampler": sampler.upper(), "steps": int(steps), "models": len(paths), "acc_best": max(accs),
                         "acc_mean": sum(accs) / len(accs), "acc_min": min(accs),
                         "similarity_mean": float(sim.mean()), "s_per_model": seconds})  # fmt: skip
            print(rows[-1], file=sys.stderr, flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "sampling_steps.csv", index=False)
    render(rows, args, store, generator_dir)


def render(rows: list[dict], args, store, generator_dir: Path) -> None:
    """Print and write the Markdown table (generator described from its own config.json)."""
    import torch

    from rpg.io import read_json

    lines = ["| sampler | steps | models | acc. best % | acc. mean % | acc. min % | similarity mean | s / model |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        steps = "-" if r["steps"] is None or r["steps"] != r["steps"] else str(int(r["steps"]))
        sec = "-" if r["s_per_model"] is None or r["s_per_model"] != r["s_per_model"] else f"{r['s_per_model']:.2f}"
        lines.append(
            f"| {r['sampler']} | {steps} | {r['models']} | {100 * r['acc_best']:.2f} | "
            f"{100 * r['acc_mean']:.2f} | {100 * r['acc_min']:.2f} | {r['similarity_mean']:.3f} | {sec} |"
        )
    info = read_json(generator_dir / "config.json")
    gen, train = info["generator"], info["train"]
    n = next(r["models"] for r in rows if r["sampler"] != "originals")
    lines += ["", f"- Zoo `{args.experiment}/{args.zoo}` ({store.layout.num_parameters:,} parameters, "
              f"{store.layout.num_tokens} tokens of {store.layout.token_size}); generator: {gen['backbone']} width "
              f"{gen['dim']}, denoiser {gen['denoiser_channels']}, prediction {gen.get('prediction', 'epsilon')}, "
              f"{train['steps']} training steps; the same {n} seeds (so the same permutation states) for every "
              "setting; similarity = max IoU of wrong validation samples against the originals (originals: "
              "against the other originals).",
              f"- Machine: {_cpu()}, {args.threads} thread(s), torch {torch.__version__}."]  # fmt: skip
    md = "\n".join(lines) + "\n"
    (Path(args.out) / "sampling_steps.md").write_text(md)
    print(md)


def _cpu() -> str:
    try:
        name = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return name


if __name__ == "__main__":
    main()
