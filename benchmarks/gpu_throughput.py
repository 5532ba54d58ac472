"""Paper-speed check on one GPU: per-model generation time and memory of the official large generator, float32
against bfloat16 and one model at a time against batched, plus a training step, as rows of the scale table.

    python benchmarks/gpu_throughput.py --out $OUT   # on the GPU machine: ViT-B and ConvNeXt-L, about 6 minutes
    python benchmarks/gpu_throughput.py --smoke      # tiny sizes on a CPU (tests the script, seconds)

The generator is the official one for ViT-B/ConvNeXt-L (paper Table 1, its released code): two Mamba2 layers
widening 12288 -> 16384 (``generator.dim`` / ``generator.widen_to``; state 128), the denoiser 1-64-96-64-1 with
kernel 7, tokens of 16,384, DDIM. It is untrained (time and memory do not depend on training) and sampled through
the pipeline's path (:func:`rpg.generator.sampling.write_generated_models`: prototypes once per distinct state,
chunked DDIM over ``--chunk-tokens`` tokens per model, streamed safetensors files). Every model of a batch gets
its own permutation state, so prototypes are computed once per model (the costly case). ``--steps`` DDIM steps are
run and the DDIM-60 time per model is extrapolated: (wall - denoiser time) + denoiser time x 60 / steps, per model.
``GPU peak GiB`` is ``torch.cuda.max_memory_allocated`` of the process (weights, prototypes and one chunk
of activations: it does not grow with the number of steps). The training row is one step of
:func:`rpg.generator.trainer.train_generator` (1 checkpoint, ``--diffusion-batch`` tokens, bf16 autocast,
8-bit AdamW when bitsandbytes is importable, else AdamW: the row says which), median of ``--train-steps``.

Each measurement runs in a fresh process (clean memory statistics; an out-of-memory is a row, not a crash). The
card is named in every row. Prints the table and writes ``benchmarks/results/gpu_throughput.{csv,md}`` (with
``--smoke``: ``gpu_throughput_smoke.*`` in a temporary folder unless ``--out`` is given).

Table: docs/throughput.md, "Paper speed on a GPU" (generated block bench.gpu_throughput_h100_shared; its
notes give the command of that run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, cpu_name, random_init_token_store, untrained_generator

TARGETS = {
    "vit_base_patch16_224": ("vit_base_patch16_224", {}),
    "convnext_large": ("convnext_large", {}),
    # --smoke
    "cnn_m": ("cnn_m", {"num_classes": 10, "in_chans": 1}),
    "test_vit": ("test_vit", {}),
}
GIB = 2**30


# ------------------------------------------------------------------------------------------------------ workers
def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"{cpu_name('CPU')} (CPU)"


def work_prepare(a: dict) -> dict:
    """Random-init target -> one checkpoint -> token store at ``token_size`` (the pipeline's tokenize stage)."""
    arch, kwargs = TARGETS[a["target"]]
    store, params = random_init_token_store(Path(a["dir"]), arch, kwargs, token_size=a["token_size"],
                                            keep_checkpoints=False)  # fmt: skip
    return {"params": params, "tokens": store.layout.num_tokens}


def _untrained(a: dict, num_states: int):
    """The untrained generator of ``a["generator"]`` over the token store, built on the device."""
    from rpg.tokens.store import TokenStore

    store = TokenStore(a["tokens"])
    model = untrained_generator(a["generator"], store.layout, num_states=num_states, device=a["device"])
    return model.to(a["device"]).eval(), store


def work_generate(a: dict) -> dict:
    """B models through the pipeline's generation path; wall time, time inside the denoiser, peak GPU memory."""
    import torch

    from rpg.generator.samplers import build_sampler
    from rpg.generator.sampling import GeneratedModel, write_generated_models
    from rpg.tokens.store import REFERENCE_FILE
    from rpg.tokens.stream import LazyTensors

    cuda = a["device"].startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    batch = a["batch"]
    model, store = _untrained(a, num_states=batch)
    dtype = getattr(torch, a["dtype"])
    spent = {"denoiser": 0.0}
    original = model.denoiser.frozen

    def timed_frozen():
        frozen = original()
        inner_call = type(frozen).__call__
        compiled = torch.compile(lambda *args: inner_call(frozen, *args)) if a["compile"] else None

        class Timed(type(frozen)):
            def __call__(self, *args):
                sync()
                t0 = time.perf_counter()
                out = compiled(*args) if compiled is not None else inner_call(self, *args)
                sync()
                spent["denoiser"] += time.perf_counter() - t0
                return out

        frozen.__class__ = Timed
        return frozen

    model.denoiser.frozen = timed_frozen
    sampler = build_sampler("ddim", schedule=model.schedule, steps=a["steps"])
    out = Path(a["out"])
    jobs = [GeneratedModel(path=out / f"m{i}.safetensors", state=i, seed=i, metadata={"kind": "generated"})
            for i in range(batch)]  # fmt: skip
    if cuda:
        torch.backends.cudnn.benchmark = True  # as generate_models does on CUDA
    sync()
    t0 = time.perf_counter()
    reference = LazyTensors(store.directory / REFERENCE_FILE)
    write_generated_models(model, jobs, layout=store.layout, reference=reference, sampler=sampler, device=a["device"],
                           chunk_tokens=a["chunk_tokens"], dtype=dtype)  # fmt: skip
    sync()
    wall = time.perf_counter() - t0
    for job in jobs:
        job.path.unlink(missing_ok=True)
    steps = len(sampler.timesteps)
    per_model_60 = (wall - spent["denoiser"] + spent["denoiser"] * 60 / steps) / batch
    peak = torch.cuda.max_memory_allocated() if cuda else None
    return {"wall_s": wall, "denoiser_s": spent["denoiser"], "steps": steps, "model_s_60": per_model_60,
            "step_s": spent["denoiser"] / steps / batch, "gpu_peak": peak,
            "generator_params": sum(p.numel() for p in model.parameters())}  # fmt: skip


def work_train(a: dict) -> dict:
    """``train_steps`` generator training steps (one checkpoint per batch); median step time and peak GPU memory."""
    import pandas as pd
    import torch

    from rpg.generator.trainer import train_generator

    train = {"steps": a["train_steps"], "batch_size": 1, "diffusion_batch": a["diffusion_batch"], "warmup_steps": 1,
             "save_every": 10**6, "log_every": 1, "bf16": True, "adamw_8bit": True, "ema_decay": None,
             "lr": 1e-5}  # fmt: skip
    try:
        import bitsandbytes  # noqa: F401

        optimizer = "AdamW8bit" if a["device"].startswith("cuda") else "AdamW (no GPU)"
    except Exception:
        optimizer = "AdamW (no bitsandbytes)"
    torch.manual_seed(0)
    train_generator(token_dir=a["tokens"], out_dir=a["out"], generator_cfg=a["generator"], train_cfg=train,
                    device=a["device"], resume=False)  # fmt: skip
    times = pd.read_csv(Path(a["out"]) / "train_log.csv")["time"].diff().dropna().tolist()
    cuda = a["device"].startswith("cuda")
    return {"train_step_s": statistics.median(times) if times else None, "optimizer": optimizer,
            "train_gpu_peak": torch.cuda.max_memory_allocated() if cuda else None}  # fmt: skip


WORKERS = {"prepare": work_prepare, "generate": work_generate, "train": work_train}


def worker_main(kind: str, args_json: str) -> None:
    a = json.loads(args_json)
    try:
        res = {"ok": True, "device_name": _device_name(a.get("device", "cpu")), **WORKERS[kind](a)}
    except BaseException as exc:  # reported to the driver: an OOM is a result
        text = f"{type(exc).__name__}: {str(exc)[:300]}"
        res = {"ok": False, "oom": "out of memory" in text.lower() or isinstance(exc, MemoryError), "error": text}
    print("RESULT " + json.dumps(res), flush=True)


def run_worker(kind: str, a: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(a)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        res = json.loads(lines[-1][7:]) if lines else {"ok": False, "error": f"exit {proc.returncode}: "
                                                                             f"{proc.stderr[-400:]}"}  # fmt: skip
    except subprocess.TimeoutExpired:
        res = {"ok": False, "error": f"timeout after {timeout:.0f} s"}
    res["process_s"] = time.perf_counter() - t0
    return res


# ------------------------------------------------------------------------------------------------------- driver
def settings(args) -> dict:
    if args.smoke:
        return {"device": "cpu", "targets": args.targets or "cnn_m,test_vit", "token_size": args.token_size or 256,
                "generator": {"preset": "tiny", "dim": 32, "widen_to": 48, "d_state": 8, "headdim": 16,
                              "chunk_size": 16, "denoiser_channels": [1, 4, 8, 4, 1], "time_dim": 16},
                "steps": 2, "batch_sizes": "1,2", "train_steps": 2, "diffusion_batch": 16,
                "chunk_tokens": 16}  # fmt: skip
    return {"device": "cuda", "targets": args.targets or "vit_base_patch16_224,convnext_large",
            "token_size": args.token_size or 16384,
            "generator": {"preset": "large", "dim": args.dim, "widen_to": args.widen_to, "d_state": 128,
                          "denoiser_channels": [int(c) for c in args.channels.split(",")]},
            "steps": args.steps, "batch_sizes": args.batch_sizes, "train_steps": args.train_steps,
            "diffusion_batch": args.diffusion_batch, "chunk_tokens": args.chunk_tokens}  # fmt: skip


def measure(args) -> tuple[list[dict], dict]:
    s = settings(args)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rpg_gpu_bench_"))
    rows = []
    for target in s["targets"].split(","):
        tdir = work / target
        tdir.mkdir(parents=True, exist_ok=True)
        print(f"== {target}: token store (tokens of {s['token_size']})", file=sys.stderr, flush=True)
        prep = run_worker("prepare", {"dir": str(tdir), "target": target, "token_size": s["token_size"]},
                          args.timeout)  # fmt: skip
        if not prep["ok"]:
            rows.append({"target": target, "generate": "prepare failed: " + prep["error"][:120]})
            continue
        base = {"target": target, "params": prep["params"], "tokens": prep["tokens"], "token_size": s["token_size"]}
        common = {"device": s["device"], "tokens": str(tdir / "tokens"), "generator": s["generator"],
                  "out": str(tdir), "steps": s["steps"], "chunk_tokens": s["chunk_tokens"]}  # fmt: skip
        configs = [(dt, int(b), False) for dt in args.dtypes.split(",") for b in s["batch_sizes"].split(",")]
        if args.compile:
            configs += [(dt, 1, True) for dt in args.dtypes.split(",")]
        for dtype, batch, compiled in configs:
            print(f"   {target}: generate {dtype}, B={batch}{', compiled' if compiled else ''}", file=sys.stderr,
                  flush=True)  # fmt: skip
            res = run_worker("generate", {**common, "dtype": dtype, "batch": batch, "compile": compiled}, args.timeout)
            rows.append({**base, "what": "generate", "dtype": dtype, "B": batch, "compile": compiled, **res})
            write_tables(rows, s, args)  # after every row: a run cut short keeps what it measured
        if s["train_steps"] > 0:
            print(f"   {target}: train", file=sys.stderr, flush=True)
            res = run_worker("train", {**common, "out": str(tdir / "generator"), "train_steps": s["train_steps"],
                                       "diffusion_batch": s["diffusion_batch"]}, args.timeout)  # fmt: skip
            rows.append({**base, "what": "train", "dtype": "bfloat16 autocast", "B": 1, "compile": False, **res})
            write_tables(rows, s, args)
    return rows, s


def _fmt(v, digits=2) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def write_tables(rows: list[dict], s: dict, args) -> str:
    import pandas as pd

    if not args.out:
        args.out = tempfile.mkdtemp() if args.smoke else str(ROOT / "benchmarks" / "results")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_throughput_smoke" if args.smoke else "gpu_throughput"
    pd.DataFrame(rows).to_csv(out / f"{stem}.csv", index=False)
    head = ["card", "target", "params", "tokens", "method", "dtype", "B", "gen. GPU peak GiB", "s / sampling step",
            f"s / model DDIM-{s['steps']} (measured)", "s / model DDIM-60", "min / model DDIM-60", "s / train step",
            "train GPU peak GiB", "status"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ok = r.get("ok")
        status = "ok" if ok else ("OOM" if r.get("oom") else (r.get("error") or r.get("generate") or "?")[:80])
        gib = lambda x: None if x is None else x / GIB
        gen = r.get("what") == "generate"
        method = "RPG mamba2 (train step, " + r.get("optimizer", "?") + ")" if r.get("what") == "train" else (
            "RPG mamba2" + (", torch.compile" if r.get("compile") else ""))  # fmt: skip
        cells = [r.get("device_name", "-"), r["target"], _fmt(r.get("params") and r["params"] / 1e6, 1) + "M",
                 f"{r.get('tokens', 0):,}", method, r.get("dtype", "-"), r.get("B", "-"),
                 _fmt(gib(r.get("gpu_peak")) if gen and ok else None), _fmt(r.get("step_s") if ok else None, 3),
                 _fmt(r.get("wall_s") / r["B"] if gen and ok else None, 1),
                 _fmt(r.get("model_s_60") if gen and ok else None, 1),
                 _fmt(r.get("model_s_60") / 60 if gen and ok else None, 2),
                 _fmt(r.get("train_step_s") if ok else None), _fmt(gib(r.get("train_gpu_peak")) if ok else None),
                 status]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    g = s["generator"]
    notes = [
        f"Generator (untrained): `{json.dumps(g)}`, tokens of {s['token_size']}, DDIM-{s['steps']} measured, "
        f"{s['chunk_tokens']} tokens per chunk and model; s / sampling step = time inside the denoiser per step "
        "and model; DDIM-60 extrapolated from it.",
        "Paper (one H100, bf16, DDIM-60): ConvNeXt-L 1.3 min at 21.6 GB, ViT-B 0.8 min at 20.7 GB.",
        f"Training: one checkpoint per step, {s['diffusion_batch']} tokens, bf16 autocast, no EMA, median of "
        f"{s['train_steps']} steps.",
    ]
    md = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    (out / f"{stem}.md").write_text(md)
    return md


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny targets and generator on the CPU (tests the script)")
    p.add_argument("--targets", help="comma-separated: " + ", ".join(TARGETS))
    p.add_argument("--dim", type=int, default=12288, help="width of the first Mamba2 layer")
    p.add_argument("--widen-to", type=int, default=16384, help="width of the last Mamba2 layer (the prototypes)")
    p.add_argument("--channels", default="1,64,96,64,1", help="denoiser channels")
    p.add_argument("--token-size", type=int, default=None, help="default 16384 (--smoke: 256)")
    p.add_argument("--steps", type=int, default=4, help="DDIM steps measured (DDIM-60 is extrapolated)")
    p.add_argument("--batch-sizes", default="1,2", help="models sampled together (generate.batch_size)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="sampling compute dtypes (generate.bf16)")
    p.add_argument("--chunk-tokens", type=int, default=256)
    p.add_argument("--compile", action="store_true", help="add rows with the denoiser under torch.compile")
    p.add_argument("--train-steps", type=int, default=2, help="0: no training row")
    p.add_argument(
        "--diffusion-batch",
        type=int,
        default=256,
        help="tokens of the training step (1024 runs out of memory on one H100 with 32-bit AdamW states)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement")
    p.add_argument("--workdir", help="token stores and outputs (default: a temporary folder)")
    p.add_argument("--out", help="folder of the tables (default benchmarks/results; --smoke: a temporary folder)")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(*args.worker)
        return
    rows, s = measure(args)
    print(write_tables(rows, s, args))


if __name__ == "__main__":
    main()
