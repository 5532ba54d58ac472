"""Scale benchmark: memory and time of RPG (each backbone) against the flat p-diff baseline, 11k to 198M parameters.

    python benchmarks/scale.py                      # the whole table (about half an hour on one CPU core)
    python benchmarks/scale.py --targets vit_tiny_patch16_224 --backbones mamba2 --no-pdiff   # one row

For every target (a random-init model, timm ``pretrained=False`` or a built-in CNN), one checkpoint goes through
the pipeline's tokenize stage (a one-checkpoint token store: layout, reference, shard). Then, for every backbone,
with ONE generator preset for all sizes (``--preset`` + ``--set``; default: tiny, narrow denoiser):

* ``train``: :func:`rpg.generator.trainer.train_generator` for a few steps (batch of 1 checkpoint, ``--diffusion-batch``
  tokens): median seconds per training step and peak memory;
* ``generate``: the pipeline's generation path (:func:`rpg.generator.sampling.load_generator` +
  :func:`rpg.generator.sampling.write_generated_model`, i.e. what ``generate_models`` does per model) with
  DDIM-``--steps``:
  seconds per sampling step (the denoiser over all tokens once), seconds per model, peak memory;
* ``verify``: the file is loaded into the target architecture with ``load_state_dict(strict=True)``.

p-diff (:mod:`rpg.pdiff`, config.yaml's settings) on the same flat parameter count: one autoencoder and one latent
diffusion training step (``train``), and one generated model (``generate``: DDPM sampling of the latent, decode,
write), in increasing size until it no longer fits.

Every measurement runs in a fresh subprocess with 1 thread and an address-space limit of ``--mem-limit-gb`` above
what the process holds after its imports, so running out of memory is a failed allocation, reported as ``OOM``,
that never takes the machine down. Peak memory is the peak resident set size (``ru_maxrss``) of that process.
Memory accounting for generation: ``overhead = peak RSS - (generator weights + output state_dict bytes)``
(the generated model is streamed to disk, so it is never held; its bytes are subtracted as the goal defines).
Results of each measurement are cached in ``--workdir`` (``--force`` remeasures). Prints the table and writes
``benchmarks/results/scale.csv`` and ``scale.md``.

On a GPU (``--device cuda --no-pdiff --mem-limit-gb 0``; CUDA needs a large address space, so no limit) the
table adds the peak GPU memory and is written to ``scale_cuda.{csv,md}``; e.g. the paper's generator size::

    python benchmarks/scale.py --device cuda --no-pdiff --mem-limit-gb 0 --preset large --token-size 16384 \
        --targets vit_base_patch16_224,convnext_large --backbones mamba2 --train-steps 0 --steps 10

Tables: docs/benchmarks.md, "Scale: memory-flat generation up to ConvNeXt-L, against p-diff" (generated blocks
bench.scale, from ``python benchmarks/scale.py``, and bench.scale_cuda, from the ``--device cuda`` command above).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, cpu_name, random_init_token_store, untrained_generator

# (name, arch, arch_kwargs), in increasing size: the issue's four sizes plus smaller ones to locate p-diff's limit
TARGETS = [
    ("cnn_m", "cnn_m", {"num_classes": 10, "in_chans": 1}),
    ("vit_digits", "vit_tiny_patch16_224", {"img_size": 8, "patch_size": 2, "embed_dim": 48, "depth": 2,
                                            "num_heads": 2, "global_pool": "avg", "class_token": False,
                                            "num_classes": 10, "in_chans": 1}),
    ("test_vit", "test_vit", {}),
    ("mobilenetv3_small_050_c10", "mobilenetv3_small_050", {"num_classes": 10}),
    ("mobilenetv3_small_075_c10", "mobilenetv3_small_075", {"num_classes": 10}),
    ("mobilenetv3_small_050", "mobilenetv3_small_050", {}),
    ("vit_tiny_patch16_224", "vit_tiny_patch16_224", {}),
    ("resnet18", "resnet18", {}),
    ("vit_small_patch16_224", "vit_small_patch16_224", {}),
    ("vit_base_patch16_224", "vit_base_patch16_224", {}),
    ("convnext_large", "convnext_large", {}),
]  # fmt: skip
GIB = 2**30


# ----------------------------------------------------------------------------------------------------- workers
def _status(key: str) -> int:
    """A /proc/self/status value in bytes (VmRSS, VmSize, ...)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _limit_memory(gib: float) -> None:
    """Allow ``gib`` GiB of address space above what the process maps now (after its imports)."""
    if gib > 0:
        limit = _status("VmSize") + int(gib * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(
        s in text for s in ("can't allocate memory", "not enough memory", "out of memory", "cannot allocate memory")
    )


def work_prepare(a: dict) -> dict:
    """Random-init target -> one checkpoint -> token store (the pipeline's tokenize stage)."""
    import torch

    t0 = time.perf_counter()
    store, params = random_init_token_store(Path(a["dir"]), a["arch"], a["arch_kwargs"], token_size=a["token_size"],
                                            keep_checkpoints=False)  # fmt: skip
    layout = store.layout
    return {"params": params, "generated_params": layout.num_parameters, "num_tokens": layout.num_tokens,
            "entries": len(layout.layers), "seconds": time.perf_counter() - t0,
            "output_bytes": sum(s.numel * torch.empty((), dtype=getattr(torch, s.dtype)).element_size()
                                for s in layout.layers)}  # fmt: skip


def work_train(a: dict) -> dict:
    """A few generator training steps: median step time and peak memory."""
    import pandas as pd

    from rpg.generator.trainer import train_generator

    baseline = _status("VmRSS")
    _limit_memory(a["mem_limit_gb"])
    train = {"steps": a["train_steps"], "batch_size": 1, "diffusion_batch": a["diffusion_batch"],
             "warmup_steps": 1, "save_every": 10**6, "log_every": 1, "threads": 1}  # fmt: skip
    train_generator(token_dir=a["tokens"], out_dir=a["generator"], generator_cfg=a["generator_cfg"],
                    train_cfg=train, device=a["device"], resume=False)  # fmt: skip
    times = pd.read_csv(Path(a["generator"]) / "train_log.csv")["time"].diff().dropna().tolist()
    return {"train_step_s": statistics.median(times) if times else None, "train_peak": _peak_rss(),
            "train_baseline": baseline, **_gpu_peak(a["device"], "train")}  # fmt: skip


def work_generate(a: dict) -> dict:
    """One generated model through the pipeline's streaming path; the denoiser and backbone are timed."""
    import torch

    from rpg.generator.samplers import build_sampler
    from rpg.generator.sampling import load_generator, write_generated_model
    from rpg.tokens.store import REFERENCE_FILE, TokenStore
    from rpg.tokens.stream import LazyTensors

    baseline = _status("VmRSS")
    _limit_memory(a["mem_limit_gb"])
    t0 = time.perf_counter()
    store = TokenStore(a["tokens"])
    layout = store.layout
    if (Path(a["generator"]) / "model.safetensors").is_file():
        model, _ = load_generator(a["generator"], device=a["device"])
        trained = True
    else:  # training did not fit: an untrained generator of the same config (memory does not depend on it)
        model = untrained_generator(a["generator_cfg"], layout, num_states=store.num_states).to(a["device"]).eval()
        trained = False
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    spent = {"denoiser": 0.0, "backbone": 0.0}

    _time_module(model.denoiser, spent, "denoiser")
    _time_module(model.backbone, spent, "backbone")
    sampler = build_sampler("ddim", schedule=model.schedule, steps=a["sampling_steps"])
    out = Path(a["output"])
    meta = {"kind": "generated", "arch": store.meta.get("arch"), "arch_kwargs": store.meta.get("arch_kwargs", {}),
            "state_dict_keys": layout.names}  # fmt: skip
    write_generated_model(model, path=out, layout=layout, reference=LazyTensors(store.directory / REFERENCE_FILE),
                          state=0, sampler=sampler, generator=torch.Generator(a["device"]).manual_seed(0),
                          chunk_tokens=a["chunk_tokens"], metadata=meta)  # fmt: skip
    if a["device"].startswith("cuda"):
        torch.cuda.synchronize()
    steps = len(sampler.timesteps)
    return {"gen_peak": _peak_rss(), "gen_baseline": baseline, "generator_bytes": weights,
            "model_s": time.perf_counter() - t0, "sample_step_s": spent["denoiser"] / steps,
            "prototype_s": spent["backbone"], "sampling_steps": steps, "trained_generator": trained,
            **_gpu_peak(a["device"], "gen")}  # fmt: skip


def _gpu_peak(device: str, prefix: str) -> dict:
    """Peak allocated GPU memory (bytes) of this process, when it ran on CUDA."""
    import torch

    if not device.startswith("cuda"):
        return {}
    return {f"{prefix}_gpu_peak": torch.cuda.max_memory_allocated()}


def _time_module(module, spent: dict, key: str) -> None:
    """Add the wall time of every forward call of ``module`` to ``spent[key]`` (CUDA synchronised)."""
    import torch

    start: list[float] = []
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def begin(*_) -> None:
        sync()
        start.append(time.perf_counter())

    def stop(*_) -> None:
        sync()
        spent[key] += time.perf_counter() - start.pop()

    module.register_forward_pre_hook(begin)
    module.register_forward_hook(stop)


def work_verify(a: dict) -> dict:
    """The generated file loads into the target architecture with strict=True and is finite."""
    import torch

    from rpg.zoo.checkpoint import load_checkpoint
    from rpg.zoo.models import build_model

    state, _ = load_checkpoint(a["output"])
    model = build_model(a["arch"], a["arch_kwargs"])
    model.load_state_dict(state, strict=True)
    finite = all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())
    return {"load_strict": True, "finite": finite}


