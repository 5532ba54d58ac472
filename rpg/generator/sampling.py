"""Generate model weights with a trained RPG generator.

For model i (its index in the zoo's generated set): seed = generate.seed + i; the permutation state is the configured
one or drawn uniformly from that seed; tokens are sampled (DDIM/DDPM) in chunks of ``chunk_tokens``, and each chunk
is detokenized against the token store's layout and reference and streamed into a checkpoint-like safetensors file
(header first, then every finished piece of every layer), so memory does not grow with the size of the generated
model. ``generate.batch_size`` models are sampled together (one denoiser pass over all their chunks per step, one
open file each); each model's noise comes from its own generator seeded with its seed, so the files are the same
as when the models are generated one at a time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rpg.config import GenerateConfig, GeneratorConfig
from rpg.errors import RPGInputError
from rpg.generator.model import RPGModel
from rpg.generator.permutation import pick_state
from rpg.generator.samplers import build_sampler
from rpg.io import check_digest, read_json, read_safetensors_metadata
from rpg.runtime import fault_point, progress, resolve_device, set_threads
from rpg.tokens.store import REFERENCE_FILE, TokenStore
from rpg.tokens.stream import LazyTensors, StreamedStateDict, write_streamed_state_dict

if TYPE_CHECKING:
    from rpg.tokens.layout import Layout

log = logging.getLogger(__name__)


def load_generator(
    generator_dir: str | Path, *, device: str | torch.device = "cpu", weights: str = "auto"
) -> tuple[RPGModel, dict[str, Any]]:
    """The trained generator (eval mode) and its config.json; ``weights``: auto | ema | model."""
    from safetensors import safe_open

    generator_dir = Path(generator_dir)
    cfg = read_json(generator_dir / "config.json")
    path = generator_dir / "model.safetensors"
    meta = read_safetensors_metadata(path)
    digest = (cfg.get("sha256") or {}).get(path.name)  # generators trained before digests were recorded: none
    if digest is not None:
        check_digest(path, digest, rebuild=path, source=generator_dir / "config.json")
    which = meta.get("generate_with", "model") if weights == "auto" else weights
    # read only what is needed: one set of weights (EMA or raw), the positions, and the token lengths of the
    # stored [L, k] token mask, slice by slice (memory O(L), not O(L k))
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if which == "ema":
                state = {k[4:]: f.get_tensor(k) for k in keys if k.startswith("ema.")}
            else:
                state = {k: f.get_tensor(k) for k in keys if not k.startswith(("ema.", "layout."))}
            positions = f.get_tensor("layout.positions")
            mask = f.get_slice("layout.token_mask")
            num_tokens = mask.get_shape()[0]
            lengths = torch.cat([mask[i : i + 4096].sum(dim=1) for i in range(0, num_tokens, 4096)] or [torch.zeros(0)])
    except Exception as exc:
        raise RPGInputError(f"unreadable generator weights ({type(exc).__name__}: {exc})", path) from exc
    if which == "ema" and not state:
        raise RPGInputError("weights='ema' but the generator was trained without EMA", generator_dir)
    try:
        model = RPGModel(
            config=GeneratorConfig.parse(cfg["generator"]),
            positions=positions,
            token_size=int(cfg["token_size"]),
            num_states=int(cfg["num_states"]),
            token_lengths=lengths,
        )
    except (KeyError, ValueError) as exc:
        raise RPGInputError(f"cannot rebuild the generator ({exc})", generator_dir) from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RPGInputError(f"weights do not match config.json ({exc})", generator_dir) from exc
    return model.to(device).eval(), cfg


def model_name(index: int) -> str:
    """File name of generated model ``index``: ``model_<iii>.safetensors``."""
    return f"model_{index:03d}.safetensors"


def generate_models(
    *,
    generator_dir: str | Path,
    token_dir: str | Path,
    out_paths: Sequence[str | Path],
    generate_cfg: Mapping[str, Any] | GenerateConfig,
    device: str = "auto",
    indices: Sequence[int] | None = None,
    tasks: Sequence[Sequence[int]] | None = None,
) -> None:
    """Write one generated model per path (see module docstring), each streamed chunk by chunk.

    ``indices``: each model's index in the generated set (default 0, 1, ...): model i uses seed
    ``generate.seed + i``, so a model does not depend on which job makes it. ``tasks``: one task vector per model
    (task-conditioned generators; default: ``generate.task`` for all).
    """
    cfg = GenerateConfig.parse(generate_cfg, "generate")
    set_threads(cfg.threads)
    dev = resolve_device(device)
    store = TokenStore(token_dir)
    model, _ = load_generator(generator_dir, device=dev, weights=cfg.weights)
    check_store(model, store, generator_dir)
    write_models(model, store, generator_dir=generator_dir, out_paths=out_paths, cfg=cfg, device=dev,
                 indices=indices, tasks=tasks)  # fmt: skip


def check_store(model: RPGModel, store: TokenStore, generator_dir: str | Path) -> None:
    """RPGInputError naming the store unless the generator was trained on tokens of its layout."""
    layout = store.layout
    if (model.num_tokens, model.token_size) != (layout.num_tokens, layout.token_size):
        raise RPGInputError(
            f"generator {generator_dir} was trained on [{model.num_tokens}, {model.token_size}] tokens, "
            f"this store has [{layout.num_tokens}, {layout.token_size}]", store.directory)  # fmt: skip


def write_models(
    model: RPGModel,
    store: TokenStore,
    *,
    generator_dir: str | Path,
    out_paths: Sequence[str | Path],
    cfg: GenerateConfig,
    device: torch.device,
    indices: Sequence[int] | None = None,
    tasks: Sequence[Sequence[int]] | None = None,
) -> None:
    """Sample models with a loaded generator (on ``device``) into ``out_paths``, ``cfg.batch_size`` at a time, with
    a progress bar: model i (``indices``, default 0, 1, ...) uses seed ``cfg.seed + i`` and the permutation state
    ``cfg.state`` or one drawn from that seed. What :func:`generate_models`, the pipeline's generate stage and
    ``rpg sample`` (:mod:`rpg.api`) all run."""
    dev = device
    out_paths = [Path(p) for p in out_paths]
    indices = list(range(len(out_paths))) if indices is None else [int(i) for i in indices]
    if len(indices) != len(out_paths):
        raise ValueError(f"{len(indices)} model indices for {len(out_paths)} output paths")
    if tasks is not None and len(tasks) != len(out_paths):
        raise ValueError(f"{len(tasks)} task vectors for {len(out_paths)} models")
    layout, store_meta = store.layout, store.meta
    reference = LazyTensors(store.directory / REFERENCE_FILE)  # copied entries, read one at a time
    num_states = model.permutation.num_states
    sampler = build_sampler(cfg.sampler, schedule=model.schedule, steps=cfg.steps, eta=cfg.eta)
    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    if dev.type == "cuda":  # the denoiser's convs see a handful of shapes: let cuDNN pick the fastest kernels
        torch.backends.cudnn.benchmark = True
    log.info("generating %d models with %s-%d on %s, %d at a time%s", len(out_paths), cfg.sampler,
             len(sampler.timesteps), dev, cfg.batch_size, " (bfloat16)" if cfg.bf16 else "")  # fmt: skip
    jobs = []
    for n, (i, path) in enumerate(zip(indices, out_paths)):
        seed = cfg.seed + i
        state = pick_state(num_states, cfg.state, torch.Generator().manual_seed(seed))
        task = tasks[n] if tasks is not None else cfg.task
        meta = {
            "kind": "generated", "arch": store_meta.get("arch"), "arch_kwargs": store_meta.get("arch_kwargs", {}),
            "num_classes": store_meta.get("num_classes"), "run": None, "seed": seed, "step": None, "index": i,
            "val_accuracy": None, "task": None if task is None else _task_list(task),
            "generator": str(generator_dir), "state": state, "sampler": cfg.sampler,
            "sampling_steps": len(sampler.timesteps), "sample_seed": seed, "state_dict_keys": layout.names,
        }  # fmt: skip
        jobs.append(GeneratedModel(path=path, state=state, seed=seed, metadata=meta,
                                   task=None if task is None else torch.tensor(task, dtype=torch.float32)))  # fmt: skip
    bar = progress(total=len(jobs), desc="generate")
    done = 0
    for first in range(0, len(jobs), cfg.batch_size):
        batch = jobs[first : first + cfg.batch_size]
        start = time.perf_counter()
        write_generated_models(model, batch, layout=layout, reference=reference, sampler=sampler, device=dev,
                               chunk_tokens=cfg.chunk_tokens, dtype=dtype)  # fmt: skip
        seconds = time.perf_counter() - start
        for job in batch:
            log.info("model %d (state %d) -> %s (batch of %d in %.2f s)", job.metadata["index"], job.state, job.path,
                     len(batch), seconds)  # fmt: skip
        bar.update(len(batch))
        for _ in batch:
            done += 1
            fault_point("generate", done)
    bar.close()


def _task_list(task) -> list:
    """A task vector for JSON metadata: ints for binary tasks, floats for a continuous family's."""
    values = [float(b) for b in task]
    return [int(v) if v.is_integer() else v for v in values]


