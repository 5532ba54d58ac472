"""Generation throughput: models per second against ``generate.batch_size`` B, and the denoiser's achieved GFLOP/s
against this machine's conv1d peak, measured side by side in one run.

    python benchmarks/generation.py                       # test_resnet-sized generator, B 1/2/4/8, 1 and 2 threads
    python benchmarks/generation.py --batch-sizes 1,4 --threads 1 --steps 5 --repeats 2   # a quick look

The generator is the one ``configs/test_timm.yaml`` trains for its ``test_resnet`` zoo (width 256, denoiser
1-16-32-64-32-16-1, x0 prediction), untrained (time does not depend on training), over the token layout of a
random-init ``test_resnet`` checkpoint (1,512 tokens of 256, the pipeline's tokenize stage). Every row writes its
models through the pipeline's path (:func:`rpg.generator.sampling.write_generated_models`: prototypes, chunked
DDIM sampling, streamed safetensors files). ``before`` is the previous path for reference: one model at a time
through the training-mode network (``RPGModel.epsilon_fn``: eager BatchNorm, projections and time embedding at
every step, one large batch per chunk; :func:`previous_denoiser`).

FLOPs are counted analytically: per model, steps x tokens x the convs' multiply-adds x 2 plus the prototype
projection once per token (:meth:`ConvDenoiser.conv_flops_per_token`); elementwise work and the backbone are not
counted, so the rates are a lower bound of what the convs achieve. The CPU is shared with other jobs, so the
efficiency is measured per CPU-second (``time.process_time``: time the process was preempted is not charged):
"GFLOP/CPU-s (calls)" divides by the CPU time spent inside denoiser calls only, "GFLOP/CPU-s (model)" by the whole
CPU time per model (prototypes and file writing included). The peaks are measured the same way in the same run at
the same thread count: ``conv1d peak`` is the best of ``nn.Conv1d(C, C, 7)`` forwards at the denoiser's widest
layer C over a few batch sizes, ``sgemm peak`` a 2048^3 matmul (both GFLOP per CPU-second). Models per second are
wall-clock; "x vs B=1 (CPU)" compares CPU time per model with batch size 1 at the same thread count. Every
configuration is measured ``--repeats`` times, interleaved (all configurations once per round) so that load from
other processes hits them alike; the table gives medians. Prints the table and writes
``benchmarks/results/generation.{csv,md}``.

Table: docs/throughput.md, "Generation throughput" (generated block bench.generation), from
``python benchmarks/generation.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, cpu_name, find_zoo, relative, untrained_generator, zoo_token_store


def bench(fn, repeats: int = 3) -> float:
    """Median CPU seconds of ``fn`` (CPU time: a process that other jobs preempt is not charged for the wait)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def peaks(denoiser, threads: int) -> dict:
    """Conv1d peak at the widest layer (best over batch sizes) and a 2048^3 sgemm, GFLOP per CPU-second."""
    import torch

    torch.set_num_threads(threads)
    k = denoiser.token_size
    width = max(c.out_channels for c in denoiser.convs)
    conv = torch.nn.Conv1d(width, width, 7, padding=3)
    best = 0.0
    with torch.no_grad():
        for n in (16, 64, 256):
            x = torch.randn(n, width, k)
            best = max(best, 2 * width * width * 7 * k * n / bench(lambda: conv(x)) / 1e9)
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        gemm = 2 * 2048**3 / bench(lambda: a @ b) / 1e9
    return {"conv1d": best, "sgemm": gemm, "width": width}


class DenoiserClock:
    """Wall and CPU time spent inside the frozen denoiser's calls (wraps ``ConvDenoiser.frozen``)."""

    def __init__(self, denoiser) -> None:
        self.seconds = self.cpu = 0.0
        original = denoiser.frozen
        clock = self

        class Timed:
            def __init__(self, inner) -> None:
                self.inner = inner

            def __getattr__(self, name):
                return getattr(self.inner, name)

            def to(self, dtype):
                self.inner = self.inner.to(dtype)
                return self

            def __call__(self, *a):
                t0, c0 = time.perf_counter(), time.process_time()
                out = self.inner(*a)
                clock.seconds += time.perf_counter() - t0
                clock.cpu += time.process_time() - c0
                return out

        denoiser.frozen = lambda: Timed(original())


