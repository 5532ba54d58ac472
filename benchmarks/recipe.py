"""Training-recipe comparison on one zoo: train, generate and evaluate each variant side by side.

    python benchmarks/recipe.py results/digits/tokens/cnn_m --steps 600

Each variant overrides the generator/train settings of a base recipe (the default config's); the table gives the
final training loss, training time and the validation accuracy (best/mean/min) of generated models against the
originals' mean. Used to choose the CPU recipe (README, "Training recipe").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rpg.data import build_dataset
from rpg.generate import generate_models
from rpg.runtime import setup_logging
from rpg.tokens.store import TokenStore
from rpg.train import train_generator
from rpg.zoo.checkpoint import load_checkpoint
from rpg.zoo.collect import evaluate_accuracy
from rpg.zoo.models import build_model

BASE_GENERATOR = {"preset": "tiny", "dim": 128, "d_state": 16, "position": "sin2d+learned", "prediction": "sample",
                  "denoiser_channels": [1, 16, 32, 64, 32, 16, 1]}  # fmt: skip
BASE_TRAIN = {"batch_size": 4, "diffusion_batch": 128, "lr": 3e-3, "warmup_steps": 50, "ema_decay": None}
VARIANTS = {
    "recipe (x0 prediction, learned offsets)": ({}, {}),
    "epsilon prediction (paper)": ({"prediction": "epsilon"}, {}),
    "epsilon + sinusoid only": ({"prediction": "epsilon", "position": "sin2d"}, {}),
    "x0 prediction, sinusoid only": ({"position": "sin2d"}, {}),
    "recipe + EMA 0.995": ({}, {"ema_decay": 0.995}),
}


def run_variant(token_dir: str, data_cfg: dict, gen: dict, train: dict, models: int) -> dict:
    store = TokenStore(token_dir)
    val = build_dataset(data_cfg, "val")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        train_generator(token_dir=token_dir, out_dir=out, generator_cfg=gen, train_cfg=train, device="cpu")
        train_s = time.perf_counter() - t0
        paths = [out / f"model_{i:03d}.safetensors" for i in range(models)]
        t0 = time.perf_counter()
        generate_models(generator_dir=out, token_dir=token_dir, out_paths=paths,
                        generate_cfg={"sampler": "ddim", "steps": 60}, device="cpu")  # fmt: skip
        gen_s = (time.perf_counter() - t0) / models
        accs = []
        for p in paths:
            state, meta = load_checkpoint(p)
            model = build_model(meta["arch"], meta["arch_kwargs"])
            model.load_state_dict(state, strict=True)
            accs.append(evaluate_accuracy(model, val, device="cpu")[0])
        loss = pd.read_csv(out / "train_log.csv")["loss"].tail(50).mean()
    return {"final loss": loss, "train s": train_s, "s/model": gen_s, "best": max(accs), "mean": float(np.mean(accs)),
            "min": min(accs), "originals mean": float(store.index["val_accuracy"].mean())}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("token_dir", nargs="?", default="results/digits/tokens/cnn_m")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--models", type=int, default=6)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help="names from VARIANTS")
    ap.add_argument("--data", default='{"name": "digits", "image_size": 8}', help="data config (JSON)")
    ap.add_argument("--out", default="benchmarks/results/recipe")
    args = ap.parse_args()
    torch.set_num_threads(1)
    setup_logging(None, level=30)
    rows = []
    for name in args.variants:
        gen, train = VARIANTS[name]
        row = run_variant(args.token_dir, json.loads(args.data), {**BASE_GENERATOR, **gen},
                          {**BASE_TRAIN, "steps": args.steps, **train}, args.models)  # fmt: skip
        rows.append({"variant": name, "steps": args.steps, **row})
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows).round(4)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(f"{args.out}.csv", index=False)
    Path(f"{args.out}.md").write_text(table.to_markdown(index=False) + "\n")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