@dataclass(frozen=True)
class GeneratedModel:
    """One model to generate: its output file, permutation state, seed (of its noise), task and file metadata."""

    path: Path
    state: int
    seed: int
    metadata: Mapping[str, Any]
    task: torch.Tensor | None = None


def write_generated_models(
    model: RPGModel,
    models: Sequence[GeneratedModel],
    *,
    layout: Layout,
    reference: Mapping[str, torch.Tensor],
    sampler,
    device: torch.device | str = "cpu",
    chunk_tokens: int = 256,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Sample a batch of models together and stream each into its file (see :func:`write_generated_model`).

    Model b draws its noise from ``torch.Generator(device).manual_seed(models[b].seed)``, so each file is the one
    :func:`write_generated_model` writes for that model alone. All files of the batch are open at once and
    written chunk by chunk; an error in any model (e.g. non-finite weights) leaves none of the batch's files.
    """
    tasks = None if all(m.task is None for m in models) else [m.task for m in models]
    chunks = model.sample_batch(
        states=[m.state for m in models], sampler=sampler, tasks=tasks, chunk_tokens=chunk_tokens, dtype=dtype,
        generators=[torch.Generator(device).manual_seed(m.seed) for m in models],
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(StreamedStateDict(m.path, layout, reference, m.metadata)) for m in models]
        for start, x in chunks:
            mask = model.chunk_mask(start, start + x.shape[1]).cpu()
            for m, out, tokens in zip(models, outs, x):
                if not bool(torch.isfinite(tokens[mask]).all()):
                    raise FloatingPointError(f"the generator produced non-finite weights in tokens {start}.. of "
                                             f"{m.path}")  # fmt: skip
                out.write(start, tokens)


def write_generated_model(
    model: RPGModel,
    *,
    path: str | Path,
    layout: Layout,
    reference: Mapping[str, torch.Tensor],
    state: int,
    sampler,
    generator: torch.Generator | None = None,
    task: torch.Tensor | None = None,
    chunk_tokens: int = 256,
    metadata: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Sample one model and stream it into ``path`` (a safetensors state_dict loadable with strict=True).

    Memory-flat: prototypes are computed once, tokens are denoised ``chunk_tokens`` at a time, and each chunk is
    un-normalised and written into its layers' places in the file (:mod:`rpg.tokens.stream`) before the next one
    is sampled; neither the [L, k] tokens nor the state_dict of the model are ever held. Non-finite weights raise
    FloatingPointError and leave no file.
    """

    def checked_chunks():
        for start, x in model.sample_chunks(
            state=state, sampler=sampler, generator=generator, task=task, chunk_tokens=chunk_tokens, dtype=dtype
        ):
            if not bool(torch.isfinite(x[model.chunk_mask(start, start + x.shape[0]).cpu()]).all()):
                raise FloatingPointError(f"the generator produced non-finite weights in tokens {start}.. of {path}")
            yield start, x

    write_streamed_state_dict(path, checked_chunks(), layout, reference, metadata)
