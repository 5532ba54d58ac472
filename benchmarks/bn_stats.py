"""How far the BatchNorm running statistics of generated models are from the statistics their own weights give, next
to the originals', for one or more finished pipeline runs of a zoo.

    python benchmarks/bn_stats.py /work/run_a /work/run_b --labels "recipe A" "recipe B" \\
        --config configs/test_timm.yaml --zoo test_resnet --name bn_stats_test_resnet

For every run directory: its generated models (``results/<exp>/generated/<zoo>/batch*/*.safetensors``) and as many
originals (evenly spaced over the zoo's checkpoints). Each model's running statistics are re-estimated on
``evaluate.bn_recalibrate_batches`` training batches, as the evaluation does for its ``generated_bn`` rows
(:func:`rpg.evaluate.baselines.recalibrate_batchnorm`). Per model, averaged over the BatchNorm layers:

- ``log-var error``: mean over channels of |log v - log v'| (v stored, v' re-estimated);
- ``mean error (sd)``: mean over channels of |m - m'| / sqrt(v'), the running mean's error in standard deviations;
- ``log-var error to nearest original``: the same log-variance error against the stored statistics of the closest
  original (for an original: the closest other one), i.e. how well the statistics reproduce the zoo's;
- ``weight distance to nearest original``: min over originals (others, for an original) of the mean over the
  weight tensors (two or more dimensions) of ||w - w_o|| / ||w_o||, i.e. how new the weights are;

then averaged over the models of a kind, with the test accuracy as stored and with the re-estimated statistics.
Writes ``benchmarks/results/<name>.{csv,md}`` and prints the Markdown.

Table: docs/throughput.md, "Why the generated BatchNorm statistics miss" (generated block
bench.bn_stats_test_resnet), from the command above.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import ROOT, find_zoo


def nearest(sd: dict, zoo: list[dict], skip: int | None) -> tuple[float, float]:
    """(log-variance error to the closest original's statistics, relative weight distance to the closest original),
    each minimised over the zoo without its member ``skip``."""
    import torch

    var_keys = [k for k in sd if k.endswith("running_var")]
    weights = [k for k in sd if k.endswith("weight") and sd[k].ndim >= 2]
    logvar, dist = [], []
    for i, o in enumerate(zoo):
        if i == skip:
            continue
        logvar.append(float(torch.stack([(sd[k].log() - o[k].log()).abs().mean() for k in var_keys]).mean()))
        dist.append(float(torch.stack([(sd[k] - o[k]).norm() / o[k].norm() for k in weights]).mean()))
    return min(logvar), min(dist)


def stat_errors(stored: dict, fresh: dict) -> tuple[float, float]:
    """(log-variance error, mean error in standard deviations), averaged over the BatchNorm layers."""
    import torch

    var_keys = [k for k in stored if k.endswith("running_var")]
    logvar = [float((stored[k].log() - fresh[k].log()).abs().mean()) for k in var_keys]
    mean = [float(((stored[k[: -len("var")] + "mean"] - fresh[k[: -len("var")] + "mean"]).abs()
                   / fresh[k].sqrt()).mean()) for k in var_keys]  # fmt: skip
    return float(torch.tensor(logvar).mean()), float(torch.tensor(mean).mean())


def measure(run: Path, exp: str, zoo: str, settings, label: str) -> list[dict]:
    import torch

    from rpg.evaluate.baselines import recalibrate_batchnorm
    from rpg.evaluate.evaluators import build_evaluator
    from rpg.runtime import progress
    from rpg.zoo.checkpoint import load_checkpoint
    from rpg.zoo.models import build_model

    results = run / "results" / exp
    generated = sorted((results / "generated" / zoo).glob("batch*/*.safetensors"))
    zoo_files = sorted((results / "zoo" / zoo).glob("run*/*.safetensors"))
    if not generated or not zoo_files:
        raise SystemExit(f"{results}: no generated models or no zoo of {zoo!r}")
    step = len(zoo_files) / len(generated)
    picked = [int(i * step) for i in range(len(generated))]
    originals = [zoo_files[i] for i in picked]
    zoo_states = [load_checkpoint(p)[0] for p in zoo_files]
    ev_cfg = settings.evaluate
    evaluator = build_evaluator(ev_cfg.evaluator, data=settings.data, device="cpu", batch_size=ev_cfg.batch_size)
    first, meta = load_checkpoint(originals[0])
    model = build_model(meta["arch"], meta["arch_kwargs"])
    rows = []
    for kind, paths, skips in (("original", originals, picked), ("generated", generated, [None] * len(generated))):
        per_model = []
        for path, skip in progress(list(zip(paths, skips)), desc=f"{label}: {kind}"):
            stored = load_checkpoint(path)[0]
            near = nearest(stored, zoo_states, skip)
            model.load_state_dict(stored, strict=True)
            acc = evaluator.evaluate(model, "test").score
            batches = evaluator.calibration_batches(seed=ev_cfg.seed, batch_size=ev_cfg.batch_size)
            recalibrate_batchnorm(model, batches, num_batches=ev_cfg.bn_recalibrate_batches, device="cpu")
            fresh = {k: v.clone() for k, v in model.state_dict().items()}
            acc_fresh = evaluator.evaluate(model, "test").score
            per_model.append((*stat_errors(stored, fresh), *near, acc, acc_fresh))
        t = torch.tensor(per_model, dtype=torch.float64).mean(dim=0).tolist()
        rows.append({"run": label, "models": kind, "count": len(paths), "log-var error": t[0],
                     "mean error (sd)": t[1], "log-var error to nearest original": t[2],
                     "weight distance to nearest original": t[3], "accuracy": t[4],
                     "accuracy, statistics re-estimated": t[5]})  # fmt: skip
    return rows


def main() -> None:
    import pandas as pd
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="pipeline run directories (each with results/)")
    p.add_argument("--labels", nargs="+", help="one label per run (default: the directory names)")
    p.add_argument("--config", required=True)
    p.add_argument("--zoo", required=True)
    p.add_argument("--name", default=None, help="write benchmarks/results/<name>.{csv,md}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--note", default="")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit("give one label per run")
    exp, settings = find_zoo(args.config, args.zoo)
    rows = [r for run, label in zip(args.runs, labels) for r in measure(Path(run), exp, args.zoo, settings, label)]
    table = pd.DataFrame(rows)
    md = table.to_markdown(index=False, floatfmt=".4f") + "\n\n" + "\n".join(
        f"- {line}" for line in [
            f"Zoo `{args.zoo}` of {args.config}; originals evenly spaced over the zoo, as many as generated models; "
            f"statistics re-estimated on evaluate.bn_recalibrate_batches = {settings.evaluate.bn_recalibrate_batches} "
            "training batches; test split.",
            *([args.note] if args.note else []),
        ]
    )  # fmt: skip
    print(md)
    if args.name:
        out = ROOT / "benchmarks" / "results"
        table.to_csv(out / f"{args.name}.csv", index=False)
        (out / f"{args.name}.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
