# Shared helpers: the typed settings of every (experiment, zoo), each rule's params, and the paths between stages.
from pathlib import Path
from types import SimpleNamespace

from rpg.config import ConfigError, resolve_config
from rpg.stages.checks import check_settings
from rpg.stages.collect import source_runs
from rpg.stages.params import stage_params
from rpg.stages.prompt import prompt_zoo, prompts_of
from rpg.stages.workflow import missing_intermediates
from rpg.tasks.plan import plan_task_zoo

try:
    SETTINGS = resolve_config(config)
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration:\n{exc}") from None
_problems = check_settings(SETTINGS)
if _problems:
    raise WorkflowError("invalid configuration:\n" + "\n".join(_problems))

PAIRS = [(exp, zoo) for exp, zoos in SETTINGS.items() for zoo in zoos]

# bring-your-own zoos: their runs, listed once at start (a directory scan), one import_run job each
SOURCE_RUNS = {
    (exp, zoo): source_runs(SETTINGS[exp][zoo])
    for exp, zoo in PAIRS
    if SETTINGS[exp][zoo].is_source_zoo
}


wildcard_constraints:
    exp="[A-Za-z0-9][A-Za-z0-9_-]*",
    zoo="[A-Za-z0-9][A-Za-z0-9_-]*",
    run="[0-9]+",
    b="[0-9]+",


def S(w):
    """Typed settings of the (experiment, zoo) named by a job's wildcards."""
    try:
        return SETTINGS[w.exp][w.zoo]
    except KeyError:
        raise WorkflowError(
            f"no zoo '{w.zoo}' in experiment '{w.exp}' of the configuration"
        ) from None


def P(stage):
    """The params of a rule: only the settings that change its result (rpg.stages.params)."""
    return lambda w: stage_params(S(w), stage)


def zoo_dirs(w):
    """The directories holding a zoo's training checkpoints: one per run (task zoo: per seen-task group)."""
    if S(w).is_task_zoo:
        return task_group_dirs(w.exp, w.zoo, "seen")  # workflow/rules/tasks.smk
    return [f"results/{w.exp}/zoo/{w.zoo}/run{r}" for r in range(num_runs(w))]


def num_runs(w):
    """Runs of a zoo: the config's, or those found in a source zoo's folder."""
    if S(w).is_source_zoo:
        return len(SOURCE_RUNS[w.exp, w.zoo])
    return S(w).runs


def batch_indices(w):
    """Indices of the generated models that batch job ``w.b`` writes (generate.models_per_job per batch)."""
    g = S(w).generate
    b = int(w.b)
    return list(
        range(b * g.models_per_job, min(g.num_models, (b + 1) * g.models_per_job))
    )