def work_pdiff(a: dict) -> dict:
    """p-diff on ``num_params`` flat parameters: training steps (mode train) or one generated model (generate)."""
    import torch

    from rpg.config import PDiffConfig
    from rpg.generator.samplers import build_sampler
    from rpg.pdiff.model import PDiffModel

    baseline = _status("VmRSS")
    _limit_memory(a["mem_limit_gb"])
    cfg = PDiffConfig.parse(a["pdiff_cfg"])
    torch.manual_seed(0)
    n = int(a["num_params"])
    model = PDiffModel(config=cfg, num_params=n)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    res: dict = {"pdiff_weights": weights, "baseline": baseline}
    if a["mode"] == "train":
        data = torch.randn(cfg.ae_batch_size, n)
        ae = model.autoencoder.train()
        opt = torch.optim.AdamW(ae.parameters(), lr=cfg.ae_lr)
        times = []
        for _ in range(2):
            t = time.perf_counter()
            loss = ae(data)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        with torch.no_grad():
            latents = ae.eval().encode(data)
        model.set_latent_stats(latents)
        dopt = torch.optim.AdamW(model.denoiser.parameters(), lr=cfg.lr)
        dtimes = []
        for _ in range(2):
            t = time.perf_counter()
            loss = model.diffusion_loss(latents[torch.arange(cfg.batch_size) % len(latents)])
            dopt.zero_grad()
            loss.backward()
            dopt.step()
            dtimes.append(time.perf_counter() - t)
        res.update(train_step_s=times[-1] + dtimes[-1], ae_step_s=times[-1], diffusion_step_s=dtimes[-1],
                   train_peak=_peak_rss())  # fmt: skip
    else:
        from rpg.tokens.store import REFERENCE_FILE, TokenStore
        from rpg.tokens.stream import LazyTensors, write_streamed_state_dict

        store = TokenStore(a["tokens"])
        layout = store.layout
        sampler = build_sampler(cfg.sampler or "ddpm", schedule=model.schedule, steps=cfg.sampling_steps)
        t0 = time.perf_counter()
        spent = {"denoiser": 0.0}
        _time_module(model.denoiser, spent, "denoiser")
        flat = model.sample(1, sampler=sampler, generator=torch.Generator().manual_seed(0))[0]
        tokens = torch.full((layout.num_tokens, layout.token_size), float("nan"))
        tokens[layout.token_mask()] = flat
        del flat
        write_streamed_state_dict(
            a["output"],
            [(0, tokens)],
            layout,
            LazyTensors(store.directory / REFERENCE_FILE),
            {"kind": "generated", "method": "pdiff", "state_dict_keys": layout.names},
        )
        res.update(
            gen_peak=_peak_rss(),
            model_s=time.perf_counter() - t0,
            sample_step_s=spent["denoiser"] / len(sampler.timesteps),
            sampling_steps=len(sampler.timesteps),
        )
    return res


