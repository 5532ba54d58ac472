"""The public Python API: what the pipeline made, used outside the pipeline.

Five names, importable from ``rpg``::

    import rpg

    gen = rpg.load_generator("results/digits/generator/cnn_m")   # the trained generator + its token store
    state_dicts = gen.sample(3, seed=0)                            # or gen.sample(3, out_dir="x/") -> files
    model = rpg.load_model("x/model_000.safetensors")              # a ready nn.Module (architecture from metadata)
    rpg.evaluate_model(model, "config.yaml", split="test")         # {"accuracy": ...}, the zoo's evaluator
    rpg.export_model("x/model_000.safetensors", "my_model/")       # config.json + model.safetensors + README.md

The pipeline's generate stage samples through :meth:`Generator.sample` too, so ``rpg sample`` and the workflow write
the same files for the same seeds. Everything else in the package is internal.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rpg.config import DataConfig, GenerateConfig, ZooSettings, resolve_config
from rpg.errors import RPGInputError
from rpg.generator.sampling import check_store, model_name, write_models
from rpg.generator.sampling import load_generator as _load_weights
from rpg.hub import export_folder, pipeline_location, read_model
from rpg.io import read_json, read_safetensors_metadata
from rpg.runtime import resolve_device, set_threads
from rpg.tokens.store import TokenStore
from rpg.zoo.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

__all__ = ["Generator", "evaluate_model", "export_model", "load_generator", "load_model"]

Settings = ZooSettings | GenerateConfig | Mapping[str, Any] | str | Path | None
StateDict = dict[str, torch.Tensor]


class Generator:
    """A trained RPG generator with its token store, ready to sample models (made by :func:`load_generator`).

    Attributes: ``path`` (the generator folder), ``tokens`` (its token store), ``settings`` (the generate
    settings sampling uses: sampler, steps, seed, ...), ``arch``/``arch_kwargs`` (the architecture it makes),
    ``num_states`` (permutation states), ``task_bits`` (task vector length; None unless task-conditioned).
    """

    def __init__(self, path: Path, *, tokens: Path, config: Mapping[str, Any], settings: GenerateConfig,
                 device: str = "auto", zoo: ZooSettings | None = None) -> None:  # fmt: skip
        self.path, self.tokens, self.config, self.settings, self.device = path, tokens, dict(config), settings, device
        self._zoo = zoo
        meta = config.get("tokens_meta") or {}
        self.arch: str | None = meta.get("arch")
        self.arch_kwargs: dict[str, Any] = dict(meta.get("arch_kwargs") or {})
        self.num_states = int(config.get("num_states", 1))
        gcfg = config.get("generator") or {}
        self.task_bits: int | None = int(gcfg.get("task_bits", 10)) if gcfg.get("task_condition") else None
        self._loaded: dict[tuple[str, str], Any] = {}

    def __repr__(self) -> str:
        return (f"Generator({str(self.path)!r}, arch={self.arch!r}, states={self.num_states}, "
                f"sampler={self.settings.sampler}-{self.settings.steps})")  # fmt: skip

    def _model(self, device: torch.device):
        key = (str(device), self.settings.weights)
        if key not in self._loaded:
            model, _ = _load_weights(self.path, device=device, weights=self.settings.weights)
            check_store(model, TokenStore(self.tokens), self.path)
            self._loaded = {key: model}  # one device at a time
        return self._loaded[key]

    def sample(
        self,
        n: int | None = None,
        *,
        seed: int | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        device: str | None = None,
        state: int | None = None,
        task: Sequence[int] | str | None = None,
        prompt: str | None = None,
        out_dir: str | Path | None = None,
    ) -> list[StateDict] | list[Path]:
        """Sample ``n`` models (or the models ``indices`` of the generated set); model i uses seed ``seed + i``.

        ``seed``, ``batch_size`` (models sampled together; the weights do not depend on it), ``state`` (the
        permutation state; None: drawn from each model's seed) and ``task`` (a task vector, e.g. ``[1, 0, ...]`` or
        ``"1010000001"``, for task-conditioned generators; or ``prompt``, a sentence turned into one) default to the
        generator's settings. Returns the state dicts, or with ``out_dir`` writes ``model_<iii>.safetensors`` files
        (with metadata: generator, seed, state, sampler) and returns their paths.
        """
        if (n is None) == (indices is None):
            raise ValueError("give the number of models n or their indices, not both")
        indices = list(range(int(n))) if indices is None else [int(i) for i in indices]
        if any(i < 0 for i in indices):
            raise ValueError(f"model indices must be >= 0, got {indices}")
        changes: dict[str, Any] = {}
        for key, value in (("seed", seed), ("batch_size", batch_size), ("state", state)):
            if value is not None:
                changes[key] = value
        vector = self._task(task, prompt)
        if vector is not None:
            changes["task"] = vector
        cfg = GenerateConfig.parse({**self.settings.to_dict(), **changes}, "generate")
        if self.task_bits is not None and cfg.task is None:
            raise RPGInputError("a task-conditioned generator needs a task vector (task=...) or a prompt", self.path)
        if self.task_bits is None and cfg.task is not None:
            raise RPGInputError("this generator is not task-conditioned: it takes no task or prompt", self.path)
        if cfg.state is not None and not 0 <= cfg.state < self.num_states:
            raise RPGInputError(f"permutation state {cfg.state} out of range 0..{self.num_states - 1}", self.path)
        set_threads(cfg.threads)
        dev = resolve_device(device or self.device)
        model = self._model(dev)
        store = TokenStore(self.tokens)
        if out_dir is not None:
            paths = [Path(out_dir) / model_name(i) for i in indices]
            write_models(model, store, generator_dir=self.path, out_paths=paths, cfg=cfg, device=dev, indices=indices)
            return paths
        with tempfile.TemporaryDirectory(prefix="rpg-sample-") as tmp:
            paths = [Path(tmp) / model_name(i) for i in indices]
            write_models(model, store, generator_dir=self.path, out_paths=paths, cfg=cfg, device=dev, indices=indices)
            return [load_checkpoint(p)[0] for p in paths]

    def _task(self, task: Sequence[int] | str | None, prompt: str | None) -> list[int] | None:
        if task is not None and prompt is not None:
            raise ValueError("give a task vector or a prompt, not both")
        if isinstance(task, str):
            if not set(task) <= {"0", "1"}:
                raise RPGInputError(f"a task vector is a string of 0s and 1s, got {task!r}", "task")
            task = [int(c) for c in task]
        if task is not None:
            task = [int(b) for b in task]
            if self.task_bits is not None and len(task) != self.task_bits:
                raise RPGInputError(f"the generator takes {self.task_bits}-bit task vectors, got {len(task)} bits",
                                    "task")  # fmt: skip
            return task
        if prompt is None:
            return None
        from rpg.adapters.encoder import sentence_encoder
        from rpg.prompt import class_names, noun, prompt_task

        if self._zoo is None or self._zoo.tasks is None:
            raise RPGInputError("a prompt needs the task zoo's settings (load_generator(..., settings=<config>)) to "
                                "name its classes", self.path)  # fmt: skip
        pcfg, data = self._zoo.tasks.prompt, self._zoo.data
        found = prompt_task(prompt, names=class_names(data, pcfg.class_names), encoder=sentence_encoder(pcfg.encoder),
                            rule=pcfg.rule, prefix=noun(data.name))  # fmt: skip
        bits = "".join(map(str, found.vector))
        log.info("prompt %r -> task %s (%s)", prompt, bits, ", ".join(found.positive_classes))
        return found.vector


def _read_config(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RPGInputError("config file does not exist", path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RPGInputError(f"invalid YAML ({exc})".replace("\n", " "), path) from exc
    if not isinstance(raw, dict) or "experiments" not in raw:
        raise RPGInputError("not a pipeline config (no 'experiments' key)", path)
    return raw


def zoo_settings_for(
    config: Mapping[str, Any] | str | Path, *, near: str | Path | None = None, experiment: str | None = None,
    zoo: str | None = None,
) -> ZooSettings:  # fmt: skip
    """The settings of one (experiment, zoo) of a pipeline config (a mapping or a YAML file): the named one, else
    the one of the results tree ``near`` lies in, else the config's only one."""
    where = config if isinstance(config, str | Path) else "config"
    raw = _read_config(config) if isinstance(config, str | Path) else config
    resolved = resolve_config(raw)
    loc = pipeline_location(near) if near is not None else None
    experiment = _pick(resolved, experiment, loc[1] if loc else None, owner="the config", kind="experiment",
                       where=where)  # fmt: skip
    zoos = resolved[experiment]
    zoo = _pick(zoos, zoo, loc[2] if loc else None, owner=f"experiment {experiment!r}", kind="zoo", where=where)
    return zoos[zoo]