def generated_batches(w, folder="generated"):
    """The batch directories of a zoo's generated models (``folder``: generated, or generated_pdiff)."""
    g = S(w).generate
    n = -(-g.num_models // g.models_per_job)
    return [f"results/{w.exp}/{folder}/{w.zoo}/batch{b:03d}" for b in range(n)]


def evaluation_dir(exp, zoo):
    """evaluation/<zoo>; for a task zoo evaluation/<zoo>/tasks (workflow/rules/tasks.smk)."""
    path = f"results/{exp}/evaluation/{zoo}"
    return f"{path}/tasks" if SETTINGS[exp][zoo].is_task_zoo else path


def all_summaries():
    return [f"{evaluation_dir(exp, zoo)}/summary.json" for exp, zoo in PAIRS]


# adapter zoos (workflow/rules/adapters.smk)
ADAPTER_ZOOS = [(exp, zoo) for exp, zoo in PAIRS if SETTINGS[exp][zoo].is_adapter_zoo]


def all_peft_exports():
    """The PEFT folders of every adapter zoo's generated adapters (batch directories)."""
    return [
        d
        for exp, zoo in ADAPTER_ZOOS
        for d in generated_batches(SimpleNamespace(exp=exp, zoo=zoo), "generated_peft")
    ]


def zoo_regex(zoos):
    return "|".join(sorted(set(zoos))) or "(?!x)x"


# collect_run and import_run write the same run directories: each is limited to its zoos (a zoo name cannot be a
# source zoo in one experiment and a collected zoo in another)
SOURCE_ZOO_NAMES = {zoo for _, zoo in SOURCE_RUNS}
_clash = sorted(SOURCE_ZOO_NAMES & {z for e, z in PAIRS if (e, z) not in SOURCE_RUNS})
if _clash:
    raise WorkflowError(
        f"invalid configuration:\nzoo name '{_clash[0]}' is a source zoo in one experiment and a collected zoo "
        "in another; give them different names"
    )
SOURCE_ZOOS = zoo_regex(SOURCE_ZOO_NAMES)
COLLECTED_ZOOS = zoo_regex({zoo for _, zoo in PAIRS} - SOURCE_ZOO_NAMES)


def source_files(w):
    """The files an import_run job reads: its run's checkpoints (and the source table)."""
    try:
        run = SOURCE_RUNS[w.exp, w.zoo][int(w.run)]
    except (KeyError, IndexError):
        raise WorkflowError(
            f"no run {w.run} in the source of zoo '{w.zoo}' of '{w.exp}'"
        ) from None
    table = S(w).source.table
    extra = [str(Path(S(w).source.path, table))] if table else []
    return [str(p) for p in run.files] + extra


for _warning in missing_intermediates(SETTINGS, Path(".")):
    logger.warning(_warning)


# p-diff baseline (workflow/rules/pdiff.smk)
def pdiff_enabled(exp, zoo):
    s = SETTINGS[exp][zoo]
    return s.pdiff.enabled and not s.is_task_zoo


PDIFF_ZOOS = zoo_regex([zoo for exp, zoo in PAIRS if pdiff_enabled(exp, zoo)])


def pdiff_batches(w):
    """The p-diff model batches of a zoo for its evaluation (none when p-diff is not enabled)."""
    return (
        generated_batches(w, "generated_pdiff") if pdiff_enabled(w.exp, w.zoo) else []
    )


# task zoos (workflow/rules/tasks.smk)
TASK_ZOOS = [(exp, zoo) for exp, zoo in PAIRS if SETTINGS[exp][zoo].is_task_zoo]
TASK_PLANS = {
    (exp, zoo): plan_task_zoo(SETTINGS[exp][zoo].tasks, SETTINGS[exp][zoo].data)
    for exp, zoo in TASK_ZOOS
}
TASK_ZOO_REGEX = zoo_regex([z for _, z in TASK_ZOOS])
# binary and continuous task zoos share every task rule but the evaluation (different outputs); a zoo name is one
# or the other in every experiment
_CONTINUOUS = {z for e, z in TASK_ZOOS if SETTINGS[e][z].is_continuous_task_zoo}
_BINARY = {z for e, z in TASK_ZOOS if not SETTINGS[e][z].is_continuous_task_zoo}
if _CONTINUOUS & _BINARY:
    raise WorkflowError(
        f"invalid configuration:\nzoo name '{sorted(_CONTINUOUS & _BINARY)[0]}' is a continuous task zoo in one "
        "experiment and a binary one in another; give them different names"
    )
BINARY_TASK_ZOO_REGEX = zoo_regex(_BINARY)
CONTINUOUS_TASK_ZOO_REGEX = zoo_regex(_CONTINUOUS)
ADAPTER_ZOO_REGEX = zoo_regex([z for _, z in ADAPTER_ZOOS])


def task_plan(w):
    try:
        return TASK_PLANS[w.exp, w.zoo]
    except KeyError:
        raise WorkflowError(f"zoo '{w.zoo}' of '{w.exp}' is no task zoo") from None


def task_group_dirs(exp, zoo, split):
    """The collection directories of a task zoo's split (seen: the generator's training zoo)."""
    groups = TASK_PLANS[exp, zoo].groups[split]
    return [f"results/{exp}/zoo/{zoo}/{split}/{g.name}" for g in groups]


def task_manifest(w):
    """A row per evaluated task: split, task vector, reference checkpoints, generated models."""
    return task_plan(w).manifest(
        zoo_dir=f"results/{w.exp}/zoo/{w.zoo}",
        generated_dir=f"results/{w.exp}/generated/{w.zoo}/tasks",
        models_per_task=S(w).generate.num_models,
    )


# weights from a sentence (workflow/rules/prompt.smk)
PROMPTS = prompts_of(config)
PROMPT_EXPS = [exp for exp in SETTINGS if prompt_zoo(SETTINGS, exp) is not None]


def prompted_zoo(w):
    zoo = prompt_zoo(SETTINGS, w.exp)
    if zoo is None:
        raise WorkflowError(
            f"experiment '{w.exp}' has no task zoo to make weights from a prompt"
        )
    return zoo


def prompt_text(w):
    try:
        return PROMPTS[w.slug]
    except KeyError:
        raise WorkflowError(
            f"no prompt '{w.slug}' in the configuration; pass it with --config prompt='...'"
            f" (known: {', '.join(PROMPTS) or 'none'})"
        ) from None


def all_prompted():
    return [
        f"results/{e}/prompted/{s}/summary.json" for e in PROMPT_EXPS for s in PROMPTS
    ]
