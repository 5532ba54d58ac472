"""Does the generator sample new models or look up old ones? Variants of the recipe on a zoo, side by side.

For every variant (overrides of the zoo's collect / tokens / generator / train / generate blocks) the script trains
a generator, samples ``--models`` models and runs the pipeline's evaluation (:func:`rpg.evaluate.evaluate_zoo`: test
split, probe-split similarity, noise frontier, equal-n originals) and prints one table: distinct models of n,
pairwise similarity and distance, leave-one-run-out similarity and distance, copies, test accuracy best / mean /
min against the originals' mean (equal n), the noise frontier at the generated similarity, whether the generated
models beat it, and the training seconds. Rows are cached per (zoo, variant) in ``--workdir``; reruns resume.

    snakemake --cores 2 results/digits/tokens/cnn_m results/digits/tokens/vit    # the zoos, once
    python benchmarks/diversity.py --zoos cnn_m vit                                # all variants (CPU: an hour+)
    python benchmarks/diversity.py --zoos cnn_m --variants "x0 1000" "epsilon 3000"

Writes benchmarks/results/diversity.{csv,md}.

Table: docs/benchmarks.md, "Recipe study: new models or lookups", and docs/results.md, "The recipe behind the
default" (generated block bench.diversity).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import pandas as pd
import torch
import yaml

from rpg.config import ZooSettings, deep_merge, resolve_config
from rpg.evaluate import evaluate_zoo
from rpg.stages.collect import collect_run, run_checkpoints
from rpg.stages.generate import generate
from rpg.stages.tokenize import tokenize
from rpg.stages.train import train

ROOT = Path(__file__).resolve().parent.parent
# name -> overrides {block: {key: value}}; the zoo's own settings (config file) are the base. Every variant names its
# denoiser and sampler steps, so that a row stays what it says when the config's defaults change.
STD = [1, 16, 32, 64, 32, 16, 1]  # the denoiser of the first epsilon default
NARROW = [1, 8, 16, 32, 16, 8, 1]  # a quarter of its FLOPs per token
# fewer diffusion timesteps over nearly the same noise levels: betas scaled with 1000 / T (alpha_bar_T 2e-5 at T100
# against 4e-5 at T1000; docs/method.md)
T100 = {"num_timesteps": 100, "beta_start": 0.001, "beta_end": 0.2}
T50 = {"num_timesteps": 50, "beta_start": 0.002, "beta_end": 0.4}


def _variant(prediction: str, steps: int, denoiser: list[int] = STD, sampler_steps: int | None = 20, **extra) -> dict:
    out = {"generator": {"prediction": prediction, "denoiser_channels": denoiser, **extra.pop("generator", {})},
           "train": {"steps": steps, **extra.pop("train", {})},
           "generate": {"sampler": "ddim", "steps": sampler_steps, **extra.pop("generate", {})}}  # fmt: skip
    return {**out, **extra}


VARIANTS: dict[str, dict[str, dict]] = {
    "x0 1000": _variant("sample", 1000),
    "epsilon 1000": _variant("epsilon", 1000),
    "epsilon 2000": _variant("epsilon", 2000),
    "epsilon 3000": _variant("epsilon", 3000),
    "v 1000": _variant("v", 1000),
    "v 2000": _variant("v", 2000),
    "epsilon 1000 min-SNR": _variant("epsilon", 1000, generator={"loss_weighting": "min_snr"}),
    "v 1000 min-SNR": _variant("v", 1000, generator={"loss_weighting": "min_snr"}),
    "epsilon 2000 min-SNR": _variant("epsilon", 2000, generator={"loss_weighting": "min_snr"}),
    "epsilon 1500 narrow": _variant("epsilon", 1500, NARROW),
    "epsilon 1500 narrow DDIM-50": _variant("epsilon", 1500, NARROW, 50),
    "epsilon 1500 narrow DDIM-100": _variant("epsilon", 1500, NARROW, 100),
    "epsilon 1500 narrow DDIM-50 eta 1": _variant("epsilon", 1500, NARROW, 50, generate={"eta": 1.0}),
    "epsilon 1500": _variant("epsilon", 1500),
    "epsilon 3000 narrow": _variant("epsilon", 3000, NARROW),
    "epsilon 3000 narrow DDIM-50": _variant("epsilon", 3000, NARROW, 50),
    "epsilon 3000 narrow noise_samples 2": _variant("epsilon", 3000, NARROW, train={"noise_samples": 2}),
    "epsilon 4500 narrow": _variant("epsilon", 4500, NARROW),
    "v 3000 narrow": _variant("v", 3000, NARROW),
    "v 1500 narrow": _variant("v", 1500, NARROW),
    "epsilon 1500 narrow T100": _variant("epsilon", 1500, NARROW, generator=T100),
    "epsilon 2000 narrow T100": _variant("epsilon", 2000, NARROW, generator=T100),
    "epsilon 3000 narrow T100": _variant("epsilon", 3000, NARROW, generator=T100),
    "epsilon 2000 narrow T50": _variant("epsilon", 2000, NARROW, generator=T50),
    "epsilon 3000 narrow min-SNR": _variant("epsilon", 3000, NARROW, generator={"loss_weighting": "min_snr"}),
    "epsilon 2000 DDPM": _variant("epsilon", 2000, generate={"sampler": "ddpm", "steps": None}),
    "x0 1000 state per checkpoint": _variant("sample", 1000, tokens={"state": "checkpoint"}),
    "epsilon 2000 wide zoo": _variant("epsilon", 2000, collect={"finetune_lr": 0.005, "finetune_epochs": 3}),
}  # fmt: skip
COLUMNS = ["zoo", "variant", "distinct", "groups", "pairwise sim.", "pairwise dist.", "other-run sim.",
           "other-run dist.", "nearest dist.", "copies", "acc. best", "acc. mean", "acc. min", "originals mean",
           "mean - originals", "noise at sim.", "beats noise", "train s"]  # fmt: skip


def variant_settings(base: ZooSettings, overrides: dict[str, dict]) -> ZooSettings:
    """The zoo's settings with a variant's overrides (checked like a config file)."""
    raw = base.to_dict()
    for block, values in overrides.items():
        raw[block] = deep_merge(raw[block], values)
    return ZooSettings.parse(raw)


def zoo_inputs(settings: ZooSettings, base: ZooSettings, work: Path) -> tuple[list[Path], Path]:
    """Run directories and token store of a variant: the pipeline's own when collection and tokenization are
    unchanged, else made here (cached in ``work``)."""
    exp, zoo = settings.experiment, settings.zoo
    runs = [ROOT / f"results/{exp}/zoo/{zoo}/run{r}" for r in range(settings.runs)]
    if settings.collect != base.collect:
        runs = [work / "zoo" / f"run{r}" for r in range(settings.runs)]
        for r, d in enumerate(runs):
            if not (d / "run.csv").is_file():
                collect_run(settings, run=r, out_dir=d)
    tokens = ROOT / f"results/{exp}/tokens/{zoo}"
    if settings.collect != base.collect or settings.tokens != base.tokens:
        tokens = work / "tokens"
        if not (tokens / "index.parquet").is_file():
            tokenize(settings, run_dirs=runs, out_dir=tokens)
    missing = [p for p in (*runs, tokens) if not p.exists()]
    if missing:
        raise SystemExit(f"missing {missing[0]}: run `snakemake --cores 2 {tokens.relative_to(ROOT)}` first")
    return runs, tokens


def run_variant(settings: ZooSettings, base: ZooSettings, work: Path, models: int) -> dict:
    runs, tokens = zoo_inputs(settings, base, work)
    gen_dir = work / "generator"
    if not (gen_dir / "model.safetensors").is_file():
        train(settings, tokens_dir=tokens, out_dir=gen_dir)
    train_s = float(pd.read_csv(gen_dir / "train_log.csv")["time"].iloc[-1])  # the training loop's own clock
    batch = work / "generated"
    if len(list(batch.glob("model_*.safetensors"))) != models:
        generate(settings, generator_dir=gen_dir, tokens_dir=tokens, out_dir=batch, indices=range(models))
    summary = evaluate_zoo(data_cfg=settings.data, token_dir=tokens, checkpoint_paths=run_checkpoints(runs),
                           generated_paths=sorted(batch.glob("model_*.safetensors")), generator_dir=gen_dir,
                           out_dir=work / "evaluation", evaluate_cfg=settings.evaluate,
                           device=settings.device)  # fmt: skip
    g, o, d = summary["generated"], summary["original"], summary["generated_diversity"]
    return {
        "distinct": f"{d['distinct']}/{d['n']}",
        "groups": d["clusters"],
        "pairwise sim.": d.get("pairwise_similarity_mean"),
        "pairwise dist.": d.get("pairwise_distance_mean"),
        "other-run sim.": g["loro_similarity"]["mean"],
        "other-run dist.": g["loro_distance"]["mean"],
        "nearest dist.": g["distance"]["mean"],
        "copies": g["copies"],
        "acc. best": g["score"]["best"],
        "acc. mean": g["score"]["mean"],
        "acc. min": g["score"]["min"],
        "originals mean": o["score"]["mean"],
        "mean - originals": None if g["score"]["mean"] is None else g["score"]["mean"] - o["score"]["mean"],
        "noise at sim.": summary["frontiers"]["noise"]["score_at_generated_similarity"],
        "beats noise": summary["checks"]["generated_beats_noise_at_equal_similarity"],
        "train s": train_s,
    }


def markdown(df: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config.yaml"))
    p.add_argument("--experiment", default=None, help="default: the config's first experiment")
    p.add_argument("--zoos", nargs="+", default=["cnn_m", "vit"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--models", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help="cap the training steps (a smoke test)")
    p.add_argument("--no-interpolation", action="store_true", help="skip the interpolation/average baselines")
    p.add_argument(
        "--only-trained",
        action="store_true",
        help="skip (zoo, variant) pairs without a trained generator in --workdir (table from what exists)",
    )
    p.add_argument("--workdir", default=str(ROOT / "benchmarks" / ".cache" / "diversity"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "diversity"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    resolved = resolve_config(yaml.safe_load(Path(args.config).read_text()))
    exp = args.experiment or next(iter(resolved))
    rows = []
    for zoo in args.zoos:
        base = resolved[exp][zoo]
        base = base.replace(train={**base.train.to_dict(), "threads": args.threads})
        for name in args.variants:
            work = Path(args.workdir) / exp / zoo / name.replace(" ", "_")
            cache = work / "row.json"
            if args.only_trained and not cache.is_file() and not (work / "generator" / "model.safetensors").is_file():
                continue
            if cache.is_file():
                row = json.loads(cache.read_text())
            else:
                print(f"[{zoo}] {name} ...", flush=True)
                settings = variant_settings(base, VARIANTS[name])
                if args.no_interpolation:
                    settings = settings.replace(evaluate={**settings.evaluate.to_dict(), "interp_pairs": 0})
                if args.max_steps:
                    settings = settings.replace(train={**settings.train.to_dict(), "steps": args.max_steps})
                row = run_variant(settings, base, work, args.models)
                cache.write_text(json.dumps(row))
            rows.append({"zoo": zoo, "variant": name, **row})
            print(markdown(pd.DataFrame([rows[-1]], columns=COLUMNS)).splitlines()[-1], flush=True)
    df = pd.DataFrame(rows, columns=COLUMNS)
    config_name = Path(args.config).resolve()
    config_name = config_name.relative_to(ROOT) if config_name.is_relative_to(ROOT) else args.config
    text = markdown(df)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    machine = f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch {torch.__version__}"
    out.with_suffix(".md").write_text(
        f"{text}\n\n- Config {config_name}, experiment {exp}; {args.models} generated models per variant; test split; "
        f"originals over equal n.\n- Machine: {machine}; train s: wall seconds of the training, on a CPU shared "
        f"with other jobs (a rough guide only).\n"
    )


if __name__ == "__main__":
    main()