WORKERS = {"prepare": work_prepare, "train": work_train, "generate": work_generate, "verify": work_verify,
           "pdiff": work_pdiff}  # fmt: skip


def worker_main(kind: str, args_json: str) -> None:
    """Run one measurement; print one JSON line (``oom``: the allocation failed under the memory limit)."""
    import torch

    torch.set_num_threads(1)
    a = json.loads(args_json)
    try:
        result = {"ok": True, **WORKERS[kind](a)}
    except BaseException as exc:  # reported to the parent; OOM is a result, not a crash
        result = {"ok": False, "oom": _is_oom(exc), "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------------ driver
def run_worker(kind: str, a: dict, *, cache: Path, force: bool, timeout: float) -> dict:
    """Run a worker in a fresh subprocess (cached by ``cache``)."""
    if cache.is_file() and not force:
        return json.loads(cache.read_text())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(a)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if lines:
            result = json.loads(lines[-1][len("RESULT ") :])
        else:  # killed (e.g. by the kernel's OOM killer) or crashed before reporting
            oom = proc.returncode in (-9, 137)
            result = {"ok": False, "oom": oom, "error": f"exit {proc.returncode}: {proc.stderr[-300:]}"}
    except subprocess.TimeoutExpired:
        result = {"ok": False, "oom": False, "error": f"timeout after {timeout:.0f} s"}
    result["wall_s"] = time.perf_counter() - t0
    if result["ok"] or result.get("oom"):  # errors are not cached: the next run tries again
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(result, indent=1))
    return result


