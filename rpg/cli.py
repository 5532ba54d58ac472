"""The ``rpg`` command line: sample, inspect and export models, and turn a prompt into a task vector.

::

    rpg sample results/digits/generator/cnn_m -n 3 -o x/     # 3 models (seeds 0, 1, 2), batched, progress bar
    rpg inspect x/model_000.safetensors [--evaluate]        # architecture, parameters, provenance, metrics
    rpg export x/model_000.safetensors -o my_model/         # config.json + model.safetensors + README.md
    rpg prompt "tell the even digits from the odd ones"     # the task vector of a sentence

Bad input (a missing folder, a file of another architecture, a generator without its token store, a file that is
not safetensors) prints one line naming the file and the problem, and exits with status 2.

``sample`` and ``inspect --evaluate`` read the pipeline config for the settings of the generator's (or file's)
experiment and zoo: ``--config``, else ``config.yaml`` in the working directory when it defines them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rpg.config import ConfigError
from rpg.errors import RPGInputError

DEFAULT_CONFIG = "config.yaml"


def _config_for(path: str | Path, explicit: str | None) -> str | None:
    """The pipeline config to read: ``--config``, else ./config.yaml when it defines the experiment and zoo of the
    results tree ``path`` lies in."""
    if explicit is not None:
        return explicit
    from rpg.hub import pipeline_location

    loc = pipeline_location(path)
    default = Path(DEFAULT_CONFIG)
    if loc is None or not default.is_file():
        return None
    import yaml

    try:
        raw = yaml.safe_load(default.read_text()) or {}
        zoos = raw["experiments"][loc[1]]["zoos"]
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    return str(default) if isinstance(zoos, dict) and loc[2] in zoos else None


def cmd_sample(args: argparse.Namespace) -> int:
    from rpg.api import load_generator

    config = _config_for(args.generator, args.config)
    gen = load_generator(args.generator, tokens=args.tokens, settings=config, device=args.device or "auto")
    changes = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps)) if v is not None}
    if changes:
        gen.settings = gen.settings.replace(**changes)
    where = f"{config} (experiment and zoo of {args.generator})" if config else "defaults"
    print(f"sampling {args.n} models from {args.generator} with {gen.settings.sampler}-{gen.settings.steps} "
          f"(settings: {where}), seeds {args.seed}..{args.seed + args.n - 1}", file=sys.stderr)  # fmt: skip
    paths = gen.sample(indices=range(args.first, args.first + args.n), seed=args.seed, batch_size=args.batch_size,
                       state=args.state, task=args.task, prompt=args.prompt, out_dir=args.out)  # fmt: skip
    for p in paths:
        print(p)
    return 0


def _fmt(x: Any, digits: int = 4) -> str:
    return "n/a" if x is None else f"{float(x):.{digits}f}"


def _interval(block: dict[str, Any] | None) -> str:
    if not block or block.get("mean") is None:
        return "n/a"
    ci = block.get("ci95")
    return f"mean {_fmt(block['mean'])}" + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "") + (
        f" over {block['n']}" if block.get("n") else "")  # fmt: skip


def _print_model(info: dict[str, Any]) -> None:
    prov = info["provenance"]
    print(info["path"])
    print(f"  kind          {info['kind'] or 'n/a'}")
    print(f"  architecture  {info['arch']} {json.dumps(info['arch_kwargs'], sort_keys=True)}")
    print(f"  parameters    {info['parameters']:,} ({info['tensors']} state_dict entries)")
    if info["kind"] == "generated":
        print(f"  generator     {prov.get('generator', 'n/a')}")
        print(f"  seed          {prov.get('sample_seed', 'n/a')}, permutation state {prov.get('state', 'n/a')}, "
              f"{prov.get('sampler', '?')}-{prov.get('sampling_steps', '?')}")  # fmt: skip
        if prov.get("task") is not None:
            print(f"  task          {''.join(map(str, prov['task']))}")
    else:
        rest = {k: v for k, v in prov.items() if k != "kind"}
        shown = ", ".join(f"{k} {round(v, 4) if isinstance(v, float) else v}" for k, v in rest.items())
        print(f"  provenance    {shown or 'n/a'}")
    ev = info["evaluation"]
    if ev and ev.get("score") is not None:
        metric = ev.get("metric", "score")
        print(f"  test {metric:<9}{_fmt(ev['score'])} (evaluation {ev.get('table', 'n/a')})")
        print(f"  originals     {_interval(ev.get('original'))}")
        print(f"  generated     {_interval(ev.get('generated'))}")
        print(f"  similarity    {_fmt(ev.get('similarity'))} (max IoU of failure sets vs the originals)")
        print(f"  nearest       {_fmt(ev.get('nearest_distance'))} (RMS distance to the nearest original)")
    elif "evaluated_now" not in info:
        print("  metrics       none known: no evaluation of the pipeline scored this file "
              "(`rpg inspect FILE --evaluate` scores it on the test split)")  # fmt: skip


def _print_generator(path: Path) -> None:
    from rpg.io import read_json
    from rpg.tokens.store import TokenStore

    cfg = read_json(path / "config.json")
    gcfg, tcfg = cfg.get("generator") or {}, cfg.get("train") or {}
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        params = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys() if not k.startswith(("ema.", "layout.")))
    meta = cfg.get("tokens_meta") or {}
    print(path)
    print("  kind          generator")
    print(f"  makes         {meta.get('arch')} {json.dumps(meta.get('arch_kwargs') or {}, sort_keys=True)}")
    print(f"  backbone      {gcfg.get('backbone')} width {gcfg.get('dim')}; {params:,} parameters")
    task = f"; task-conditioned ({gcfg['task_condition']})" if gcfg.get("task_condition") else ""
    print(f"  tokens        {cfg.get('num_tokens')} x {cfg.get('token_size')}; {cfg.get('num_states')} permutation "
          f"states{task}")  # fmt: skip
    print(f"  training      {tcfg.get('steps')} steps, final loss {_fmt(cfg.get('final_loss'), 5)}")
    try:
        from rpg.api import find_token_store

        store = find_token_store(path, cfg)
        print(f"  token store   {store} ({len(TokenStore(store))} checkpoints)")
    except RPGInputError as exc:
        print(f"  token store   missing ({exc.problem})")


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def cmd_inspect(args: argparse.Namespace) -> int:
    from rpg.hub import describe

    path = Path(args.path)
    if path.is_dir() and (path / "config.json").is_file():
        from rpg.io import read_json

        if "generator" in (read_json(path / "config.json") or {}):
            _print_generator(path)
            return 0
    if not path.exists():
        raise RPGInputError("file does not exist", path)
    info = describe(path)
    if args.evaluate:
        from rpg.api import evaluate_model

        near = info["provenance"].get("generator") or path
        config = _config_for(near, args.config) or _config_for(path, args.config)
        if config is None:
            raise RPGInputError("--evaluate needs the pipeline config that names the zoo's data (--config FILE; "
                                f"no {DEFAULT_CONFIG} here defines it)", path)  # fmt: skip
        metrics = evaluate_model(path, config, args.split, experiment=args.experiment, zoo=args.zoo)
        info["evaluated_now"] = {"config": config, "split": args.split, "metrics": metrics}
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True, default=str))
        return 0
    _print_model(info)
    if "evaluated_now" in info:
        now = info["evaluated_now"]
        for k, v in now["metrics"].items():
            print(f"  {now['split']} {k:<9}{_fmt(v)} (evaluated now; data of {now['config']})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rpg.api import export_model

    out = export_model(args.path, args.out)
    print(out)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rpg", description="Use what the RPG pipeline made: sample, inspect and export "
                                "models, and turn a prompt into a task vector.")  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample", help="sample models from a trained generator")
    s.add_argument("generator", help="the generator folder, e.g. results/digits/generator/cnn_m")
    s.add_argument("-n", type=int, default=1, help="number of models (default 1)")
    s.add_argument("-o", "--out", required=True, help="output folder (model_<iii>.safetensors)")
    s.add_argument("--seed", type=int, default=0, help="model i uses seed SEED + i (default 0)")
    s.add_argument("--first", type=int, default=0, help="index of the first model (default 0)")
    s.add_argument("--batch-size", type=int, default=None, help="models sampled together (the weights do not change)")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or auto")
    s.add_argument("--state", type=int, default=None, help="permutation state (default: drawn from each seed)")
    task = s.add_mutually_exclusive_group()
    task.add_argument("--task", default=None, help="task vector of a task-conditioned generator, e.g. 1010000001")
    task.add_argument("--prompt", default=None, help="a sentence, turned into the task vector (needs the config)")
    s.add_argument("--tokens", default=None, help="the generator's token store (default: found from its folder)")
    s.add_argument("--config", default=None, help=f"pipeline config for the generate settings (default: "
                   f"{DEFAULT_CONFIG} here, when it defines the generator's experiment and zoo)")  # fmt: skip
    s.add_argument("--sampler", choices=("ddim", "ddpm"), default=None, help="override the config's sampler")
    s.add_argument("--steps", type=int, default=None, help="override the config's sampling steps")
    s.set_defaults(func=cmd_sample)

    i = sub.add_parser("inspect", help="architecture, parameters, provenance and metrics of a model or generator")
    i.add_argument("path", help="a .safetensors model file, an exported model folder or a generator folder")
    i.add_argument("--evaluate", action="store_true", help="score the model on the test split now")
    i.add_argument("--split", default="test", choices=("train", "val", "test", "probe"))
    i.add_argument("--config", default=None, help=f"pipeline config naming the data (default: {DEFAULT_CONFIG})")
    i.add_argument("--experiment", default=None)
    i.add_argument("--zoo", default=None)
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_inspect)

    e = sub.add_parser("export", help="export a model file as a model folder (config.json, weights, model card)")
    e.add_argument("path", help="a generated model or checkpoint (.safetensors)")
    e.add_argument("-o", "--out", required=True, help="the folder to write")
    e.set_defaults(func=cmd_export)

    sub.add_parser("prompt", add_help=False, help="the task vector of a sentence (rpg prompt --help)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: bad input, with one line naming the file)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "prompt":
        from rpg.prompt import main as prompt_main

        return _guarded(lambda: prompt_main(argv[1:], prog="rpg prompt"))
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if getattr(args, "n", 1) < 1:
        return _error("-n must be at least 1")
    return _guarded(lambda: args.func(args))


def _error(message: str) -> int:
    print(f"rpg: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def _guarded(run) -> int:
    try:
        return int(run() or 0)
    except (RPGInputError, ConfigError) as exc:
        return _error(str(exc))
    except FileNotFoundError as exc:
        return _error(f"{exc.filename}: file does not exist" if exc.filename else str(exc))


if __name__ == "__main__":
    sys.exit(main())