def _pick(options: Mapping[str, Any], name: str | None, guess: str | None, *, owner: str, kind: str, where) -> str:
    """``name``, else ``guess`` when it is one of ``options``, else the only option; an error naming ``where``."""
    if name is None and guess in options:
        name = guess
    if name is None:
        if len(options) != 1:
            raise RPGInputError(f"{owner} has {kind}s {sorted(options)}: name one", where)
        name = next(iter(options))
    if name not in options:
        raise RPGInputError(f"{owner} has no {kind} {name!r} (it has {sorted(options)})", where)
    return name


def find_token_store(path: Path, config: Mapping[str, Any]) -> Path:
    """The token store a generator folder was trained on: the recorded ``token_dir`` (absolute, relative to the
    working directory, or to a folder above the generator), else the results tree's ``tokens/<zoo>``; it must hold
    the same tokens (content hash) when the generator recorded one."""
    recorded = config.get("token_dir")
    candidates: list[Path] = []
    if recorded:
        rec = Path(recorded)
        candidates += [rec] if rec.is_absolute() else [rec, *(a / rec for a in Path(os.path.abspath(path)).parents)]
    candidates.append(path.parent.parent / "tokens" / path.name)
    want = config.get("token_content_hash") or ""
    seen, other = [], None
    for cand in candidates:
        if cand in seen or not cand.is_dir():
            continue
        seen.append(cand)
        try:
            store = TokenStore(cand)
            got = store.content_hash
        except RPGInputError:
            continue
        if not want or not got or got == want:
            return cand
        other = other or cand
    if other is not None:
        raise RPGInputError(f"the token store {other} holds other tokens than the generator was trained on "
                            "(content hash differs): pass its own store as tokens=<folder> (rpg sample --tokens)",
                            path)  # fmt: skip
    looked = recorded or str(path.parent.parent / "tokens" / path.name)
    raise RPGInputError(f"no token store for this generator (looked for {looked}); sampling needs the store it was "
                        "trained on: pass tokens=<folder> (rpg sample --tokens)", path)  # fmt: skip