def _gib(x) -> float | None:
    return None if x is None else x / GIB


def measure(args) -> list[dict]:
    work = Path(args.workdir)
    overrides = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    rows = []
    pdiff_fits = {"train": True, "generate": True}
    pdiff_cfg = None if args.no_pdiff else _pdiff_settings(args)
    names = args.targets.split(",") if args.targets else [t[0] for t in TARGETS]
    unknown = sorted(set(names) - {t[0] for t in TARGETS})
    if unknown:
        raise SystemExit(f"unknown targets {unknown}; choose from {[t[0] for t in TARGETS]}")
    settings = {k: getattr(args, k) for k in ("preset", "set", "token_size", "steps", "chunk_tokens", "train_steps",
                                              "diffusion_batch", "mem_limit_gb", "device")}  # fmt: skip
    key = hashlib.sha1(json.dumps([settings, pdiff_cfg], sort_keys=True).encode()).hexdigest()[:10]
    for name, arch, kwargs in [t for t in TARGETS if t[0] in names]:
        tdir = work / name
        cache = tdir / f"cache_{key}"  # measurements of these settings
        common = {"mem_limit_gb": args.mem_limit_gb, "device": args.device}
        prep_args = {"dir": str(tdir), "arch": arch, "arch_kwargs": kwargs, "token_size": args.token_size}
        prep_cache = tdir / f"cache_k{args.token_size}" / "prepare.json"

        def ensure_tokens(force: bool = False) -> dict:
            """The one-checkpoint token store (built again when missing) and its description."""
            missing = not (tdir / "tokens").is_dir()
            if force or missing:
                print(f"== {name}: preparing a one-checkpoint token store", file=sys.stderr, flush=True)
            res = run_worker("prepare", prep_args, cache=prep_cache, force=args.force or force or missing,
                             timeout=3600)  # fmt: skip
            if not res["ok"]:
                raise RuntimeError(f"{name}: preparing the token store failed: {res['error']}")
            return res

        def cached(path: Path) -> bool:
            return path.is_file() and not args.force

        prep = json.loads(prep_cache.read_text()) if cached(prep_cache) else ensure_tokens()
        base = {"target": name, "arch": arch, "params": prep["params"], "tokens": prep["num_tokens"],
                "token_size": args.token_size, "output_bytes": prep["output_bytes"]}  # fmt: skip
        for bb in args.backbones.split(",") if args.backbones else []:
            gcfg = {"preset": args.preset, **overrides, "backbone": bb}
            gdir, out = tdir / f"generator_{bb}", tdir / f"generated_{bb}.safetensors"
            files = {k: cache / f"{k}_{bb}.json" for k in ("train", "generate", "verify")}
            # generation reads the trained generator and verification the generated file: rerun what they need
            need_gen = not cached(files["generate"]) or not cached(files["verify"])
            need_train = args.train_steps > 0 and (not cached(files["train"]) or need_gen)
            if need_gen or need_train:
                ensure_tokens()
                print(f"   {name} rpg-{bb}: train, generate, verify", file=sys.stderr, flush=True)
            tr = {"ok": False, "error": "not measured (--train-steps 0)"}  # generation: an untrained generator
            if args.train_steps > 0:
                tr = run_worker("train", {**common, "tokens": str(tdir / "tokens"), "generator": str(gdir),
                                          "generator_cfg": gcfg, "train_steps": args.train_steps,
                                          "diffusion_batch": args.diffusion_batch},
                                cache=files["train"], force=args.force or need_train, timeout=args.timeout)  # fmt: skip
            ge = run_worker("generate", {**common, "tokens": str(tdir / "tokens"), "generator": str(gdir),
                                         "generator_cfg": gcfg, "output": str(out),
                                         "sampling_steps": args.steps, "chunk_tokens": args.chunk_tokens},
                            cache=files["generate"], force=args.force or need_gen, timeout=args.timeout)  # fmt: skip
            ve = {"ok": False}
            if ge["ok"]:
                ve = run_worker("verify", {"output": str(out), "arch": arch, "arch_kwargs": kwargs},
                                cache=files["verify"], force=args.force or need_gen, timeout=3600)  # fmt: skip
                out.unlink(missing_ok=True)
            shutil.rmtree(gdir, ignore_errors=True)
            rows.append(_rpg_row(base, bb, tr, ge, ve, args))
        if not args.no_pdiff and any(pdiff_fits.values()):  # up to the first size where neither fits
            res = {}
            for mode in ("train", "generate"):
                if not pdiff_fits[mode]:  # a smaller size did not fit already
                    res[mode] = {"ok": False, "oom": True, "inferred": True}
                    continue
                if not cached(cache / f"pdiff_{mode}.json"):
                    if mode == "generate":
                        ensure_tokens()
                    print(f"   {name} p-diff {mode}", file=sys.stderr, flush=True)
                res[mode] = run_worker("pdiff", {**common, "mode": mode, "num_params": prep["generated_params"],
                                                 "pdiff_cfg": pdiff_cfg, "tokens": str(tdir / "tokens"),
                                                 "output": str(tdir / "pdiff.safetensors")},
                                       cache=cache / f"pdiff_{mode}.json", force=args.force,
                                       timeout=args.timeout)  # fmt: skip
                (tdir / "pdiff.safetensors").unlink(missing_ok=True)
                pdiff_fits[mode] = res[mode]["ok"]
            rows.append(_pdiff_row(base, res["train"], res["generate"]))
        if not args.keep:
            shutil.rmtree(tdir / "tokens", ignore_errors=True)
    return rows