def previous_denoiser(den, x, t, cond):
    """The denoiser's forward as it was before the throughput work (eval mode): (h + c) * t_emb per layer,
    BatchNorm and ELU out of place, the projections and the time embedding for every token at every step."""
    import torch.nn.functional as F

    c = den.cond_proj(cond)[:, None, :]
    t_emb = den.time_embedding(t)[:, None, :]
    h, skips = x[:, None, :], []
    for i, conv in enumerate(den.convs):
        if i > den.num_encoder:
            h = h + skips[2 * den.num_encoder - i - 1]
        h = conv((h + c) * t_emb)
        if i < len(den.norms):
            h = F.elu(den.norms[i](h))
        if i < den.num_encoder:
            skips.append(h)
    return h[:, 0, :]


def run_before(model, store, sampler, out: Path, chunk_tokens: int) -> None:
    """The previous path: one model at a time, the previous denoiser forward, one batch per chunk."""
    import torch

    from rpg.generator.samplers import sample
    from rpg.tokens.store import REFERENCE_FILE
    from rpg.tokens.stream import LazyTensors, write_streamed_state_dict

    def epsilon(cond):
        def eps(x, t):
            out = previous_denoiser(model.denoiser, x, t, cond).float()
            return model.schedule.epsilon(out, x, t, model.config.prediction)

        return eps

    def chunks():
        with torch.no_grad():
            protos = model.prototypes(torch.tensor([0]))[0]
            gen = torch.Generator().manual_seed(0)
            for start in range(0, model.num_tokens, chunk_tokens):
                cond = protos[start : start + chunk_tokens]
                noise = torch.randn(cond.shape[0], model.token_size, generator=gen)
                x = sample(epsilon(cond), noise, sampler, generator=gen)
                yield start, x.masked_fill(~model.chunk_mask(start, start + cond.shape[0]), float("nan"))

    write_streamed_state_dict(out / "before.safetensors", chunks(), store.layout,
                              LazyTensors(store.directory / REFERENCE_FILE), {"kind": "generated"})  # fmt: skip


def run_batch(model, store, sampler, out: Path, batch: int, chunk_tokens: int) -> None:
    from rpg.generator.sampling import GeneratedModel, write_generated_models
    from rpg.tokens.store import REFERENCE_FILE
    from rpg.tokens.stream import LazyTensors

    jobs = [GeneratedModel(path=out / f"m{i}.safetensors", state=0, seed=i, metadata={"kind": "generated"})
            for i in range(batch)]  # fmt: skip
    write_generated_models(model, jobs, layout=store.layout, reference=LazyTensors(store.directory / REFERENCE_FILE),
                           sampler=sampler, chunk_tokens=chunk_tokens)  # fmt: skip


