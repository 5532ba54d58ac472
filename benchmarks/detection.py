"""Detection check: COCO box mAP of the original and the generated detectors of a zoo on the test split, and the time
of each stage of the run that made them.

Run the preset (at least up to generation), then this script in the same working directory:

    snakemake --cores 2 --configfile configs/detection_digits.yaml
    python benchmarks/detection.py --configfile configs/detection_digits.yaml

Scores every checkpoint of every run and every generated model with the detection evaluator (the same one the
evaluation stage uses), and writes ``benchmarks/results/<experiment>_<zoo>.csv`` (a row per model) and ``.md``
(best / mean / min per kind, the gap of the generated mean to the originals' mean in mAP points, and each stage's
wall and CPU seconds from Snakemake's benchmark files).

Table: docs/detection.md, the table at the top (generated block bench.detection_digits_fcos), from the two
commands above.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from rpg.config import zoo_settings
from rpg.evaluate.detection import DetectionEvaluator
from rpg.stages.collect import run_checkpoints
from rpg.stages.generate import batch_models
from rpg.zoo import build_model, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results"
STAGES = ("collect", "tokenize", "train", "generate", "evaluate")


def score(evaluator: DetectionEvaluator, path: Path, split: str) -> dict:
    state, meta = load_checkpoint(path)
    model = build_model(meta["arch"], meta["arch_kwargs"])
    model.load_state_dict(state, strict=True)
    outcome = evaluator.evaluate(model, split)
    return {**outcome.metrics, "missed": int(outcome.failures.sum()), "objects": len(outcome.failures)}


def markdown(df: pd.DataFrame) -> str:
    """A GitHub table (no tabulate dependency)."""
    cols = [str(c) for c in df.columns]
    rows = [" | ".join(str(v) for v in row) for row in df.itertuples(index=False)]
    return "\n".join([" | ".join(cols), " | ".join("---" for _ in cols), *rows])


def stage_times(bench_dir: Path) -> pd.DataFrame:
    rows = []
    for stage in STAGES:
        files = sorted((bench_dir / stage).rglob("*.tsv")) if (bench_dir / stage).is_dir() else []
        if not files:
            continue
        tables = pd.concat([pd.read_csv(f, sep="\t") for f in files])
        rows.append({"stage": stage, "jobs": len(files), "wall_s (longest job)": round(float(tables["s"].max()), 1),
                     "cpu_s (all jobs)": round(float(tables["cpu_time"].sum()), 1)})  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", required=True)
    parser.add_argument("--experiment", default=None, help="default: the config's first experiment")
    parser.add_argument("--zoo", default=None, help="default: the experiment's first zoo")
    parser.add_argument("--split", default="test")
    parser.add_argument("--workdir", default=".", help="the Snakemake working directory holding results/")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = yaml.safe_load(Path(args.configfile).read_text())
    config_name = Path(args.configfile).resolve()
    config_name = config_name.relative_to(ROOT) if config_name.is_relative_to(ROOT) else args.configfile
    exp = args.experiment or next(iter(config["experiments"]))
    zoo = args.zoo or next(iter(config["experiments"][exp]["zoos"]))
    settings = zoo_settings(config, exp, zoo)
    base = Path(args.workdir) / "results" / exp
    evaluator = DetectionEvaluator(data=settings.data, device="cpu", batch_size=settings.evaluate.batch_size)
    runs = sorted((base / "zoo" / zoo).glob("run*"), key=lambda p: int(p.name[3:]))
    models = [("original", p) for p in run_checkpoints(runs)]
    models += [("generated", p) for p in batch_models(sorted((base / "generated" / zoo).glob("batch*")))]
    rows, start = [], time.time()
    for kind, path in models:
        rows.append({"kind": kind, "model": f"{path.parent.name}/{path.stem}", **score(evaluator, path, args.split)})
        print(f"{rows[-1]['model']}: mAP {rows[-1]['mAP']:.4f}", flush=True)
    table = pd.DataFrame(rows)
    n_gen = int((table["kind"] == "generated").sum())
    originals = table[table["kind"] == "original"]
    if 0 < n_gen < len(originals):  # equal footing: as many originals as generated models (seeded subsample)
        equal = originals.sample(n=n_gen, random_state=0).assign(kind=f"original (seeded {n_gen} of {len(originals)})")
        table_n = pd.concat([table.assign(kind=table["kind"].replace({"original": "original (all)"})), equal])
    else:
        table_n = table
    summary = (
        table_n.groupby("kind", sort=False)["mAP"].agg(["count", "max", "mean", "min"]).rename(columns={"max": "best"})
    )
    summary[["best", "mean", "min"]] = (100 * summary[["best", "mean", "min"]]).round(2)
    reference = summary.index[-1] if len(table_n) > len(table) else "original"
    gap = summary.loc["generated", "mean"] - summary.loc[reference, "mean"] if "generated" in summary.index else None
    OUT.mkdir(exist_ok=True)
    stem = OUT / f"{exp}_{zoo}"
    table.to_csv(f"{stem}.csv", index=False)
    lines = [f"# {exp} / {zoo}: box mAP@[.5:.95] on the {args.split} split (points)", "",
             f"Written by `python benchmarks/detection.py --configfile {config_name}` "
             f"({len(table)} models scored in {time.time() - start:.0f} s).", "",
             markdown(summary.reset_index()), ""]  # fmt: skip
    if gap is not None:
        lines += [f"Generated mean - originals' mean (equal n): {gap:+.2f} mAP points.", ""]
    summary_path = base / "evaluation" / zoo / "summary.json"
    if summary_path.is_file():  # novelty of the same generated models, from the evaluation stage
        s = json.loads(summary_path.read_text())
        div, nov = s["generated_diversity"], s["novelty"]
        lines += [f"Evaluation stage (`{summary_path.relative_to(Path(args.workdir))}`): {div['distinct']} of "
                  f"{div['n']} generated detectors distinct; {nov['generated_copies']} copies; distance to the nearest "
                  f"original {nov['generated_nearest_distance']['mean']:.4f} (mean; originals to their nearest other: "
                  f"{nov['original_nearest_other_distance']['mean']:.4f}); generated beat the noise frontier at equal "
                  f"similarity: {s['checks']['generated_beats_noise_at_equal_similarity']}.", ""]  # fmt: skip
    times = stage_times(base / "benchmarks")
    if len(times):
        lines += ["Stage times of the run (Snakemake benchmark files):", "", markdown(times), ""]
    Path(f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
