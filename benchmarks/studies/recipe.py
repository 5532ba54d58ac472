"""Training-recipe comparison on one zoo: train, generate and evaluate each variant side by side.

    python benchmarks/studies/recipe.py results/digits/tokens/cnn_m --steps 600
    python benchmarks/studies/recipe.py results/test_timm/tokens/test_resnet --config configs/test_timm.yaml \\
        --zoo test_resnet --variants recipe "diffusion_batch 512" --steps 3000 --device cuda
    python benchmarks/studies/recipe.py results/test_timm/tokens/test_resnet --config configs/test_timm.yaml \
        --zoo test_resnet --variants 'K4={"train": {"noise_samples": 4, "steps": 300}}' --out /tmp/k4

Each variant (a name below, or ``name={"generator": {...}, "train": {...}}`` inline) overrides the generator/train
settings of a base recipe: the default config's CPU recipe, or with
``--config``/``--zoo`` that zoo's resolved settings. The table gives the final training loss, training time, the
RMS distance of generated models to the nearest original in the normalised token space, and the validation
accuracy (best/mean/min) of generated models against the originals' mean. For zoos with BatchNorm two diagnostic
columns say where accuracy is lost: the mean accuracy after re-estimating the BatchNorm statistics of each
generated model on training batches, and with the nearest original's running statistics put in (generated
weights, original statistics). Used to choose the recipes (README, "Training recipe").

A study (docs/development.md, "Studies"): its table is docs/throughput.md, "The test_resnet recipe" (generated
block bench.recipe_test_resnet_h100).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from rpg.classifier import evaluate_accuracy
from rpg.config import resolve_config
from rpg.data import build_dataset, make_loader
from rpg.evaluate.baselines import batchnorm_modules, recalibrate_batchnorm
from rpg.evaluate.similarity import flatten_tokens, rms_distances
from rpg.generator.sampling import generate_models
from rpg.generator.trainer import train_generator
from rpg.runtime import resolve_device, setup_logging
from rpg.tokens.store import TokenStore
from rpg.tokens.tokenizer import tokenize
from rpg.zoo.checkpoint import load_checkpoint
from rpg.zoo.models import build_model

ROOT = Path(__file__).resolve().parents[2]
BASE_GENERATOR = {"preset": "tiny", "dim": 128, "d_state": 16, "position": "sin2d+learned", "prediction": "sample",
                  "denoiser_channels": [1, 16, 32, 64, 32, 16, 1]}  # fmt: skip
BASE_TRAIN = {"batch_size": 4, "diffusion_batch": 128, "lr": 3e-3, "warmup_steps": 50, "ema_decay": None}
VARIANTS = {
    "recipe": ({}, {}),
    "epsilon prediction (paper)": ({"prediction": "epsilon"}, {}),
    "epsilon + sinusoid only": ({"prediction": "epsilon", "position": "sin2d"}, {}),
    "x0 prediction, sinusoid only": ({"position": "sin2d"}, {}),
    "recipe + EMA 0.995": ({}, {"ema_decay": 0.995}),
    "diffusion_batch 128": ({}, {"diffusion_batch": 128}),
    "diffusion_batch 512": ({}, {"diffusion_batch": 512}),
}
RUNNING_STATS = ("running_mean", "running_var")


class Zoo:
    """The originals of a token store: normalised tokens (for distances) and what the evaluation needs."""

    def __init__(self, token_dir: str, data_cfg: dict, device: torch.device) -> None:
        self.store = TokenStore(token_dir)
        self.layout, self.mask = self.store.layout, self.store.layout.token_mask()
        rows = range(len(self.store))
        self.flat = torch.stack([flatten_tokens(self.store.tokens([r])[0], self.mask) for r in rows])
        self.val = build_dataset(data_cfg, "val")
        self.train = build_dataset(data_cfg, "train")
        self.device = device
        self.originals_mean = float(self.store.index["val_accuracy"].mean())

    def accuracy(self, model: torch.nn.Module, *, recalibrate: bool = False) -> float:
        model.to(self.device)
        if recalibrate:
            batches = make_loader(self.train, batch_size=256, shuffle=True, seed=0)
            recalibrate_batchnorm(model, batches, num_batches=8, device=self.device)
        return float(evaluate_accuracy(model, self.val, device=self.device)[0])

    def measure(self, path: Path) -> dict:
        state, meta = load_checkpoint(path)
        finite = all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())
        if finite:  # a diverged model has no place in the normalised space
            dist = rms_distances(flatten_tokens(tokenize(state, self.layout).float(), self.mask), self.flat)
        else:
            dist = torch.full((len(self.flat),), float("nan"))
        nearest = int(torch.nan_to_num(dist, nan=0.0).argmin())

        def model(sd) -> torch.nn.Module:
            m = build_model(meta["arch"], meta["arch_kwargs"])
            m.load_state_dict(sd, strict=True)
            return m

        row = {"distance": float(dist[nearest]), "acc": self.accuracy(model(state))}
        if batchnorm_modules(model(state)):
            original = self.store.checkpoint_state_dict(nearest)
            swapped = {k: (original[k].to(v.dtype) if k.endswith(RUNNING_STATS) else v) for k, v in state.items()}
            row["acc BN re-estimated"] = self.accuracy(model(state), recalibrate=True)
            row["acc original BN stats"] = self.accuracy(model(swapped))
        return row


def run_variant(zoo: Zoo, token_dir: str, gen: dict, train: dict, models: int, device: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        train_generator(token_dir=token_dir, out_dir=out, generator_cfg=gen, train_cfg=train, device=device)
        train_s = time.perf_counter() - t0
        paths = [out / f"model_{i:03d}.safetensors" for i in range(models)]
        t0 = time.perf_counter()
        generate_models(generator_dir=out, token_dir=token_dir, out_paths=paths,
                        generate_cfg={"sampler": "ddim", "steps": 20, "threads": threads}, device=device)  # fmt: skip
        gen_s = (time.perf_counter() - t0) / models
        measured = pd.DataFrame([zoo.measure(p) for p in paths])
        loss = pd.read_csv(out / "train_log.csv")["loss"].tail(50).mean()
    row = {"final loss": loss, "train s": train_s, "s/model": gen_s, "distance": measured["distance"].mean(),
           "best": measured["acc"].max(), "mean": measured["acc"].mean(), "min": measured["acc"].min(),
           "originals mean": zoo.originals_mean}  # fmt: skip
    for col in ("acc BN re-estimated", "acc original BN stats"):
        if col in measured:
            row[f"mean, {col}"] = measured[col].mean()
    return row


def base_settings(args) -> tuple[dict, dict, dict]:
    """(generator, train, data) settings: the default CPU recipe, or a zoo's settings from ``--config``."""
    if not args.config:
        return BASE_GENERATOR, BASE_TRAIN, json.loads(args.data)
    settings = resolve_config(yaml.safe_load(Path(args.config).read_text()))
    zoos = {zoo: s for exp in settings.values() for zoo, s in exp.items()}
    if args.zoo not in zoos:
        raise SystemExit(f"{args.config}: no zoo {args.zoo!r} (zoos: {', '.join(zoos)})")
    s = zoos[args.zoo]
    return s.generator.to_dict(), s.train.to_dict(), s.data.to_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("token_dir", nargs="?", default="results/digits/tokens/cnn_m")
    ap.add_argument("--config", help="take the base recipe and data from this config file's zoo --zoo")
    ap.add_argument("--zoo", help="zoo name in --config")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--models", type=int, default=6)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS)[:5], help=f"names from {list(VARIANTS)}")
    ap.add_argument("--data", default='{"name": "digits", "image_size": 8}', help="data config (JSON)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gen-threads", type=int, default=1, help="threads of the generation of each variant")
    ap.add_argument("--out", default="benchmarks/results/recipe")
    ap.add_argument("--from-jsonl", nargs="*", help="only write the table of rows this script printed (JSON lines)")
    ap.add_argument("--note", action="append", default=[], help="a line under the table (with --from-jsonl)")
    args = ap.parse_args()
    if args.from_jsonl:
        rows = [json.loads(ln) for f in args.from_jsonl for ln in Path(f).read_text().splitlines() if ln.strip()]
        write_table(rows, args.out, args.note)
        return
    for v in args.variants:  # "name={json}": a variant given inline, {"generator": {...}, "train": {...}}
        if v not in VARIANTS and "=" in v:
            name, spec = v.split("=", 1)
            spec = json.loads(spec)
            VARIANTS[v] = (spec.get("generator", {}), spec.get("train", {}))
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)} or name={{json}}")
    torch.set_num_threads(args.threads)
    setup_logging(None, level=30)
    base_gen, base_train, data_cfg = base_settings(args)
    zoo = Zoo(args.token_dir, data_cfg, resolve_device(args.device))
    rows = []
    for name in args.variants:
        gen, train = VARIANTS[name]
        row = run_variant(zoo, args.token_dir, {**base_gen, **gen}, {**base_train, "steps": args.steps, **train},
                          args.models, args.device, args.gen_threads)  # fmt: skip
        steps = train.get("steps", args.steps)
        samples = (
            steps
            * train.get("diffusion_batch", base_train["diffusion_batch"])
            * train.get("noise_samples", base_train.get("noise_samples", 1))
        )
        rows.append({"variant": name.split("=", 1)[0], "steps": steps, "token samples": samples,
                     "samples/s": samples / row["train s"], **row})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    write_table(rows, args.out, [])


def write_table(rows: list[dict], out: str, notes: list[str]) -> None:
    table = pd.DataFrame(rows).round(4)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(f"{out}.csv", index=False)
    md = table.to_markdown(index=False) + "\n" + "".join(f"\n- {n}" for n in notes) + ("\n" if notes else "")
    Path(f"{out}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