def _status_text(res: dict) -> str:
    if res.get("ok"):
        return "ok"
    if res.get("inferred"):
        return "OOM (smaller size OOM)"
    if res.get("error", "").startswith("not measured"):
        return "not run"
    return "OOM" if res.get("oom") else ("failed: " + res.get("error", "?"))[:80]


def _rpg_row(base: dict, bb: str, tr: dict, ge: dict, ve: dict, args) -> dict:
    row = {**base, "method": f"RPG {bb}", "train": _status_text(tr), "generate": _status_text(ge)}
    if tr["ok"]:
        row.update(train_step_s=tr["train_step_s"], train_peak_gib=_gib(tr["train_peak"]),
                   train_gpu_gib=_gib(tr.get("train_gpu_peak")))  # fmt: skip
    if ge["ok"]:
        steps = ge["sampling_steps"]
        row.update(
            gen_gpu_gib=_gib(ge.get("gen_gpu_peak")),
            gen_peak_gib=_gib(ge["gen_peak"]),
            gen_overhead_gib=_gib(ge["gen_peak"] - ge["generator_bytes"] - base["output_bytes"]),
            gen_added_gib=_gib(ge["gen_peak"] - ge["gen_baseline"]),
            generator_mib=ge["generator_bytes"] / 2**20,
            sample_step_s=ge["sample_step_s"],
            model_s=ge["model_s"],
            model_s_60=ge["model_s"] + (60 - steps) * ge["sample_step_s"],
            load_strict="ok" if ve.get("load_strict") and ve.get("finite") else _status_text(ve),
            trained_generator=ge["trained_generator"],
        )
    return row


