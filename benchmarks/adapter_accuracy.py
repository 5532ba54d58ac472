"""Test accuracy of an adapter experiment's originals and generated adapters, with the adapter evaluator.

    python benchmarks/adapter_accuracy.py --configfile configs/adapters_minilm.yaml      # after the pipeline ran

For every adapter zoo of the config whose checkpoints and generated models exist under ``--results``: accuracy on
the test split (and val) of every original checkpoint (all runs) and of every generated adapter, evaluated by
:class:`rpg.adapters.evaluate.AdapterEvaluator` (the same code the evaluation stage uses for adapter zoos), as
best / mean / min, plus the number of distinct generated adapters (by their test predictions) and the wall time.
Writes ``benchmarks/results/adapter_accuracy.{json,md}`` and, from the jobs' benchmark files under ``results/``,
``benchmarks/results/adapter_times.md`` (time per stage); ``python docs/make.py`` puts both into docs/adapters.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def score_paths(paths, evaluator) -> list[dict]:
    from rpg.zoo.checkpoint import load_checkpoint
    from rpg.zoo.models import build_model

    rows = []
    for path in paths:
        state, meta = load_checkpoint(path)
        model = build_model(meta["arch"], meta["arch_kwargs"])
        model.load_state_dict(state, strict=True)
        test = evaluator.evaluate(model, "test")
        val = evaluator.evaluate(model, "val")
        rows.append({"path": str(path), "run": meta.get("run"), "test": test.score, "val": val.score,
                     "predictions": "".join(map(str, test.outputs.argmax(1).tolist()))})  # fmt: skip
    return rows


def stats(values: list[float]) -> dict:
    return {"n": len(values), "best": max(values), "mean": sum(values) / len(values), "min": min(values)}


def main() -> int:
    import torch
    import yaml

    from rpg.adapters.evaluate import AdapterEvaluator
    from rpg.config import resolve_config
    from rpg.io import write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", default=str(ROOT / "configs" / "adapters_minilm.yaml"))
    parser.add_argument("--results", default=str(ROOT / "results"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "adapter_accuracy"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    resolved = resolve_config(yaml.safe_load(Path(args.configfile).read_text()))
    out: dict = {"config": Path(args.configfile).name, "zoos": {}}
    for exp, zoos in resolved.items():
        for zoo, s in zoos.items():
            if s.adapter is None:
                continue
            base = Path(args.results) / exp
            originals = sorted((base / "zoo" / zoo).glob("run*/ckpt_*.safetensors"))
            generated = sorted((base / "generated" / zoo).glob("batch*/model_*.safetensors"))
            if not originals or not generated:
                print(f"{exp}/{zoo}: no checkpoints or generated adapters yet, skipped")
                continue
            start = time.perf_counter()
            evaluator = AdapterEvaluator(data=s.data, device="cpu", batch_size=256)
            rows = {"original": score_paths(originals, evaluator), "generated": score_paths(generated, evaluator)}
            entry = {"method": s.adapter.method, "task": s.data.task, "seconds": time.perf_counter() - start}
            for kind, r in rows.items():
                entry[kind] = {"test": stats([x["test"] for x in r]), "val": stats([x["val"] for x in r])}
            entry["generated"]["distinct"] = len({x["predictions"] for x in rows["generated"]})
            entry["rows"] = rows
            out["zoos"][f"{exp}/{zoo}"] = entry
            o, g = entry["original"]["test"], entry["generated"]["test"]
            print(
                f"{exp}/{zoo}: test accuracy originals {o['best']:.4f}/{o['mean']:.4f}/{o['min']:.4f}, generated "
                f"{g['best']:.4f}/{g['mean']:.4f}/{g['min']:.4f} ({entry['generated']['distinct']} distinct)"
            )
    write_json(out, Path(args.out).with_suffix(".json"))
    Path(args.out).with_suffix(".md").write_text(markdown(out))
    times = times_table(Path(args.results), list(resolved))
    Path(args.out).with_name("adapter_times.md").write_text(times)
    print(markdown(out) + "\n" + times)
    return 0


def times_table(results: Path, experiments: list[str]) -> str:
    """Wall and CPU seconds per stage, summed over the jobs of ``experiments`` (their benchmark files)."""
    import csv

    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for exp in experiments:
        for tsv in sorted((results / exp / "benchmarks").rglob("*.tsv")):
            stage = tsv.relative_to(results / exp / "benchmarks").parts[0]
            with tsv.open() as f:
                row = list(csv.DictReader(f, delimiter="\t"))[-1]
            wall[stage] = wall.get(stage, 0.0) + float(row["s"])
            cpu[stage] = cpu.get(stage, 0.0) + float(row["cpu_time"])
    lines = ["| stage | jobs' wall time, summed (s) | jobs' CPU time, summed (s) |", "|---|---|---|"]
    lines += [f"| {k} | {wall[k]:.0f} | {cpu[k]:.0f} |" for k in wall]
    lines.append(f"| all | {sum(wall.values()):.0f} | {sum(cpu.values()):.0f} |")
    return "\n".join(lines) + "\n"


def _bmm(s: dict) -> str:
    return f"{100 * s['best']:.1f} / {100 * s['mean']:.1f} / {100 * s['min']:.1f} (n={s['n']})"


def markdown(result: dict) -> str:
    lines = ["| zoo | method | originals test best / mean / min | generated test best / mean / min | "
             "mean difference | distinct generated |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, e in result["zoos"].items():
        o, g = e["original"]["test"], e["generated"]["test"]
        cells = [name, e["method"], _bmm(o), _bmm(g), f"{100 * (g['mean'] - o['mean']):+.1f}",
                 str(e["generated"]["distinct"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