def load_generator(
    path: str | Path,
    *,
    tokens: str | Path | None = None,
    settings: Settings = None,
    device: str = "auto",
) -> Generator:
    """Load a trained generator from its results folder (``results/<exp>/generator/<zoo>``).

    ``tokens``: its token store (default: found from the folder's config.json or the results tree).
    ``settings``: how to sample: a pipeline config (a YAML file or mapping; the experiment and zoo are read from
    the folder's place in the results tree), a zoo's settings, a ``generate`` block (mapping or GenerateConfig), or
    None for the defaults (DDIM-60, seed 0). ``device``: cpu, cuda, or auto.
    Raises RPGInputError naming the folder when it is not a generator or its token store is missing.
    """
    path = Path(path)
    if not path.is_dir():
        raise RPGInputError("generator folder does not exist" if not path.exists() else "not a folder", path)
    for name in ("config.json", "model.safetensors"):
        if not (path / name).is_file():
            raise RPGInputError(f"not a generator folder: {name} is missing", path)
    config = read_json(path / "config.json")
    if not isinstance(config, dict) or "generator" not in config:
        raise RPGInputError("not a generator folder: config.json has no 'generator' block", path)
    if read_safetensors_metadata(path / "model.safetensors").get("kind") != "generator":
        raise RPGInputError("not a generator folder: model.safetensors is not a generator's weights", path)
    zoo: ZooSettings | None = None
    if isinstance(settings, ZooSettings):
        zoo = settings
    elif isinstance(settings, str | Path) or (isinstance(settings, Mapping) and "experiments" in settings):
        zoo = zoo_settings_for(settings, near=path)
    if zoo is not None:
        cfg, device = zoo.generate, device if device != "auto" else zoo.device
    else:
        cfg = GenerateConfig.parse(settings or {}, "generate")
    store_dir = Path(tokens) if tokens is not None else find_token_store(path, config)
    store = TokenStore(store_dir)
    want = (config.get("num_tokens"), config.get("token_size"))
    have = (store.layout.num_tokens, store.layout.token_size)
    if None not in want and tuple(want) != have:
        raise RPGInputError(f"generator {path} was trained on {list(want)} tokens, this store has {list(have)} (a zoo "
                            "of another architecture?)", store_dir)  # fmt: skip
    return Generator(path, tokens=store_dir, config=config, settings=cfg, device=device, zoo=zoo)


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """A checkpoint, generated model or exported model folder of the pipeline as a ready ``nn.Module`` (eval mode).

    The architecture and its keyword arguments come from the file's metadata (a folder: its config.json); the
    weights load with ``strict=True``. Raises RPGInputError naming the file when it is missing, not safetensors,
    or holds weights of another architecture.
    """
    return read_model(path, device=device)[0]