def _pdiff_row(base: dict, tr: dict, ge: dict) -> dict:
    row = {**base, "method": "p-diff", "train": _status_text(tr), "generate": _status_text(ge)}
    if tr.get("ok"):
        row.update(train_step_s=tr["train_step_s"], train_peak_gib=_gib(tr["train_peak"]))
    if ge.get("ok"):
        row.update(gen_peak_gib=_gib(ge["gen_peak"]),
                   gen_overhead_gib=_gib(ge["gen_peak"] - ge["pdiff_weights"] - base["output_bytes"]),
                   gen_added_gib=_gib(ge["gen_peak"] - ge["baseline"]), generator_mib=ge["pdiff_weights"] / 2**20,
                   sample_step_s=ge["sample_step_s"], model_s=ge["model_s"])  # fmt: skip
    return row


def _pdiff_settings(args) -> dict:
    """p-diff settings: config.yaml's cnn_m block (the pipeline's baseline), resolved with all defaults."""
    import yaml

    from rpg.config import resolve_config

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for exp in resolve_config(cfg).values():
        for settings in exp.values():
            if settings.pdiff.enabled:
                return {**settings.pdiff.to_dict(), "threads": 1}
    from rpg.config import PDiffConfig

    return {**PDiffConfig.parse({}).to_dict(), "threads": 1}


