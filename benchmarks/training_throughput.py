"""Training throughput: token samples per second of a generator training step, before and after the throughput
work, side by side in one run.

    python benchmarks/training_throughput.py                     # test_resnet recipe variants, 1 and 2 threads
    python benchmarks/training_throughput.py --threads 1 --steps 3 --repeats 2

A step is what :func:`rpg.generator.trainer.train_generator` does per step (prototypes once per distinct state,
``diffusion_batch`` tokens each denoised at ``noise_samples`` timesteps, backward, gradient clipping, AdamW) on the
token layout of ``configs/test_timm.yaml``'s ``test_resnet`` zoo (a random-init test_resnet, 1,512 tokens of 256;
4 checkpoints of 2 runs, so up to 2 distinct permutation states per step). Rows:

- ``before``: the previous step (the denoiser's previous forward: (h + c) * t_emb per layer, BatchNorm and ELU out
  of place; one noise level per token) with the test_timm recipe (denoiser 1-16-32-64-32-16-1, 512 tokens);
- the same recipe with the current denoiser, then with ``train.noise_samples`` 2 and 4;
- the narrow denoiser 1-8-16-32-16-8-1 (the test_resnet recipe of ``configs/test_timm.yaml``) with 1, 2 and 4
  noise samples;
- the current recipe with bfloat16 autocast on the CPU (``train.bf16_cpu``).

Token samples per step = diffusion_batch x noise_samples. Every configuration is measured ``--repeats`` times,
interleaved, ``--steps`` steps each after one warm-up step; the table gives medians of the wall and CPU time per
step (the CPU is shared with other jobs: CPU time, ``time.process_time``, is not charged for the time the process
waits), and "x before" is the ratio of token samples per CPU-second to the ``before`` row at the same thread
count. Prints the
table and writes ``benchmarks/results/training_throughput.{csv,md}``.

Table: docs/throughput.md, "Training throughput" (generated block bench.training_throughput), from
``python benchmarks/training_throughput.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, cpu_name, find_zoo, relative, zoo_token_store

STD = [1, 16, 32, 64, 32, 16, 1]
NARROW = [1, 8, 16, 32, 16, 8, 1]
# (name, denoiser channels, noise_samples, bf16 on the CPU, previous forward)
VARIANTS = [
    ("before: 1-16-32-64 denoiser, 1 noise level", STD, 1, False, True),
    ("1-16-32-64, noise_samples 1", STD, 1, False, False),
    ("1-16-32-64, noise_samples 2", STD, 2, False, False),
    ("1-16-32-64, noise_samples 4", STD, 4, False, False),
    ("1-8-16-32, noise_samples 1", NARROW, 1, False, False),
    ("1-8-16-32, noise_samples 2", NARROW, 2, False, False),
    ("1-8-16-32, noise_samples 4", NARROW, 4, False, False),
    ("1-16-32-64, bf16 autocast (CPU)", STD, 1, True, False),
]


class Setup:
    """A model, its optimizer and a step function for one variant."""

    def __init__(self, settings, store, channels, noise_samples: int, bf16: bool, previous: bool) -> None:
        import torch
        from generation import previous_denoiser

        from rpg.generator.model import build_generator

        gcfg = settings.generator.replace(denoiser_channels=list(channels))
        torch.manual_seed(0)
        self.model = build_generator(gcfg, store.layout, store.num_states)
        if previous:
            den = self.model.denoiser
            den.forward = lambda x, t, cond: previous_denoiser(den, x, t, cond)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.tokens = store.tokens(range(len(store))).float()
        self.states = torch.tensor(store.index["state"].tolist())
        self.batch, self.tcfg = settings.train.batch_size, settings.train
        self.noise_samples, self.bf16 = noise_samples, bf16
        self.gen = torch.Generator()
        self.samples = self.tcfg.diffusion_batch * noise_samples

    def step(self, i: int) -> None:
        import torch

        rows = [(i * self.batch + j) % len(self.tokens) for j in range(self.batch)]
        self.gen.manual_seed(i)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(self.tokens[rows], self.states[rows], None, diffusion_batch=self.tcfg.diffusion_batch,
                              noise_samples=self.noise_samples, generator=self.gen)  # fmt: skip
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()


def measure(args) -> tuple[list[dict], dict]:
    import torch

    _, zoo = find_zoo(args.config, args.zoo)
    # 4 checkpoints of 2 runs (a random-init model plus small noise) of the zoo's architecture
    store = zoo_token_store(zoo, Path(tempfile.mkdtemp(prefix="rpg_train_bench_")), runs=2, per_run=2, noise=0.01,
                            shard_size=4)  # fmt: skip
    setups = [(v, Setup(zoo, store, *v[1:])) for v in VARIANTS]
    threads = [int(t) for t in args.threads.split(",")]
    times: dict = {(th, v[0]): [] for th in threads for v, _ in setups}
    cpu: dict = {(th, v[0]): [] for th in threads for v, _ in setups}
    for r in range(args.repeats):
        for th in threads:
            torch.set_num_threads(th)
            for v, s in setups:
                s.step(0)  # warm-up
                t0, c0 = time.perf_counter(), time.process_time()
                for i in range(args.steps):
                    s.step(i + 1)
                times[(th, v[0])].append((time.perf_counter() - t0) / args.steps)
                cpu[(th, v[0])].append((time.process_time() - c0) / args.steps)
                print(f"round {r + 1}: {th} thread(s), {v[0]}: {times[(th, v[0])][-1]:.2f} s/step", file=sys.stderr,
                      flush=True)  # fmt: skip
    rows = []
    for th in threads:
        before = None
        for v, s in setups:
            step_s = statistics.median(times[(th, v[0])])
            cpu_s = statistics.median(cpu[(th, v[0])])
            rate = s.samples / cpu_s
            before = rate if before is None else before
            rows.append({"threads": th, "variant": v[0], "diffusion_batch": s.tcfg.diffusion_batch,
                         "noise_samples": v[2], "token_samples_per_step": s.samples, "s_per_step": step_s,
                         "steps_per_s": 1 / step_s, "token_samples_per_s": s.samples / step_s, "cpu_s_per_step": cpu_s,
                         "token_samples_per_cpu_s": rate, "x_before": rate / before})  # fmt: skip
    info = {"tokens": store.layout.num_tokens, "token_size": store.layout.token_size, "dim": zoo.generator.dim,
            "batch_size": zoo.train.batch_size}  # fmt: skip
    return rows, info


def write_tables(rows: list[dict], info: dict, args) -> str:
    import platform

    import pandas as pd
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "training_throughput.csv", index=False)
    head = ["threads", "variant", "token samples / step", "s / step", "token samples / s", "CPU s / step",
            "token samples / CPU-s", "x before"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["threads"], r["variant"], f"{r['token_samples_per_step']:,}", f"{r['s_per_step']:.2f}",
                 f"{r['token_samples_per_s']:.0f}", f"{r['cpu_s_per_step']:.2f}", f"{r['token_samples_per_cpu_s']:.0f}",
                 f"{r['x_before']:.2f}"]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    cpu = cpu_name()
    flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "")
    native_bf16 = any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    notes = [
        f"`{relative(args.config)}` zoo `{args.zoo}`: {info['tokens']:,} tokens of {info['token_size']}, "
        f"width {info['dim']}, "
        f"{info['batch_size']} checkpoints (2 permutation states) per step; medians of {args.repeats} interleaved "
        f"rounds of {args.steps} steps.",
        f"Machine: {cpu} ({'with' if native_bf16 else 'without'} native bf16 instructions), torch {torch.__version__}"
        f", Python {platform.python_version()}; a CPU shared with other jobs: absolute times vary from run to run, "
        "the ratios within a run are the result.",
    ]
    md = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    (out / "training_throughput.md").write_text(md)
    return md


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "test_timm.yaml"))
    p.add_argument("--zoo", default="test_resnet")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--steps", type=int, default=4, help="timed steps per configuration and round")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    rows, info = measure(args)
    print(write_tables(rows, info, args))


if __name__ == "__main__":
    main()
