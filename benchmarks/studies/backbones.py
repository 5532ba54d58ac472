"""Backbone benchmark: training steps/s and generation seconds/model for mamba2, lstm and transformer.

    python benchmarks/studies/backbones.py results/digits/tokens/cnn_m           # a token store
    python benchmarks/studies/backbones.py --synthetic 1500x256x8                # L x k x checkpoints, no store needed
    python benchmarks/studies/backbones.py --profile-scan                        # Mamba2 scan vs LSTM at D=256, L~1500

Every figure is the median of ``--repeats`` runs after one warm-up; all backbones run in the same process with
the same threads, so the columns are comparable. Generator options come from ``--preset`` plus ``--set k=v``.

A study (docs/development.md, "Studies"): superseded by the per-backbone rows of benchmarks/scale.py
(docs/benchmarks.md, "Scale").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rpg.config import GeneratorConfig, TrainConfig  # noqa: E402
from rpg.generator.backbones import build_backbone  # noqa: E402
from rpg.generator.model import build_generator as build_model  # noqa: E402
from rpg.generator.samplers import build_sampler  # noqa: E402


def median_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class SyntheticLayout:
    """Layers of ``tokens_per_layer`` tokens of size k, the last token of each layer half padding."""

    def __init__(self, num_tokens: int, token_size: int, tokens_per_layer: int = 16) -> None:
        self.num_tokens, self.token_size = num_tokens, token_size
        idx = torch.arange(num_tokens)
        self._pos = torch.stack([idx // tokens_per_layer, idx % tokens_per_layer], 1)
        self._mask = torch.ones(num_tokens, token_size, dtype=torch.bool)
        last = (idx % tokens_per_layer == tokens_per_layer - 1) | (idx == num_tokens - 1)
        self._mask[last, token_size // 2 :] = False

    def positions(self) -> torch.Tensor:
        return self._pos

    def token_mask(self) -> torch.Tensor:
        return self._mask


def load_data(args):
    """(layout, tokens [N, L, k], states [N], num_states)."""
    if args.synthetic:
        L, k, n = (int(v) for v in args.synthetic.lower().split("x"))
        layout = SyntheticLayout(L, k)
        tokens = torch.randn(n, L, k).masked_fill(~layout.token_mask(), float("nan"))
        return layout, tokens, torch.arange(n) % 2, 2
    from rpg.tokens.store import TokenStore

    token_dir = args.token_dir or f"results/{args.exp}/tokens/{args.zoo}"
    store = TokenStore(token_dir)
    n = min(len(store), max(args.batch_size * 4, 8))
    return store.layout, store.tokens(range(n)), torch.tensor(store.index["state"].tolist()[:n]), store.num_states


def bench_backbones(args) -> None:
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    layout, tokens, states, num_states = load_data(args)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides = {k: json.loads(v) for k, v in overrides.items()}
    tcfg = TrainConfig.parse({"batch_size": args.batch_size, "diffusion_batch": args.diffusion_batch})
    print(f"# L={layout.num_tokens} k={layout.token_size} batch={tcfg.batch_size} checkpoints, "
          f"{tcfg.diffusion_batch} tokens/step, device={dev}, threads={torch.get_num_threads()}, "
          f"median of {args.repeats}")  # fmt: skip
    header = f"{'backbone':<12}{'params':>12}{'train steps/s':>15}{'backbone fwd+bwd s':>20}{'gen s/model':>13}"
    print(header + "\n" + "-" * len(header))
    for kind in args.backbones.split(","):
        torch.manual_seed(0)
        gcfg = GeneratorConfig.parse({"preset": args.preset, **overrides, "backbone": kind})
        model = build_model(gcfg, layout, num_states).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator(dev).manual_seed(0)
        rows = torch.arange(tcfg.batch_size) % len(tokens)
        batch, batch_states = tokens[rows].to(dev), states[rows].to(dev)
        amp = dev.type == "cuda"

        def train_steps() -> None:
            for _ in range(args.steps):
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    loss = model(batch, batch_states, diffusion_batch=tcfg.diffusion_batch, generator=gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        def backbone_only() -> None:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                protos = model.prototypes(torch.unique(batch_states))
            protos.float().square().mean().backward()

        sampler = build_sampler(args.sampler, schedule=model.schedule, steps=args.gen_steps)

        def generate() -> None:
            model.generate(state=0, sampler=sampler, generator=gen, chunk_tokens=args.chunk_tokens)

        t_train = median_time(train_steps, args.repeats, sync)
        t_backbone = median_time(backbone_only, args.repeats, sync)
        t_gen = median_time(generate, args.repeats, sync)
        params = sum(p.numel() for p in model.parameters())
        print(f"{kind:<12}{params:>12,}{args.steps / t_train:>15.2f}{t_backbone:>20.3f}{t_gen:>13.2f}", flush=True)


def profile_scan(args) -> None:
    """Pure-torch Mamba2 (chunk sizes; B/C shared vs repeated per head) vs LSTM, forward+backward."""
    import rpg.generator.mamba2 as m2

    dim, length = args.dim, args.length
    print(f"# forward+backward of a 2-layer backbone, D={dim}, L={length}, threads={torch.get_num_threads()}, "
          f"median of {args.repeats}")  # fmt: skip
    print(f"{'backbone':<42}{'2 seqs s':>10}{'4 seqs s':>10}")

    def fb(net: torch.nn.Module, b: int) -> float:
        x = torch.randn(b, length, dim)

        def step() -> None:
            net.zero_grad(set_to_none=True)
            net(x).square().mean().backward()

        return median_time(step, args.repeats, lambda: None)

    def row(name: str, net: torch.nn.Module) -> None:
        print(f"{name:<42}{fb(net, 2):>10.3f}{fb(net, 4):>10.3f}", flush=True)

    torch.manual_seed(0)
    row("lstm", build_backbone("lstm", dim=dim, num_layers=2))
    for chunk in (32, 64, 128, 256):
        net = build_backbone("mamba2", dim=dim, num_layers=2, d_state=32, chunk_size=chunk, scan="torch")
        row(f"mamba2 chunk {chunk}", net)
    original = m2.ssd_scan_chunked

    def repeated(x, dt, A, B, C, *, chunk_size):  # B/C materialised per head (what ngroups=nheads costs)
        h = x.shape[2]
        return original(x, dt, A, B.repeat_interleave(h, 2), C.repeat_interleave(h, 2), chunk_size=chunk_size)

    m2.ssd_scan_chunked = repeated
    try:
        net = build_backbone("mamba2", dim=dim, num_layers=2, d_state=32, chunk_size=64, scan="torch")
        row("mamba2 chunk 64, B/C repeated per head", net)
    finally:
        m2.ssd_scan_chunked = original
    # the scan alone, one layer's shapes: 8 heads of 64, state 32
    h, p = 2 * dim // 64, 64
    x = torch.randn(2, length, h, p, requires_grad=True)
    dt = torch.nn.functional.softplus(torch.randn(2, length, h)).requires_grad_()
    B, C = (torch.randn(2, length, 1, 32, requires_grad=True) for _ in range(2))
    A = -torch.rand(h)
    for chunk in (32, 64, 128):
        t = median_time(lambda: original(x, dt, A, B, C, chunk_size=chunk).sum().backward(), args.repeats, lambda: None)
        print(f"{f'scan only (1 layer) chunk {chunk}':<42}{t:>10.3f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("token_dir", nargs="?", help="token store (default results/<exp>/tokens/<zoo>)")
    p.add_argument("--exp", default="digits")
    p.add_argument("--zoo", default="cnn_m")
    p.add_argument("--synthetic", help="LxKxN synthetic tokens instead of a store, e.g. 1500x256x8")
    p.add_argument("--backbones", default="mamba2,lstm,transformer")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", action="append", default=[], help="generator override key=JSON, e.g. dim=128")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--diffusion-batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=3, help="training steps per timed repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--gen-steps", type=int, default=60)
    p.add_argument("--chunk-tokens", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile-scan", action="store_true")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--length", type=int, default=1500)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile_scan(args) if args.profile_scan else bench_backbones(args)


if __name__ == "__main__":
    main()
