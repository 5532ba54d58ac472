"""Test accuracy, diversity and novelty of an adapter experiment's originals and generated adapters.

    python benchmarks/adapter_accuracy.py --configfile configs/adapters_minilm.yaml      # after the pipeline ran
    python benchmarks/adapter_accuracy.py --run --cores 2    # run the preset first (every job), timed end to end

For every adapter zoo of the config whose evaluation exists under ``--results``: the evaluation stage's summary
(``results/<exp>/evaluation/<zoo>/summary.json``, scored by :class:`rpg.adapters.evaluate.AdapterEvaluator`): test
accuracy best / mean / min of the generated adapters and of as many originals (the stage's seeded equal-n
subsample), how many generated adapters are distinct, copies, the distance to the nearest original against the
originals' spacing, and whether the generated adapters beat the noise frontier. Writes
``benchmarks/results/adapter_accuracy.{json,md}`` and, from the jobs' benchmark files under ``results/``,
``benchmarks/results/adapter_times.md`` (time per stage, and with ``--run`` the end-to-end wall time of
``snakemake --cores N --forceall`` with the load average before and after); ``python docs/make.py`` puts both into
docs/adapters.md.

Tables: docs/adapters.md, "Results (CPU preset)" (generated blocks bench.adapter_accuracy and
bench.adapter_times).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    import yaml

    from rpg.config import resolve_config
    from rpg.io import write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", default=str(ROOT / "configs" / "adapters_minilm.yaml"))
    parser.add_argument("--results", default=str(ROOT / "results"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "adapter_accuracy"))
    parser.add_argument("--run", action="store_true", help="run the whole preset (--forceall) first, timed")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--render", action="store_true", help="only rewrite the table from the stored JSON")
    args = parser.parse_args()
    if args.render:
        stored = json.loads(Path(args.out).with_suffix(".json").read_text())
        Path(args.out).with_suffix(".md").write_text(markdown(stored))
        return 0
    resolved = resolve_config(yaml.safe_load(Path(args.configfile).read_text()))
    out: dict = {"config": Path(args.configfile).name, "zoos": {}}
    previous = Path(args.out).with_suffix(".json")
    if args.run:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", str(args.cores),
               "--configfile", str(Path(args.configfile).resolve()), "--forceall"]  # fmt: skip
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=Path(args.results).resolve().parent, check=True)
        out["end_to_end"] = {"wall_seconds": round(time.perf_counter() - t0, 1), "cores": args.cores,
                             "cpu_count": os.cpu_count(), "load_before": round(load_before, 2),
                             "load_after": round(os.getloadavg()[0], 2)}  # fmt: skip
    elif previous.is_file():  # keep the last timed run's figure
        out["end_to_end"] = json.loads(previous.read_text()).get("end_to_end")
    for exp, zoos in resolved.items():
        for zoo, s in zoos.items():
            path = Path(args.results) / exp / "evaluation" / zoo / "summary.json"
            if s.adapter is None:
                continue
            if not path.is_file():
                print(f"{exp}/{zoo}: no evaluation yet ({path}), skipped")
                continue
            summary = json.loads(path.read_text())
            out["zoos"][f"{exp}/{zoo}"] = {
                "method": s.adapter.method,
                "task": s.data.task,
                **{
                    k: summary[k]
                    for k in (
                        "metric",
                        "original",
                        "generated",
                        "generated_diversity",
                        "novelty",
                        "resolution",
                        "frontiers",
                        "checks",
                    )  # fmt: skip
                    if k in summary
                },
            }
            print(markdown({"zoos": {f"{exp}/{zoo}": out["zoos"][f"{exp}/{zoo}"]}}).splitlines()[-1])
    write_json(out, Path(args.out).with_suffix(".json"))
    Path(args.out).with_suffix(".md").write_text(markdown(out))
    times = times_table(Path(args.results), list(resolved), out.get("end_to_end"))
    Path(args.out).with_name("adapter_times.md").write_text(times)
    print(markdown(out) + "\n" + times)
    return 0


def times_table(results: Path, experiments: list[str], end_to_end: dict | None = None) -> str:
    """Wall and CPU seconds per stage, summed over the jobs of ``experiments`` (their benchmark files), and the
    end-to-end wall time of the timed run."""
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
    if end_to_end:
        e = end_to_end
        lines.append(f"\nEnd to end (`snakemake --cores {e['cores']} --forceall`, {e['cpu_count']} cores): "
                     f"{e['wall_seconds'] / 60:.1f} min wall; load average {e['load_before']} before, "
                     f"{e['load_after']} after.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _bmm(block: dict) -> str:
    s = block["score"]
    return f"{100 * s['best']:.1f} / {100 * s['mean']:.1f} / {100 * s['min']:.1f}"


def _claim(e: dict) -> str:
    """The noise-frontier verdict; similarity without resolution (too few probe failures) decides nothing."""
    v = e["checks"]["generated_beats_noise_at_equal_similarity"]
    if isinstance(v, bool) or v is None:  # stored by the point comparison of an earlier version
        v = {True: "point: yes", False: "point: no", None: "not covered"}[v]
        if e["checks"].get("resolution_ok") is False:
            v = f"no resolution ({v})"
    return v


def markdown(result: dict) -> str:
    lines = ["| zoo | method | n | originals: test acc. best / mean / min % | generated: best / mean / min % | "
             "mean difference (points) | distinct generated | copies | nearest original: generated / originals' "
             "spacing | similarity resolution | beats noise |", "|---" * 11 + "|"]  # fmt: skip
    for name, e in result["zoos"].items():
        o, g, nov = e["original"], e["generated"], e["novelty"]
        res = e.get("resolution") or {}
        ok = e["checks"].get("resolution_ok")
        least = res.get("wrong_per_model_min")
        fails = "" if least is None else f", {least:.0f} probe failures"
        cells = [name, e["method"], f"{g['n']} / {o['n']}", _bmm(o), _bmm(g),
                 f"{100 * (g['score']['mean'] - o['score']['mean']):+.1f}",
                 f"{e['generated_diversity']['distinct']} of {e['generated_diversity']['n']}", str(g["copies"]),
                 f"{nov['generated_nearest_distance']['mean']:.4f} / "
                 f"{nov['original_nearest_other_distance']['mean']:.4f}",
                 {True: "yes", False: "no", None: "-"}[ok] + fails, _claim(e)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\n- Similarity resolution: whether every model fails at least `evaluate.min_probe_failures` (50) "
                 "probe sentences; where not, failure-set similarity cannot tell the models apart, and no frontier "
                 "claim is made (\"no resolution\"). \"point\": a verdict of the earlier point comparison, without "
                 "an interval.")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