# ----------------------------------------------------------------------------------------------------- output
COLUMNS = [
    ("target", "target", None), ("params", "params", "params"), ("tokens", "tokens", "int"),
    ("method", "method", None), ("gen_peak_gib", "gen. peak RSS GiB", "2"),
    ("gen_overhead_gib", "gen. overhead GiB", "2"), ("gen_added_gib", "gen. peak - imports GiB", "2"),
    ("sample_step_s", "s / sampling step", "3"),
    ("model_s", "s / model", "1"), ("model_s_60", "s / model DDIM-60", "0"),
    ("train_step_s", "s / train step", "2"), ("train_peak_gib", "train peak RSS GiB", "2"),
    ("load_strict", "strict load", None), ("train", "train", None), ("generate", "generate", None),
]  # fmt: skip
GPU_COLUMNS = [("gen_gpu_gib", "gen. GPU peak GiB", "2"), ("train_gpu_gib", "train GPU peak GiB", "2")]


def _fmt(value, kind) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if kind == "params":
        return f"{value / 1e6:.3f}M" if value < 1e6 else f"{value / 1e6:.1f}M"
    if kind == "int":
        return f"{int(value):,}"
    if kind is not None:
        return f"{value:.{kind}f}"
    return str(value)


def machine(device: str = "cpu") -> str:
    import torch

    cpu = cpu_name("unknown CPU")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}; 1 thread per measurement"
            + (f"; GPU {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""))  # fmt: skip


def write_tables(rows: list[dict], args) -> str:
    import pandas as pd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    stem = "scale" if args.device == "cpu" else f"scale_{args.device.split(':')[0]}"
    df.to_csv(out / f"{stem}.csv", index=False)
    columns = COLUMNS if args.device == "cpu" else COLUMNS[:5] + GPU_COLUMNS + COLUMNS[5:]
    head = "| " + " | ".join(c[1] for c in columns) + " |"
    lines = [head, "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c[0]), c[2]) for c in columns) + " |")
    gcfg = {"preset": args.preset, **{k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}}
    pdiff_note = (
        "p-diff: not measured."
        if args.no_pdiff
        else f"p-diff: config.yaml's settings ({_pdiff_text(_pdiff_settings(args))}); training = one "
        "autoencoder step + one latent diffusion step; s / sampling step is the latent denoiser's."
    )
    notes = [
        f"Machine: {machine(args.device)}.",
        f"RPG: one generator config for all sizes `{json.dumps(gcfg)}` (untrained but for {args.train_steps} "
        f"training steps: memory and time do not depend on training), token size {args.token_size}, "
        f"{args.device}, "
        f"DDIM-{args.steps} (`s / model DDIM-60` extrapolates: + (60 - {args.steps}) x s / sampling step), "
        f"{args.chunk_tokens} tokens per chunk; training: 1 checkpoint per batch, {args.diffusion_batch} tokens.",
        pdiff_note,
        (
            f"Each measurement in a fresh process limited to {args.mem_limit_gb:g} GiB of new memory: OOM = an "
            "allocation failed under that limit."
            if args.mem_limit_gb > 0
            else "No memory limit."
        )
        + " gen. overhead = peak RSS - generator weights - output state_dict bytes (the output is streamed to "
        "disk and never held); gen. peak - imports = peak RSS - RSS after importing torch and the pipeline "
        "(what generating adds).",
    ]
    summary = _summary(rows)
    md = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes + summary) + "\n"
    (out / f"{stem}.md").write_text(md)
    return md


def _pdiff_text(cfg: dict) -> str:
    keys = ("channels", "latent_dim", "kernel_size", "ae_batch_size", "batch_size", "sampler", "sampling_steps")
    return ", ".join(f"{k} {cfg[k]}" for k in keys)


def _summary(rows: list[dict]) -> list[str]:
    """The memory goal (5.7M vs 197.8M) and p-diff's limit, as sentences."""
    out = []
    for method in sorted({r["method"] for r in rows if r["method"].startswith("RPG")}):
        mine = {r["target"]: r for r in rows if r["method"] == method}
        small, big = mine.get("vit_tiny_patch16_224", {}), mine.get("convnext_large", {})
        if small.get("gen_overhead_gib") and big.get("gen_overhead_gib"):
            ratio = big["gen_overhead_gib"] / small["gen_overhead_gib"]
            worst = max(r.get("gen_overhead_gib") or 0 for r in mine.values())
            ok = worst < 2 and ratio < 2
            added = big["gen_added_gib"] / small["gen_added_gib"]
            out.append(f"{method}: generation overhead {small['gen_overhead_gib']:.2f} GiB at 5.7M and "
                       f"{big['gen_overhead_gib']:.2f} GiB at 197.8M (x{ratio:.2f}; largest {worst:.2f} GiB): "
                       f"memory goal (< 2 GiB, < 2x) {'met' if ok else 'NOT met'}; peak RSS "
                       f"{small['gen_peak_gib']:.2f} -> {big['gen_peak_gib']:.2f} GiB, added by generating "
                       f"{small['gen_added_gib']:.2f} -> {big['gen_added_gib']:.2f} GiB (x{added:.2f}).")  # fmt: skip
        elif big.get("generate", "ok") != "ok" or small.get("generate", "ok") != "ok":
            out.append(f"{method}: generation {small.get('generate')} at 5.7M, {big.get('generate')} at 197.8M.")
    pd_rows = [r for r in rows if r["method"] == "p-diff"]
    for col, what in (("train", "training"), ("generate", "generation")):
        fail = next((r for r in pd_rows if r[col] != "ok"), None)
        fits = [r for r in pd_rows if r[col] == "ok"]
        if fail:
            first = f"p-diff {what}: {fail[col]} at {_fmt(fail['params'], 'params')} parameters ({fail['target']})"
            out.append(f"{first}; largest that fits: {_fmt(fits[-1]['params'], 'params')} ({fits[-1]['target']})."
                       if fits else f"{first}, the smallest size measured.")  # fmt: skip
        elif fits:
            out.append(f"p-diff {what}: fits up to the largest size measured ({fits[-1]['target']}).")
    rpg_ok = [r for r in rows if r["method"].startswith("RPG") and r["generate"] == "ok" and r["train"] == "ok"]
    pdiff_ok = [r for r in pd_rows if r["train"] == "ok" and r["generate"] == "ok"]
    if rpg_ok and pdiff_ok:
        big, small = max(rpg_ok, key=lambda r: r["params"]), max(pdiff_ok, key=lambda r: r["params"])
        out.append(f"Under the same memory limit, {big['method']} trains and generates "
                   f"{_fmt(big['params'], 'params')} parameters, p-diff at most {_fmt(small['params'], 'params')}: "
                   f"{big['params'] / small['params']:.0f}x more.")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", help=f"comma-separated subset of {[t[0] for t in TARGETS]}")
    p.add_argument("--backbones", default="mamba2,lstm,transformer", help="RPG backbones ('' for none)")
    p.add_argument("--no-pdiff", action="store_true")
    p.add_argument("--preset", default="tiny")
    p.add_argument(
        "--set",
        action="append",
        default=None,
        help="generator override key=JSON (default with --preset tiny: denoiser_channels=[1,4,8,4,1])",
    )
    p.add_argument("--token-size", type=int, default=8192)
    p.add_argument("--steps", type=int, default=2, help="DDIM sampling steps of the measured generation")
    p.add_argument("--chunk-tokens", type=int, default=256)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--diffusion-batch", type=int, default=512)
    p.add_argument("--mem-limit-gb", type=float, default=8.0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (RPG only: use with --no-pdiff)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per measurement")
    p.add_argument("--workdir", default="/tmp/rpg_scale_bench")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--force", action="store_true", help="remeasure cached results")
    p.add_argument("--keep", action="store_true", help="keep the token stores in --workdir")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(*args.worker)
        return
    if args.set is None:  # a narrow denoiser for the tiny preset: memory does not depend on it, time does
        args.set = ["denoiser_channels=[1,4,8,4,1]"] if args.preset == "tiny" else []
    rows = measure(args)
    print(write_tables(rows, args))


if __name__ == "__main__":
    main()
