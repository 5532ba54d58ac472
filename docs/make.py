"""Write every figure of README.md and docs/*.md from measured data: nothing in them is typed by hand.

Generated blocks sit between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` markers; this script replaces
their contents. The data: ``docs/data/*.json`` (summaries that ``benchmarks/seeds.py`` copies from results/) and the
benchmark tables in ``benchmarks/results/*.md`` (written by the benchmark scripts).

    python docs/make.py            # rewrite the generated blocks
    python docs/make.py --check    # exit 1 if a block differs from what the data gives (a test runs this)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "data"
BENCH = ROOT / "benchmarks" / "results"
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _mean_sd(values: list[float | None], fmt: Callable[[float], str]) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    if len(v) == 1:
        return fmt(v[0])
    return f"{fmt(float(np.mean(v)))} ± {fmt(float(np.std(v, ddof=1)))}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def _seeds(name: str = "default_seeds") -> dict:
    path = DATA / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


FAMILIES = (("noise", "noise"), ("interpolation", "interpolation"), ("gaussian", "per-run Gaussian"))


def _claim(s: dict, family: str) -> str | None:
    """The three-valued verdict of one frontier check in a summary (None: the summary predates it)."""
    value = s["checks"].get(f"generated_beats_{family}_at_equal_similarity")
    if isinstance(value, bool):  # a summary of the old point comparison
        return None
    return value


def _claims_over_seeds(summaries: list[dict], family: str) -> str:
    verdicts = [_claim(s, family) for s in summaries]
    if any(v is None for v in verdicts):
        return "-"
    cell = f"pass on {verdicts.count('pass')} of {len(verdicts)}"
    rest = {v: verdicts.count(v) for v in dict.fromkeys(verdicts) if v != "pass"}
    return cell + (f" ({', '.join(f'{k} {n}' for k, n in rest.items())})" if rest else "")


def _margin(s: dict, family: str) -> str:
    """Margin of the generated mean over a frontier, in points, with its 95% interval, and the verdict."""
    block = (s.get("frontiers") or {}).get(family)
    if not block:
        old = s["checks"].get(f"generated_beats_{family}_at_equal_similarity")
        return "-" if old is None else f"point: {'yes' if old else 'no'}"
    if block.get("margin") is None:
        return _claim(s, family) or "-"
    lo, hi = block["ci95"] or (None, None)
    interval = "" if lo is None else f" [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    return f"{100 * block['margin']:+.2f}{interval} {_claim(s, family)}"


def default_results() -> str:
    """README: the default pipeline over its seeds, per zoo, as mean ± sd over seeds, and each frontier claim as
    the number of seeds on which its 95% interval decides it."""
    data = _seeds()
    if not data:
        return "_No measured data yet: run `python benchmarks/seeds.py` (writes docs/data/default_seeds.json)._\n"
    seeds = sorted(data["runs"])
    zoos = list(data["runs"][seeds[0]]["zoos"])
    pct = lambda x: f"{100 * x:.2f}"  # noqa: E731
    num = lambda x: f"{x:.3f}"  # noqa: E731
    lines = [
        "| zoo | originals: acc. mean % | generated: acc. mean % | best % | min % | distinct of n | similarity "
        "(originals / generated) | copies | undominated generated models | beats noise | beats interpolation | "
        "beats per-run Gaussian |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for zoo in zoos:
        s = [data["runs"][k]["zoos"][zoo] for k in seeds]
        n = s[0]["generated"]["n"]
        undominated = [(x.get("dominance") or {}).get("undominated") for x in s]
        lines.append(
            f"| {zoo} | {_mean_sd([x['original']['score']['mean'] for x in s], pct)} "
            f"| {_mean_sd([x['generated']['score']['mean'] for x in s], pct)} "
            f"| {_mean_sd([x['generated']['score']['best'] for x in s], pct)} "
            f"| {_mean_sd([x['generated']['score']['min'] for x in s], pct)} "
            f"| {_mean_sd([x['generated_diversity']['distinct'] for x in s], lambda v: f'{v:.1f}')} of {n} "
            f"| {_mean_sd([x['original_all']['similarity']['mean'] for x in s], num)} / "
            f"{_mean_sd([x['generated']['similarity']['mean'] for x in s], num)} "
            f"| {sum(x['generated']['copies'] for x in s)} "
            f"| {_mean_sd(undominated, lambda v: f'{v:.1f}')} of {n} "
            + "".join(f"| {_claims_over_seeds(s, family)} " for family, _ in FAMILIES)
            + "|"
        )
    walls = [data["runs"][k]["wall_seconds"] for k in seeds]
    cpus = [data["runs"][k].get("cpu_seconds") for k in seeds]
    refresh = [data["runs"][k].get("refresh_seconds") for k in seeds]
    lines += [
        "",
        f"- {len(seeds)} seeds of the whole default pipeline (`seed` {', '.join(seeds)}: collection, training, "
        f"generation and evaluation all reseeded), mean ± sd over seeds; {n} generated models per zoo and seed, "
        f"originals over the same n (a subsample spread over runs); accuracy on the test split "
        f"({data.get('test_size', '?')} images), similarity on the probe split.",
        '- Each "beats" column counts the seeds on which the 95% bootstrap interval of the margin (generated mean '
        "accuracy minus the baseline's frontier at the generated mean similarity; generated models, baseline models "
        "and test images resampled) lies above 0 (pass), below 0 (fail), or includes 0 (undecided). Undominated: "
        "generated models that no baseline model matches in accuracy at a lower similarity.",
        f"- Measured on {data.get('machine', 'this machine')}. Wall time of `snakemake --cores 2` per seed: "
        f"{_mean_sd(walls, _minutes)} min"
        + (f"; {data['load']}" if data.get("load") else "")
        + "; CPU time of all jobs, summed (Snakemake's benchmark files): "
        f"{_mean_sd(cpus, _minutes)} min"
        + (
            f" (the evaluation and report were rerun after the runs with this version's baselines, "
            f"{_mean_sd(refresh, _minutes)} min of wall time per seed; the CPU time counts them)"
            if any(r is not None for r in refresh)
            else ""
        )
        + ". The runs are bit-identical when repeated on one machine; on another CPU the floating-point results "
        "differ, and the figures move within the seeds' spread.",
    ]
    return "\n".join(lines) + "\n"


def seed_details(name: str = "default_seeds") -> str:
    """docs/results.md: every seed and zoo in full (``docs/data/<name>.json``, written by benchmarks/seeds.py)."""
    data = _seeds(name)
    if not data:
        return "_No measured data yet (python benchmarks/seeds.py)._\n"
    lines = [
        "| seed | zoo | originals (n) best / mean / min % | generated (n) best / mean / min % | 95% interval of the "
        "generated mean | distinct / groups | pairwise sim. | sim. orig. / gen. | nearest dist. gen. (orig.) | "
        "other-run dist. gen. | margin over noise, points [95%] | over interpolation | over per-run Gaussian | "
        "undominated | p-diff mean % (sim.) | not copies, resolution |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed in sorted(data["runs"]):
        for zoo, s in data["runs"][seed]["zoos"].items():
            o, g, d = s["original"], s["generated"], s["generated_diversity"]
            ci = (g["score"].get("ci95") or {}).get("mean") or [None, None]
            p = s.get("pdiff")
            pd_cell = "-" if not p else f"{_pct(p['score']['mean'])} ({p['similarity']['mean']:.3f})"
            c = s["checks"]
            marks = ", ".join({True: "pass", False: "FAIL", None: "n/a"}[c[k]] for k in ("generated_not_copies",
                                                                                         "resolution_ok"))  # fmt: skip
            dom = s.get("dominance")
            dom_cell = "-" if not dom else f"{dom['undominated']} of {dom['n']}"
            lines.append(
                f"| {seed} | {zoo} | ({o['n']}) {_pct(o['score']['best'])} / {_pct(o['score']['mean'])} / "
                f"{_pct(o['score']['min'])} | ({g['n']}) {_pct(g['score']['best'])} / {_pct(g['score']['mean'])} / "
                f"{_pct(g['score']['min'])} | {_pct(ci[0])}..{_pct(ci[1])} | {d['distinct']} / {d['clusters']} | "
                f"{_fmt(d.get('pairwise_similarity_mean'))} | {_fmt(s['original_all']['similarity']['mean'])} / "
                f"{_fmt(g['similarity']['mean'])} | {_fmt(g['distance']['mean'])} "
                f"({_fmt(s['original_all']['distance']['mean'])}) | {_fmt(g['loro_distance']['mean'])} | "
                + " | ".join(_margin(s, family) for family, _ in FAMILIES)
                + f" | {dom_cell} | {pd_cell} | {marks} |"
            )
    if name != "default_seeds":  # a recipe beside the default: say what it was and how long it took
        walls = ", ".join(_minutes(data["runs"][k]["wall_seconds"]) for k in sorted(data["runs"]))
        lines.append(f"\n- Wall time of `snakemake --cores 2` per seed: {walls} min ({data.get('load', '')}).")
        lines.append(
            "- Measured with the point comparison of the time (a margin without an interval): the "
            '"point" cells say whether the generated mean was at or above the noise frontier.'
        )
        for zoo, block in (data.get("config") or {}).get("zoos", {}).items():
            lines.append(f"- {zoo}: `{json.dumps(block, sort_keys=True)}`")
        if (data.get("config") or {}).get("shared"):
            lines.append(f"- every zoo: `{json.dumps(data['config']['shared'], sort_keys=True)}`")
    return "\n".join(lines) + "\n"


def side_by_side(names: tuple[str, str], labels: tuple[str, str], how: str,
                 again: tuple[tuple[str, str], str] | None = None) -> str:  # fmt: skip
    """docs/results.md: the default pipeline with two recipes (e.g. fixed steps and ``train.steps: auto``), the same
    seeds on one machine (``docs/data/<name>.json``, each written by benchmarks/seeds.py); ``how``: when they ran.
    ``again``: (names, how) of a second round of the same runs, whose wall times are added (its results are the
    first round's when the runs are bit-identical; the line says whether they are)."""
    runs = {name: _seeds(name) for name in names}
    if not all(runs.values()):
        return f"_Not measured yet: docs/data/{names[0]}.json and {names[1]}.json (python benchmarks/seeds.py)._\n"
    seeds = sorted(set.intersection(*(set(d["runs"]) for d in runs.values())), key=int)
    if not seeds:
        return "_No seed measured with both recipes._\n"
    lines = [
        "| recipe | zoo | steps run / kept, per seed | originals: acc. mean % | generated: acc. mean % | distinct of n "
        "| copies |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, data in zip(labels, runs.values()):
        zoos = data["runs"][seeds[0]]["zoos"]
        for zoo in zoos:
            s = [data["runs"][k]["zoos"][zoo] for k in seeds]
            trained = [x.get("training", {}) for x in s]
            steps = ", ".join(f"{t.get('steps_run', '?')} / {t.get('kept_step', '?')}" for t in trained)
            lines.append(
                f"| {label} | {zoo} | {steps} | {_mean_sd([x['original']['score']['mean'] for x in s], _pct)} "
                f"| {_mean_sd([x['generated']['score']['mean'] for x in s], _pct)} "
                f"| {_mean_sd([x['generated_diversity']['distinct'] for x in s], lambda v: f'{v:.1f}')} of "
                f"{s[0]['generated_diversity']['n']} | {sum(x['generated']['copies'] for x in s)} |"
            )
    walls = {n: [d["runs"][k]["wall_seconds"] for k in seeds] for n, d in runs.items()}
    cpus = {n: [d["runs"][k].get("cpu_seconds") for k in seeds] for n, d in runs.items()}
    a, b = names
    x, y = labels
    ratio = [v / u for u, v in zip(walls[a], walls[b])]

    lines += [
        "",
        f"- {'Seeds' if len(seeds) > 1 else 'Seed'} {', '.join(seeds)}, each recipe run by `python "
        f"benchmarks/seeds.py` (`--forceall`, `snakemake --cores 2`) on {runs[a].get('machine', 'one machine')}, "
        f"{how}; test split, equal n" + ("; mean ± sd over seeds." if len(seeds) > 1 else "."),
        f"- Wall time of the whole pipeline per seed, {x}: {', '.join(map(_minutes, walls[a]))} min; "
        f"{y}: {', '.join(map(_minutes, walls[b]))} min; {y} / {x} per seed: "
        f"{', '.join(f'{r:.2f}' for r in ratio)} (median {float(np.median(ratio)):.2f}). CPU time of all jobs, "
        f"summed: {x} {_mean_sd(cpus[a], _minutes)} min, {y} {_mean_sd(cpus[b], _minutes)} min.",
    ]
    if len(ratio) > 1:
        lines.append(f"- {y} / {x}: {_ratio_interval(ratio)}.")
    per = {n: [d["runs"][k].get("job_seconds") for k in seeds] for n, d in runs.items()}
    if all(all(js) for js in per.values()):  # where the time went: each zoo's training and evaluation job
        cells = [
            f"{zoo} {stage} {', '.join(str(j[f'{stage}/{zoo}']) for j in per[a])} / "
            f"{', '.join(str(j[f'{stage}/{zoo}']) for j in per[b])}"
            for zoo in runs[a]["runs"][seeds[0]]["zoos"]
            for stage in ("train", "evaluate")
            if all(f"{stage}/{zoo}" in j for n in names for j in per[n])
        ]
        lines.append(f"- Wall seconds of single jobs per seed ({x} / {y}): {'; '.join(cells)}.")
    if again is not None:
        lines.append(_again(runs, again, seeds, labels, ratio))
    for label, data in zip(labels, runs.values()):
        shared = (data.get("config") or {}).get("shared", {})
        for block in ("generator", "train"):
            if block in shared:
                lines.append(f"- {label}, `{block}`: `{json.dumps(shared[block], sort_keys=True)}`")
    return "\n".join(lines) + "\n"


def _ratio_interval(ratio: list[float]) -> str:
    """The geometric mean of per-seed wall-time ratios with its 95% interval and one-sided 95% upper bound (Student t
    over the log ratios, n - 1 degrees of freedom): an upper bound below 1 says "faster", above 1 "not shown"."""
    from scipy import stats

    logs = np.log(ratio)
    n, mean = len(logs), float(np.mean(logs))
    se = float(np.std(logs, ddof=1)) / np.sqrt(n)
    two, one = (float(stats.t.ppf(q, n - 1)) for q in (0.975, 0.95))
    return (
        f"geometric mean of the per-seed ratios {np.exp(mean):.2f}, 95% interval {np.exp(mean - two * se):.2f}.."
        f"{np.exp(mean + two * se):.2f}, one-sided 95% upper bound {np.exp(mean + one * se):.2f} (Student t over "
        f"the {n} log ratios)"
    )


def _again(first: dict[str, dict], again: tuple[tuple[str, str], str], seeds: list[str], labels: tuple[str, str],
           ratio: list[float]) -> str:  # fmt: skip
    """side_by_side's line on a second round of the same runs: its wall times, and the median ratio of both rounds."""
    (a, b), how = again
    runs = {a: _seeds(a), b: _seeds(b)}
    seeds = [k for k in seeds if all(runs.values()) and all(k in d["runs"] for d in runs.values())]
    if not seeds:
        return f"- Second round ({how}): not measured yet (docs/data/{a}.json and {b}.json)."
    walls = [[d["runs"][k]["wall_seconds"] for k in seeds] for d in runs.values()]
    again_ratio = [v / u for u, v in zip(*walls)]

    def scores(data: dict) -> list:
        return [[z["generated"]["score"]["mean"] for z in data["runs"][k]["zoos"].values()] for k in seeds]

    same = all(scores(new) == scores(old) for new, old in zip(runs.values(), first.values()))
    x, y = labels
    return (
        f"- Again, {how}, {'seeds' if len(seeds) > 1 else 'seed'} {', '.join(seeds)}: wall per seed, {x}: "
        f"{', '.join(map(_minutes, walls[0]))} min; {y}: "
        f"{', '.join(map(_minutes, walls[1]))} min; {y} / {x}: {', '.join(f'{r:.2f}' for r in again_ratio)}; the "
        f"generated models' accuracies {'identical to' if same else 'NOT identical to'} the first round's. Median "
        f"{y} / {x} over the {len(ratio) + len(again_ratio)} pairs of both rounds: "
        f"{float(np.median(ratio + again_ratio)):.2f}."
    )


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def bench(name: str) -> Callable[[], str]:
    """A benchmark table as its script wrote it (benchmarks/results/<name>.md)."""

    def render() -> str:
        path = BENCH / f"{name}.md"
        if not path.is_file():
            return f"_Not measured yet: benchmarks/results/{name}.md is missing._\n"
        return path.read_text().rstrip("\n") + "\n"

    return render


RENDERERS: dict[str, Callable[[], str]] = {
    "default-results": default_results,
    "seed-details": seed_details,
    "seed-details.narrow": lambda: seed_details("narrow_recipe_seeds"),
    "seed-details.t100": lambda: seed_details("narrow_t100_recipe_seeds"),
    "default-fixed-vs-auto": lambda: side_by_side(
        ("default_fixed_seeds", "default_auto_seeds"),
        ("fixed", "auto"),
        "the two recipes of a seed one after the other on the otherwise idle machine",
    ),
    "default-fixed-vs-overlap": lambda: side_by_side(
        ("default_fixed_seeds_r1", "default_overlap_seeds_r1"),
        ("fixed", "auto"),
        "the two recipes of a seed one after the other (fixed first) on the otherwise idle machine",
        again=(("default_fixed_seeds_r2", "default_overlap_seeds_r2"), "the same runs, the auto recipe first"),
    ),
    "default-before-vs-after": lambda: side_by_side(
        ("default_before_fixed_seeds", "default_after_auto_seeds"),
        ("before, fixed", "now, auto"),
        "three runs a seed, in the order before / auto / fixed (seed 0), fixed / auto / before (1), auto / before / "
        "fixed (2), on the otherwise idle machine",
    ),
    "default-now-fixed-vs-auto": lambda: side_by_side(
        ("default_after_fixed_seeds", "default_after_auto_seeds"),
        ("now, fixed", "now, auto"),
        "the runs of the table above",
    ),
    "default-elu-before-vs-auto": lambda: side_by_side(
        ("default_elu_before_fixed_seeds", "default_elu_auto_seeds"),
        ("before, fixed", "now, auto"),
        "three runs a seed, in the order before / auto / fixed (seed 0), auto / fixed / before (1), fixed / before / "
        "auto (2), on the otherwise idle machine",
    ),
    "default-elu-before-vs-fixed": lambda: side_by_side(
        ("default_elu_before_fixed_seeds", "default_elu_fixed_seeds"),
        ("before, fixed", "now, fixed"),
        "the runs of the table above",
    ),
    "default-elu-fixed-vs-auto": lambda: side_by_side(
        ("default_elu_fixed_seeds", "default_elu_auto_seeds"),
        ("now, fixed", "now, auto"),
        "the runs of the table above",
    ),
    "default-paper-vs-coupled": lambda: side_by_side(
        ("default_fixed_seeds", "default_coupled_seeds"),
        ("paper", "coupled"),
        "the coupled runs one to two hours after the paper mode's (the fixed recipe's runs above) on the same, "
        "otherwise idle machine",
    ),
    **{f"bench.{p.stem}": bench(p.stem) for p in sorted(BENCH.glob("*.md"))},
}


def render(text: str) -> str:
    def sub(m: re.Match) -> str:
        name = m.group("name")
        renderer = RENDERERS.get(name) or (bench(name[len("bench.") :]) if name.startswith("bench.") else None)
        if renderer is None:
            raise SystemExit(f"unknown generated block {name!r}")
        return f"{m.group(1)}{renderer()}{m.group(4)}"

    return BLOCK.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a generated block is out of date")
    args = p.parse_args(argv)
    stale = []
    for path in FILES:
        if not path.is_file():
            continue
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("out of date (run python docs/make.py):", ", ".join(str(p.relative_to(ROOT)) for p in stale))
        return 1
    print("written:" if stale else "up to date:", ", ".join(str(p.relative_to(ROOT)) for p in stale) or "all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