def measure(args) -> tuple[list[dict], dict]:
    import torch

    from rpg.generator.samplers import build_sampler

    _, settings = find_zoo(args.config, args.zoo)
    tmp = Path(tempfile.mkdtemp(prefix="rpg_generation_bench_"))
    store = zoo_token_store(settings, tmp)  # one checkpoint
    model = untrained_generator(settings.generator, store.layout, num_states=1)
    clock = DenoiserClock(model.denoiser)
    sampler = build_sampler("ddim", schedule=model.schedule, steps=args.steps)
    steps, tokens = len(sampler.timesteps), model.num_tokens
    den = model.denoiser
    flops = tokens * (steps * den.conv_flops_per_token() + 2 * den.cond_proj.in_features * den.token_size)
    threads = [int(t) for t in args.threads.split(",")]
    configs = [(th, b) for th in threads for b in ["before"] + [int(b) for b in args.batch_sizes.split(",")]]
    times: dict = {c: [] for c in configs}
    cpu: dict = {c: [] for c in configs}
    in_calls: dict = {c: [] for c in configs}
    peak = {th: [] for th in threads}
    for r in range(args.repeats):
        for th in threads:
            peak[th].append(peaks(den, th))
        for th, b in configs:
            torch.set_num_threads(th)
            clock.seconds = clock.cpu = 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            if b == "before":
                run_before(model, store, sampler, tmp, args.chunk_tokens)
            else:
                run_batch(model, store, sampler, tmp, b, args.chunk_tokens)
            n = 1 if b == "before" else b
            times[(th, b)].append((time.perf_counter() - t0) / n)
            cpu[(th, b)].append((time.process_time() - c0) / n)
            in_calls[(th, b)].append(clock.cpu / n)
            print(f"round {r + 1}/{args.repeats}: {th} thread(s), B={b}: {times[(th, b)][-1]:.2f} s/model",
                  file=sys.stderr, flush=True)  # fmt: skip
    rows = []
    for th, b in configs:
        s_model = statistics.median(times[(th, b)])
        cpu_model = statistics.median(cpu[(th, b)])
        conv_peak = statistics.median(p["conv1d"] for p in peak[th])
        gemm_peak = statistics.median(p["sgemm"] for p in peak[th])
        base = statistics.median(cpu[(th, 1)]) if (th, 1) in cpu else None
        calls = statistics.median(in_calls[(th, b)]) if b != "before" else None
        gf_model = flops / cpu_model / 1e9
        rows.append({
            "threads": th, "path": "before (eager, one at a time)" if b == "before" else "batched",
            "B": "-" if b == "before" else b, "s_per_model": s_model, "models_per_s": 1 / s_model,
            "cpu_s_per_model": cpu_model,
            "vs_B1": None if base is None else base / cpu_model,
            "gflops_calls": None if calls is None else flops / calls / 1e9, "gflops_model": gf_model,
            "conv1d_peak": conv_peak, "pct_conv1d_peak": 100 * gf_model / conv_peak, "sgemm_peak": gemm_peak,
            "pct_sgemm_peak": 100 * gf_model / gemm_peak,
        })  # fmt: skip
    info = {"arch": settings.arch, "tokens": tokens, "token_size": den.token_size, "steps": steps,
            "channels": list(settings.generator.denoiser_channels), "dim": settings.generator.dim,
            "width": peak[threads[0]][0]["width"], "flops": flops}  # fmt: skip
    return rows, info


def _f(v, digits: int) -> str:
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def write_tables(rows: list[dict], info: dict, args) -> str:
    import platform

    import pandas as pd
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "generation.csv", index=False)
    head = ["threads", "path", "B", "s / model", "models / s", "x vs B=1 (CPU)", "CPU s / model", "GFLOP/CPU-s (calls)",
            "GFLOP/CPU-s (model)", "conv1d peak", "% of conv1d peak", "sgemm peak", "% of sgemm peak"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["threads"], r["path"], r["B"], _f(r["s_per_model"], 2), _f(r["models_per_s"], 3),
                 _f(r["vs_B1"], 2), _f(r["cpu_s_per_model"], 2), _f(r["gflops_calls"], 1), _f(r["gflops_model"], 1),
                 _f(r["conv1d_peak"], 1),
                 _f(r["pct_conv1d_peak"], 0), _f(r["sgemm_peak"], 1), _f(r["pct_sgemm_peak"], 0)]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    cpu = cpu_name()
    notes = [
        f"Generator of `{relative(args.config)}` zoo `{args.zoo}` (untrained): {info['arch']} layout, "
        f"{info['tokens']:,} tokens "
        f"of {info['token_size']}, width {info['dim']}, denoiser {info['channels']}; DDIM-{info['steps']}, "
        f"{args.chunk_tokens} tokens per chunk; {info['flops'] / 1e9:.1f} GFLOP per model (analytic).",
        f"Medians of {args.repeats} interleaved rounds; conv1d peak: `nn.Conv1d({info['width']}, {info['width']}, 7)` "
        "forward, best batch size; both peaks measured in the same run at the same thread count.",
        f"Machine: {cpu}, torch {torch.__version__}, Python {platform.python_version()} (a CPU shared with other "
        "jobs: absolute times vary from run to run, the ratios within a run are the result).",
    ]
    md = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    (out / "generation.md").write_text(md)
    return md


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "test_timm.yaml"))
    p.add_argument("--zoo", default="test_resnet")
    p.add_argument("--batch-sizes", default="1,2,4,8")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps (time per model is linear in them)")
    p.add_argument("--chunk-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    rows, info = measure(args)
    print(json.dumps(info))
    print(write_tables(rows, info, args))


if __name__ == "__main__":
    main()