def evaluate_model(
    model: nn.Module | str | Path,
    settings_or_config: ZooSettings | DataConfig | Mapping[str, Any] | str | Path,
    split: str = "test",
    *,
    experiment: str | None = None,
    zoo: str | None = None,
) -> dict[str, float]:
    """Score ``model`` (a module or a model file) with the zoo's evaluator on ``split`` (train/val/test/probe).

    ``settings_or_config``: a zoo's settings, a pipeline config (YAML file or mapping; ``experiment``/``zoo`` pick
    one, else the results tree of a model file, else the only one) or a data block (``{"name": "digits", ...}``,
    classification). Returns the evaluator's metrics, e.g. ``{"accuracy": 0.93}``.
    """
    from rpg.evaluate.evaluators import build_evaluator

    near, file, meta = None, None, {}
    if isinstance(model, str | Path):
        file = near = model
        model, meta = read_model(model)
        near = meta.get("generator") or near if pipeline_location(near) is None else near
    s = settings_or_config
    if isinstance(s, str | Path) or (isinstance(s, Mapping) and "experiments" in s):
        s = zoo_settings_for(s, near=near, experiment=experiment, zoo=zoo)
    if isinstance(s, ZooSettings) and meta.get("arch") and meta["arch"] != s.arch:
        raise RPGInputError(f"a {meta['arch']} model; zoo {s.experiment}/{s.zoo} of the config holds {s.arch} models "
                            "(name the zoo of its architecture)", file)  # fmt: skip
    if isinstance(s, ZooSettings):
        spec, data = s.evaluate.evaluator, s.data
    else:
        spec, data = "classification", s
    device = next(iter(model.parameters()), torch.zeros(0)).device
    outcome = build_evaluator(spec, data=data, device=device).evaluate(model, split)
    return {k: float(v) for k, v in outcome.metrics.items()}


def export_model(path: str | Path, out_dir: str | Path) -> Path:
    """Export a model file of the pipeline as a model folder: ``config.json`` (architecture and keyword arguments;
    for timm models timm's own config, so ``timm.create_model("local-dir:<folder>", pretrained=True)`` loads it),
    ``model.safetensors`` and a ``README.md`` model card (how it was made and, when the pipeline evaluated it, how it
    scored against the originals). Returns the folder."""
    return export_folder(path, out_dir)
