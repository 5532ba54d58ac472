"""Training loop of the RPG generator on a token store (resumable; DDP via torchrun when nproc > 1).

Each step takes a batch of checkpoints, computes prototypes once per distinct (state, task), denoises a
random subset of ``diffusion_batch`` tokens and takes an AdamW step (warmup + cosine lr, gradient clipping,
bf16 autocast on CUDA, EMA of the weights). All randomness of a step comes from a generator seeded by
(seed, step, rank), and the training state is saved every ``save_every`` steps to ``out_dir/resume/state.pt``,
so a killed run continued later gives the same loss curve as an uninterrupted one. On SIGTERM or SIGINT (a cluster
preempting or timing out the job, Ctrl-C) the step in progress finishes, the state is saved at that step and the
process exits with status 128 + signal; the requeued (or retried) job resumes from that step.

Validation (``train.validate_every``, :mod:`rpg.generator.validation`): every so many steps a few models are
sampled from the current (EMA) weights and scored on the val split; train_log.csv gets their score, the originals'
(the target), the distinct count and the nearest distance to the originals (NaN on the other rows). It runs on a
copy of the generator under a forked RNG and draws its noise from its own generators, so the trained weights are
those of the same run without validation. With ``train.validate_overlap`` it runs on a thread beside the steps that
follow it, and a result that starts the cool-down or stops training undoes those steps: the same run as validating
in turn. With ``train.steps: auto`` the validations decide when to stop
(:class:`~rpg.generator.validation.AutoStop`), and the generator written is the one of the best validation; with
``train.cooldown`` the rule's firing starts a linear decay of the lr over a share of the steps done, validated as
before, and training stops at its end (a run of unknown length annealed like a fixed one).
``auto`` recipe values (generator width, lr, warmup, diffusion batch) are chosen at the start by
:mod:`rpg.config.recipe`.

Outputs: ``model.safetensors`` (weights under their names, EMA weights under ``ema.``, the token layout under
``layout.``), ``config.json`` (with a ``training`` block: steps run, the step kept, why training stopped, the
validation's share of the time; and ``recipe``: the values chosen for ``auto`` settings, with the reasons) and
``train_log.csv`` (step, loss, lr, time, and the validation columns when validation is on).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from rpg.config import GeneratorConfig, TrainConfig, recipe, result_dict
from rpg.errors import RPGInputError
from rpg.generator.model import RPGModel, build_generator
from rpg.io import save_safetensors, write_bytes, write_json, write_table
from rpg.optim import batch_rows, build_adamw, warmup_cosine
from rpg.runtime import StopSignals, fault_point, progress, resolve_device, set_threads, setup_logging
from rpg.tokens.store import TokenStore

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LOG_FILE = "train_log.csv"
STATE_FILE = Path("resume") / "state.pt"


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the generator that draws a step's token subset, timesteps and noise."""
    return (seed * 1_000_003 + step) * 1009 + rank


