# Shared helpers: validated settings per (experiment, zoo) and the paths between stages.
from pathlib import Path

from rpg.config import ConfigError, resolve_config

try:
    SETTINGS = resolve_config(
        config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
    )
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration:\n{exc}") from None

PAIRS = [(exp, zoo) for exp, zoos in SETTINGS.items() for zoo in zoos]


wildcard_constraints:
    exp="[A-Za-z0-9][A-Za-z0-9_-]*",
    zoo="[A-Za-z0-9][A-Za-z0-9_-]*",
    run="[0-9]+",


def S(w):
    """Settings of the (experiment, zoo) named by a job's wildcards."""
    try:
        return SETTINGS[w.exp][w.zoo]
    except KeyError:
        raise WorkflowError(
            f"no zoo '{w.zoo}' in experiment '{w.exp}' of the configuration"
        ) from None


def run_checkpoints(exp, zoo, run):
    n = SETTINGS[exp][zoo]["collect"]["checkpoints"]
    return [
        f"results/{exp}/zoo/{zoo}/run{run}/ckpt_{i:03d}.safetensors" for i in range(n)
    ]


def zoo_checkpoints(w):
    if SETTINGS[w.exp][w.zoo].get("tasks"):
        return task_checkpoints(w.exp, w.zoo, "seen")  # workflow/rules/tasks.smk
    runs = range(SETTINGS[w.exp][w.zoo]["runs"])
    return [p for r in runs for p in run_checkpoints(w.exp, w.zoo, r)]


def generated_models(w):
    n = SETTINGS[w.exp][w.zoo]["generate"]["num_models"]
    return [
        f"results/{w.exp}/generated/{w.zoo}/model_{i:03d}.safetensors" for i in range(n)
    ]


def evaluation_dir(exp, zoo):
    """evaluation/<zoo>; for a task zoo evaluation/<zoo>/tasks (workflow/rules/tasks.smk)."""
    path = f"results/{exp}/evaluation/{zoo}"
    return f"{path}/tasks" if SETTINGS[exp][zoo].get("tasks") else path


def all_summaries():
    return [f"{evaluation_dir(exp, zoo)}/summary.json" for exp, zoo in PAIRS]


def count_rules(key):
    """Distinct values of a count setting, with the (exp, zoo) pairs using each.

    A rule's output list cannot depend on wildcards, so rules whose number of output files is configurable
    (checkpoints per run, generated models) are defined once per distinct count; with one count (the usual case)
    the rule keeps its plain name.
    """
    groups = {}
    for exp, zoo in PAIRS:
        block, name = key.split(".")
        groups.setdefault(SETTINGS[exp][zoo][block][name], []).append(zoo)
    return [
        (n, zoos, "" if len(groups) == 1 else f"_{n}")
        for n, zoos in sorted(groups.items())
    ]


def zoo_regex(zoos):
    return "|".join(sorted(set(zoos)))
