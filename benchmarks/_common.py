"""Set-up shared by the benchmark scripts: a zoo's settings from a config file, a token store of random-init
checkpoints of an architecture (the pipeline's tokenize stage), an untrained generator over it, and the machine's
name for the tables' notes.

Not a benchmark: the scripts import it (``python benchmarks/X.py`` puts benchmarks/ on the path first). The rpg
imports happen inside the functions, so that a script's ``--help`` stays fast.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def relative(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (tables name no machine's folders)."""
    full = Path(path).resolve()
    return str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else path


def find_zoo(config: str, zoo: str):
    """``(experiment, settings)`` of the zoo named ``zoo`` in the config file (the first experiment that has it)."""
    import yaml

    from rpg.config import resolve_config

    settings = resolve_config(yaml.safe_load(Path(config).read_text()))
    for exp, zoos in settings.items():
        if zoo in zoos:
            return exp, zoos[zoo]
    names = [name for zoos in settings.values() for name in zoos]
    raise SystemExit(f"{config}: no zoo {zoo!r} (zoos: {', '.join(names)})")


def random_init_token_store(out: Path, arch: str, arch_kwargs: dict, *, token_size: int,
                            num_classes: int | None = None, runs: int = 1, per_run: int = 1, noise: float = 0.0,
                            shard_size: int = 1, keep_checkpoints: bool = True):  # fmt: skip
    """Checkpoints of random-init models of ``arch`` tokenized into ``out/tokens`` (float32, a permutation state per
    run: the tokenize stage). Run r is the model built with seed r; its ``per_run`` checkpoints add ``noise`` times
    a standard normal (generator seed 10 r + i) to every float entry when ``noise`` is set. One checkpoint is saved
    as ``out/ckpt.safetensors``, more as ``out/run<r>_<i>.safetensors``; ``keep_checkpoints=False`` deletes them
    once tokenized. Returns ``(TokenStore, parameter count of the model)``."""
    import torch

    from rpg.tokens.store import TokenStore, write_token_store
    from rpg.zoo.checkpoint import save_checkpoint
    from rpg.zoo.models import build_model, count_parameters

    out = Path(out)
    paths, params = [], 0
    for run in range(runs):
        model = build_model(arch, arch_kwargs, seed=run)
        params = count_parameters(model)
        state = model.state_dict()
        for i in range(per_run):
            if noise:
                g = torch.Generator().manual_seed(10 * run + i)
                sd = {k: v + noise * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                      for k, v in state.items()}  # fmt: skip
            else:
                sd = state
            meta = {"kind": "checkpoint", "arch": arch, "arch_kwargs": arch_kwargs, "run": run, "seed": run,
                    "step": i, "index": i, "val_accuracy": None, "task": None, "num_classes": num_classes}  # fmt: skip
            paths.append(out / ("ckpt.safetensors" if runs * per_run == 1 else f"run{run}_{i}.safetensors"))
            save_checkpoint(paths[-1], sd, meta)
            del sd
        del model, state  # a large target's weights are not held while it is tokenized
    write_token_store(paths, out / "tokens", token_size=token_size, shard_size=shard_size, state="run",
                      dtype="float32")  # fmt: skip
    if not keep_checkpoints:
        for p in paths:
            p.unlink()
    return TokenStore(out / "tokens"), params


def zoo_token_store(settings, root: Path, **kwargs):
    """:func:`random_init_token_store` of a zoo's architecture as its config builds it (10 classes; 1 input channel
    on digits, else 3). Returns the TokenStore."""
    arch_kwargs = {"num_classes": 10, "in_chans": 1 if settings.data.name == "digits" else 3, **settings.arch_kwargs}
    store, _ = random_init_token_store(root, settings.arch, arch_kwargs, token_size=settings.tokens.token_size,
                                       num_classes=10, **kwargs)  # fmt: skip
    return store


def untrained_generator(config, layout, *, num_states: int, device: str | None = None):
    """An untrained RPG model (``torch.manual_seed(0)``) over a token layout, in eval mode; with ``device`` built
    directly there (else on the CPU). ``config``: a GeneratorConfig or its dict."""
    import torch

    from rpg.config import GeneratorConfig
    from rpg.generator.model import RPGModel

    config = config if isinstance(config, GeneratorConfig) else GeneratorConfig.parse(config)
    torch.manual_seed(0)
    with torch.device(device or "cpu"):
        model = RPGModel(config=config, positions=layout.positions(), token_size=layout.token_size,
                         num_states=num_states, token_lengths=layout.token_lengths())  # fmt: skip
    return model.eval()


def cpu_name(default: str = "?") -> str:
    """The processor's model name from /proc/cpuinfo (``default`` where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), default)
    except OSError:
        return default


def machine() -> str:
    """The processor, core count and Python version (results are bit-identical on one machine, not across CPUs)."""
    return f"{cpu_name(platform.processor() or platform.machine())} ({platform.machine()}), {os.cpu_count()} cores, " \
        f"Python {platform.python_version()}"  # fmt: skip