class EMA:
    """Exponential moving average of a model's floating-point state: parameters and float buffers (BatchNorm running
    statistics of the denoiser), so the averaged weights come with statistics that belong to them; integer buffers
    are copied.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so a short run's average is not
    dominated by the random initialisation (with a fixed 0.999, 13% of it is still there after 2,000 steps).
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, num_updates: int) -> None:
        decay = min(self.decay, (1 + num_updates) / (10 + num_updates))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.state[k].lerp_(v, 1 - decay)
            else:
                self.state[k].copy_(v)


class _Checkpoints:
    """Token rows of the store, preloaded when small, plus states and (optional) task vectors."""

    def __init__(self, store, *, preload_max_mb: int, task_bits: int | None) -> None:
        self.store = store
        n, layout = len(store), store.layout
        self.states = torch.tensor(store.index["state"].tolist(), dtype=torch.long)
        self.tasks = None
        if task_bits is not None:
            tasks = store.index["task"].tolist()
            bad = [i for i, t in enumerate(tasks) if t is None or len(t) != task_bits]
            if bad:
                raise RPGInputError(
                    f"task-conditioned generator needs a {task_bits}-bit task for every checkpoint; "
                    f"rows {bad[:5]} have none or another length", store.directory)  # fmt: skip
            self.tasks = torch.tensor([list(t) for t in tasks], dtype=torch.float32)
        size_mb = n * layout.num_tokens * layout.token_size * 4 / 2**20
        self.all = store.tokens(range(n)) if size_mb <= preload_max_mb else None

    def __len__(self) -> int:
        return len(self.states)

    def get(self, rows: list[int]):
        tokens = self.all[rows] if self.all is not None else self.store.tokens(rows)
        tasks = None if self.tasks is None else self.tasks[rows]
        return tokens, self.states[rows], tasks


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _save_state(path: Path, obj: dict[str, Any]) -> None:
    buffer = io.BytesIO()  # serialised first: its size is known, and a full disk is reported as such (rpg.io)
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def _load_state(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The resumable state at ``path`` if it belongs to this run (same fingerprint), else None.

    A state of other inputs is ignored (logged); an unreadable one (truncated by a kill, say) is renamed aside to
    ``state.pt.corrupt-<n>`` with a warning naming it, so the next attempt starts afresh instead of failing again.
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "fingerprint" not in state:
            raise ValueError("not a training state")
    except Exception as exc:
        n = 0
        while path.with_name(f"{path.name}.corrupt-{n}").exists():
            n += 1
        aside = path.with_name(f"{path.name}.corrupt-{n}")
        path.rename(aside)
        log.warning("%s is unreadable (%s: %s); moved it to %s and starting from step 0", path,
                    type(exc).__name__, exc, aside)  # fmt: skip
        return None
    if state["fingerprint"] != fingerprint:
        log.warning("%s was saved for other inputs (config or token store content): starting from step 0", path)
        return None
    return state


def train_generator(
    *,
    token_dir: str | Path,
    out_dir: str | Path,
    generator_cfg: Mapping[str, Any] | GeneratorConfig,
    train_cfg: Mapping[str, Any] | TrainConfig,
    device: str = "auto",
    resume: bool = True,
    stop_after: int | None = None,
    validation: Mapping[str, Any] | None = None,
    validator: Any = None,
) -> None:
    """Train a generator on the token store ``token_dir``; write model/config/log into ``out_dir``.

    The resumable state (``out_dir/resume/state.pt``) is kept while training and removed once the outputs are
    written. ``stop_after`` (tests) stops after that many steps of this call, as if the process was killed.
    With ``train.validate_every``: ``validation`` = {"data": data block, "evaluator": evaluate.evaluator,
    "batch_size": evaluation batch size} builds the validator (:class:`~rpg.generator.validation.SampleValidator`);
    ``validator`` gives one instead (a callable generator -> dict of the validation columns, with a ``target``).
    """
    gcfg = GeneratorConfig.parse(generator_cfg, "generator")
    tcfg = TrainConfig.parse(train_cfg, "train")
    out_dir = Path(out_dir)
    if tcfg.validate_every is not None and validation is None and validator is None:
        raise ValueError("train.validate_every needs the data and the evaluator to score sampled models on "
                         "(validation=...)")  # fmt: skip
    if tcfg.nproc > 1 and not (dist.is_available() and dist.is_initialized()):
        _launch_ddp(token_dir=token_dir, out_dir=out_dir, gcfg=gcfg, tcfg=tcfg, device=device, resume=resume,
                    validation=validation)  # fmt: skip
        return
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(dev)
    set_threads(tcfg.threads)
    if tcfg.batch_size < world:
        raise ValueError(f"train.batch_size={tcfg.batch_size} must be >= the number of processes {world}")

    store = TokenStore(token_dir)
    layout = store.layout
    if gcfg.task_condition is None and store.index["task"].notna().any():
        log.info("the zoo has task vectors but generator.task_condition is null: tasks are ignored")
    data = _Checkpoints(
        store, preload_max_mb=tcfg.preload_max_mb, task_bits=gcfg.task_bits if gcfg.task_condition else None
    )
    fingerprint = json.dumps(
        {"generator": result_dict(gcfg), "train": result_dict(tcfg), "world": world,
         "tokens": [layout.num_tokens, layout.token_size, len(store), store.num_states, store.content_hash]},
        sort_keys=True,
    )  # fmt: skip
    gcfg, chosen = recipe.resolve_generator(gcfg, token_size=layout.token_size)
    tcfg, train_chosen = recipe.resolve_train(
        tcfg, tokens=layout.num_tokens, parameters=layout.num_parameters, width=gcfg.dim
    )
    chosen.update(train_chosen)
    if rank == 0:
        for key, choice in chosen.items():
            section = "generator" if key == "dim" else "train"
            log.info("%s.%s auto: %s (%s)", section, key, choice["value"], choice["reason"])
    total = tcfg.total_steps
    torch.manual_seed(tcfg.seed)
    model = build_generator(gcfg, layout, store.num_states).to(dev)
    ema = EMA(model, tcfg.ema_decay) if tcfg.ema_decay and rank == 0 else None
    opt = build_adamw(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay, eight_bit=tcfg.adamw_8bit)
    validate = tcfg.validate_every is not None
    history: dict[str, list] = {"step": [], "loss": [], "lr": [], "time": []}
    stopper = None
    if validate:
        from rpg.generator.validation import VAL_COLUMNS, AutoStop

        history.update({c: [] for c in VAL_COLUMNS})
        stopper = AutoStop(target=None, tolerance=tcfg.val_tolerance, patience=tcfg.patience,
                           min_delta=tcfg.val_min_delta, plateau_after=tcfg.plateau_after)  # fmt: skip

    def cosine(s: int) -> float:
        return warmup_cosine(s, lr=1.0, warmup=tcfg.warmup_steps, total=total, min_ratio=tcfg.min_lr_ratio)

    def cooled(s: int) -> float:  # train.cooldown: the cosine, then the cool-down once the stopping rule fired
        return stopper.lr_factor(s, cosine, tcfg.min_lr_ratio)

    cools = validate and tcfg.auto_steps and tcfg.cooldown is not None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cooled if cools else cosine)
    best: dict[str, dict[str, torch.Tensor]] | None = None  # steps: auto: weights of the best validation (CPU)
    start, elapsed = 0, 0.0
    state_path = out_dir / STATE_FILE
    state = _load_state(state_path, fingerprint) if resume and rank == 0 else None
    if world > 1:  # every rank resumes from what rank 0 found
        found = [state is not None]
        dist.broadcast_object_list(found, src=0)
        if found[0] and rank != 0:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.state = {k: v.to(dev) for k, v in state["ema"].items()}
        torch.set_rng_state(state["rng"]["cpu"])
        if dev.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], dev)
        history = {k: list(v) for k, v in state["history"].items()}
        start, elapsed = int(state["step"]), float(state["elapsed"])
        if validate:
            stopper.load_state_dict(state["validation"])
            best = state.get("best") or None
        log.info("resuming from %s at step %d", state_path, start)

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)
    amp = tcfg.bf16 and (dev.type == "cuda" or tcfg.bf16_cpu)
    per_rank_tokens = math.ceil(tcfg.diffusion_batch / world)
    token_weights = None
    if tcfg.running_stats_weight != 1.0:
        is_stat = layout.running_stats_tokens()
        if is_stat.any():
            token_weights = torch.where(is_stat, tcfg.running_stats_weight, 1.0).to(dev)
        if rank == 0:
            log.log(logging.INFO if is_stat.any() else logging.WARNING,
                    "train.running_stats_weight %g: %d BatchNorm running-statistics tokens of %d",
                    tcfg.running_stats_weight, int(is_stat.sum()), layout.num_tokens)  # fmt: skip
    gen = torch.Generator(dev)
    n_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        log.info(
            "training %s generator (%d parameters) on %d checkpoints, %d tokens of %d, %d state(s), %s x%d",
            gcfg.backbone, n_params, len(data), layout.num_tokens, layout.token_size, store.num_states, dev, world,
        )  # fmt: skip
    if validate and rank == 0 and validator is None:
        validator = _build_validator(store, tcfg, validation, dev)
    sampling_copy: RPGModel | None = None  # the generator validation samples from (EMA weights when EMA is on)
    # train.validate_overlap: a validation runs on a thread while the steps after it train (speculatively: a result
    # that stops training or starts the cool-down takes the run back to the validated step); one process on a CPU
    # with as many CPUs again as the training's threads (the validation's thread runs that many intra-op threads)
    overlap = validate and rank == 0 and world == 1 and dev.type == "cpu" and tcfg.validate_overlap
    if overlap and not _spare_core(torch.get_num_threads()):
        log.info("train.validate_overlap: fewer than 2 x %d CPUs (the training's threads and the validation's): "
                 "validating in turn", torch.get_num_threads())  # fmt: skip
        overlap = False
    pool = ThreadPoolExecutor(1, "validation", set_threads, (torch.get_num_threads(),)) if overlap else None
    pending: dict[str, Any] | None = None  # the validation under way: step, history row, snapshot, future

    def score(weights: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        sampling_copy.load_state_dict(weights)
        return validator(sampling_copy)

    def snapshot() -> dict[str, Any]:
        """The training state after this step (the weights validated, and what a step back to here restores)."""
        return {"model": _cpu_clone(model.state_dict()), "ema": _cpu_clone(ema.state) if ema is not None else {},
                "optimizer": copy.deepcopy(opt.state_dict()), "scheduler": copy.deepcopy(sched.state_dict()),
                "rng": _rng_state(dev), "rows": len(history["step"])}  # fmt: skip

    def restore(snap: Mapping[str, Any]) -> None:
        model.load_state_dict(snap["model"])
        opt.load_state_dict(snap["optimizer"])
        sched.load_state_dict(snap["scheduler"])
        if ema is not None:
            ema.state = {k: v.to(dev, copy=True) for k, v in snap["ema"].items()}
        torch.set_rng_state(snap["rng"]["cpu"])
        for column in history.values():
            del column[snap["rows"] :]

    def validate_at(step: int) -> tuple[bool, bool, bool]:
        """Validate the generator of ``step`` (steps done): on the thread (returns no decision yet) or here and now."""
        nonlocal sampling_copy, pending
        if sampling_copy is None:
            sampling_copy = copy.deepcopy(model)
        row = len(history["step"]) - 1
        if overlap and step not in (total, stopper.cooldown_end):  # the last validation has no steps to overlap
            snap = snapshot()
            future = pool.submit(score, snap["ema"] if ema is not None else snap["model"])
            pending = {"step": step, "row": row, "snapshot": snap, "future": future}
            return False, False, False
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            out = score(ema.state if ema is not None else model.state_dict())
        return apply(step, row, out, {"model": model.state_dict(), "ema": ema.state if ema is not None else {}})

    def apply(step: int, row: int, out: dict[str, Any], weights: Mapping[str, Any]) -> tuple[bool, bool, bool]:
        """Take validation ``step``'s result: its log row, the stopping rule, the generator kept at a new best (from
        ``weights``) and the cool-down the rule starts. Returns (stop now, kept, cool-down begun)."""
        nonlocal best, stop_reason, val_postfix
        stopper.target = out["val_target"]
        new_best, reason = stopper.update(step, out["val_score"])
        reason = reason if tcfg.auto_steps else None
        for key in VAL_COLUMNS:
            history[key][row] = out[key]
        kept = new_best and tcfg.auto_steps  # kept, and saved with the state right away
        if kept:
            best = {"model": _cpu_clone(weights["model"]), "ema": _cpu_clone(weights["ema"])}
        verdict = (
            f"  (cooling down to step {stopper.cooldown_end})" if stopper.cooling(step) else f"  -> stop ({reason})"
        )
        log.info("validation at step %d: val score %.4f (originals %.4f), %d/%d distinct, nearest distance %.4f, "
                 "%.1f s%s%s", step, out["val_score"], out["val_target"], out["val_distinct"], len(out["scores"]),
                 out["val_nearest_distance"], out["val_time"], "  new best" if new_best else "",
                 verdict if reason else "")  # fmt: skip
        began = False
        if reason and cools and stopper.cooldown_end is None:
            length = min(max(1, round(tcfg.cooldown * step)), total - step)
            if length > 0:
                stopper.begin_cooldown(step, step + length, factor=cosine(step))
                began = True
                log.info("stopping rule fired (%s) at step %d: cooling down over %d steps (lr %.3g -> %.3g), "
                         "validating as before", reason, step, length, tcfg.lr * cosine(step),
                         tcfg.lr * tcfg.min_lr_ratio)  # fmt: skip
        stop_reason = reason
        val_postfix = {"val": f"{out['val_score']:.4f}/{out['val_target']:.4f}"}
        return reason is not None and not stopper.cooling(step), kept, began

    def save(step: int) -> None:
        if rank == 0:
            under_way = pending["step"] if pending is not None else None  # saved while validating this step
            extra = {"validation": stopper.state_dict(), "best": best or {},
                     "validation_pending": under_way} if validate else {}  # fmt: skip
            _save_state(state_path, {
                "fingerprint": fingerprint, "step": step, "elapsed": elapsed, "history": history,
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "ema": ema.state if ema is not None else {}, "rng": _rng_state(dev), **extra,
            })  # fmt: skip
        if world > 1:
            dist.barrier()

    stop_reason, val_postfix = None, {}
    if state is not None and validate and rank == 0 and state.get("validation_pending") == start:
        validate_at(start)  # saved while the validation of its step was under way: run it again
    if validate and tcfg.auto_steps and not stopper.cooling(start):
        stop_reason = stopper.reason
    bar = progress(total=total, desc="train generator", initial=start, disable=rank != 0)
    t0, window_t, window_step = time.perf_counter(), time.perf_counter(), start
    step, last_step = (start if stop_reason is None else total), start
    unvalidated = (math.nan,) * (len(history) - 4)  # a step's validation columns until a validation fills them
    try:
        with StopSignals() as signals:
            while step < total:
                if stop_after is not None and step - start >= stop_after:
                    bar.close()
                    log.warning("stopping after %d steps (stop_after), as if killed", stop_after)
                    return
                rows = batch_rows(step, batch_size=tcfg.batch_size, num_checkpoints=len(data), seed=tcfg.seed)
                tokens, states, tasks = data.get(rows[rank::world])
                tokens, states = tokens.to(dev, non_blocking=True), states.to(dev)
                tasks = None if tasks is None else tasks.to(dev)
                gen.manual_seed(step_seed(tcfg.seed, step, rank))
                lr = opt.param_groups[0]["lr"]
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    loss = net(tokens, states, tasks, diffusion_batch=per_rank_tokens, generator=gen,
                               noise_samples=tcfg.noise_samples, token_weights=token_weights)  # fmt: skip
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tcfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update(model, step)
                # the loss, and whether a stop signal reached any rank (all ranks stop after the same step)
                reduced = torch.stack([loss.detach().float(), torch.tensor(float(signals.requested > 0), device=dev)])
                if world > 1:
                    dist.all_reduce(reduced)
                    reduced[0] /= world
                loss_value, signalled = float(reduced[0]), bool(reduced[1] > 0)
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"generator loss is {loss_value} at step {step + 1}; lower train.lr?")
                now = time.perf_counter()
                elapsed += now - t0
                t0 = now
                done = last_step = step + 1
                if rank == 0:
                    for key, value in zip(history, (done, loss_value, lr, round(elapsed, 3), *unvalidated)):
                        history[key].append(value)
                    bar.update(1)
                    if done % tcfg.log_every == 0 or done == total:
                        rate = (done - window_step) / max(now - window_t, 1e-9)
                        log.info("step %d/%d loss %.5f lr %.3g  %.2f steps/s", done, total, loss_value, lr, rate)
                        window_t, window_step = now, done
                stop = kept = back = False
                due = validate and (done % tcfg.validate_every == 0 or done in (total, stopper.cooldown_end))
                if pending is not None and (
                    due or signalled or done % tcfg.save_every == 0 or pending["future"].done()
                ):
                    took, pending = pending, None
                    stop, kept, began = apply(took["step"], took["row"], took["future"].result(), took["snapshot"])
                    if stop or began:  # the steps trained beside it are undone: on from the validated step
                        restore(took["snapshot"])
                        log.info("the %d steps after step %d trained beside its validation are undone",
                                 done - took["step"], took["step"])  # fmt: skip
                        done = last_step = step = took["step"]
                        step -= 1
                        bar.n = done
                        bar.refresh()
                        back = True
                if due and not back:
                    if rank == 0:
                        stop, kept_now, _ = validate_at(done)
                        kept = kept or kept_now
                    if world > 1:  # every rank stops, keeps and cools down (its lr schedule) with rank 0
                        cool = (stopper.cooldown_start, stopper.cooldown_end, stopper.cooldown_factor)
                        flag = [stop, kept, cool]
                        dist.broadcast_object_list(flag, src=0)
                        stop, kept = bool(flag[0]), bool(flag[1])
                        if flag[2][0] is not None and stopper.cooldown_start is None:
                            stopper.begin_cooldown(*flag[2])
                if rank == 0:
                    bar.set_postfix({"loss": f"{loss_value:.4f}", **val_postfix}, refresh=False)
                if signalled or stop or kept or done % tcfg.save_every == 0 or done == total:
                    save(done)
                fault_point("train", done)
                if signalled:
                    bar.close()
                    log.warning("%s received: saved the resumable state %s at step %d; exiting (status %d). Rerun "
                                "the same command (or let the cluster requeue the job) to resume from step %d",
                                signals.name or "a stop signal on another rank", state_path, done,
                                128 + (signals.requested or signal.SIGTERM), done)  # fmt: skip
                    if not signals.requested:  # another rank was signalled: end like it
                        signals.requested = signal.SIGTERM
                    signals.exit()
                if stop:
                    break
                step += 1
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    if rank == 0:
        if validate and tcfg.auto_steps and stop_reason is None:
            stop_reason = "max_steps"
        training = _training_block(history, tcfg=tcfg, stopper=stopper if validate else None, last_step=last_step,
                                   reason=stop_reason, seconds=elapsed + time.perf_counter() - t0,
                                   overlap=overlap)  # fmt: skip
        if best:  # steps: auto: the generator of the best validation
            model.load_state_dict(best["model"])
            if ema is not None:
                ema.state = {k: v.to(dev) for k, v in best["ema"].items()}
        _write_outputs(out_dir, model=model, ema=ema, gcfg=gcfg, tcfg=tcfg, store=store, history=history,
                       training=training, recipe_choices=chosen)  # fmt: skip
        state_path.unlink(missing_ok=True)  # finished: a later run on other inputs must not resume from it
        log.info("removed the resumable state %s (training finished)", state_path)
    if world > 1:
        dist.barrier()


def _spare_core(threads: int) -> bool:
    """True when this process may use ``2 x threads`` CPUs: the training's ``threads`` and as many for the validation
    beside it (its thread runs torch with the training's intra-op thread count), so neither oversubscribes."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cpus >= 2 * threads


def _cpu_clone(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _build_validator(store: TokenStore, tcfg: TrainConfig, validation: Mapping[str, Any], dev: torch.device):
    """The zoo's :class:`~rpg.generator.validation.SampleValidator` from ``validation`` (train_generator)."""
    from rpg.evaluate.evaluators import build_evaluator
    from rpg.generator.validation import SampleValidator

    evaluator = build_evaluator(validation.get("evaluator", "classification"), data=validation["data"], device=dev,
                                batch_size=int(validation.get("batch_size", 512)))  # fmt: skip
    return SampleValidator(store=store, evaluator=evaluator, num_models=tcfg.validate_models,
                           sampling_steps=tcfg.validate_steps, seed=tcfg.validate_seed, device=dev)  # fmt: skip


def _training_block(history, *, tcfg: TrainConfig, stopper, last_step: int, reason: str | None, seconds: float,
                    overlap: bool = False) -> dict[str, Any]:  # fmt: skip
    """config.json's ``training``: steps run and kept, why training stopped, the validation's time (beside the
    training steps with ``overlap``: then its share is of time spent beside training, not added to it) and its best."""
    out: dict[str, Any] = {"steps_run": last_step, "kept_step": last_step, "stopped": reason or "steps"}
    if stopper is not None:
        val_time = [t for t in history["val_time"] if isinstance(t, float) and math.isfinite(t)]
        out.update(
            validations=len(stopper.scores), seconds=round(seconds, 3), validation_seconds=round(sum(val_time), 3),
            validation_share=round(sum(val_time) / seconds, 4) if seconds > 0 else None, validation_overlap=overlap,
            target=stopper.target, best_step=stopper.best_step, best_val_score=stopper.best_score,
        )  # fmt: skip
        if stopper.cooldown_start is not None:
            out["cooldown"] = {"from_step": stopper.cooldown_start, "steps": last_step - stopper.cooldown_start}
        if tcfg.auto_steps and stopper.best_step is not None:
            out["kept_step"] = stopper.best_step
    return out


def _write_outputs(
    out_dir: Path, *, model: RPGModel, ema: EMA | None, gcfg, tcfg, store, history,
    training: Mapping[str, Any] | None = None, recipe_choices: Mapping[str, Any] | None = None,
) -> None:  # fmt: skip
    import pandas as pd

    recipe_all = {**store.meta.get("recipe", {}), **(recipe_choices or {})}  # tokens' and training's auto values
    layout = store.layout
    tensors = {k: v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state.items()})
    tensors["layout.positions"] = layout.positions()
    tensors["layout.token_mask"] = layout.token_mask()
    kept = training["kept_step"] if training else tcfg.steps
    meta = {"kind": "generator", "generate_with": "ema" if ema is not None else "model", "steps": kept}
    digest = save_safetensors(tensors, out_dir / MODEL_FILE, meta)
    write_json(
        {
            "sha256": {MODEL_FILE: digest},  # checked by rpg.generator.sampling.load_generator
            "generator": gcfg.to_dict(),
            "train": tcfg.to_dict(),
            "num_states": store.num_states,
            "num_tokens": layout.num_tokens,
            "token_size": layout.token_size,
            "token_dir": str(store.directory),
            "token_content_hash": store.content_hash,
            "tokens_meta": {k: store.meta.get(k) for k in ("arch", "arch_kwargs", "num_classes", "state")},
            "generate_with": meta["generate_with"],
            "final_loss": history["loss"][-1] if history["loss"] else None,
            **({"training": dict(training)} if training else {}),
            **({"recipe": recipe_all} if recipe_all else {}),
        },
        out_dir / CONFIG_FILE,
    )
    write_table(pd.DataFrame(history), out_dir / LOG_FILE)
    log.info("wrote %s (final loss %.5f)", out_dir / MODEL_FILE, history["loss"][-1])


def _launch_ddp(*, token_dir, out_dir: Path, gcfg: GeneratorConfig, tcfg: TrainConfig, device: str, resume: bool,
                validation: Mapping[str, Any] | None = None):  # fmt: skip
    """Run this module under torchrun with ``tcfg.nproc`` processes (gloo on CPU, nccl on CUDA)."""
    config_path = out_dir / "resume" / "launch.json"
    plain_validation = None
    if validation is not None:
        data = validation["data"]
        plain_validation = {**validation, "data": data.to_dict() if hasattr(data, "to_dict") else dict(data)}
    write_json({"generator": gcfg.to_dict(), "train": tcfg.to_dict(), "validation": plain_validation}, config_path)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(tcfg.nproc),
        "-m", "rpg.generator.trainer", "--token-dir", str(token_dir), "--out-dir", str(out_dir),
        "--config-json", str(config_path), "--device", device,
    ] + ([] if resume else ["--no-resume"])  # fmt: skip
    log.info("launching %d DDP processes: %s", tcfg.nproc, " ".join(cmd))
    done = subprocess.run(cmd, env=dict(os.environ))
    if done.returncode != 0:
        raise RuntimeError(f"DDP training ({tcfg.nproc} processes) failed with exit code {done.returncode}")


def main(argv: list[str] | None = None) -> None:
    """CLI (used by torchrun): ``python -m rpg.generator.trainer --token-dir D --out-dir O --config-json C``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--token-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--config-json", required=True, help='JSON {"generator": {...}, "train": {...}}')
    p.add_argument("--device", default="auto")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--log-file", default=None)
    args = p.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(args.log_file if rank == 0 else None, level=logging.INFO if rank == 0 else logging.WARNING)
    cfg = json.loads(Path(args.config_json).read_text())
    if world > 1:
        cuda = resolve_device(args.device).type == "cuda"
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        train_generator(
            token_dir=args.token_dir, out_dir=args.out_dir, generator_cfg=cfg.get("generator", {}),
            train_cfg=cfg.get("train", {}), device=args.device, resume=not args.no_resume,
            validation=cfg.get("validation"),
        )  # fmt: skip
    finally:
        if world > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
