# Helpers of workflow/rules/tasks.smk: the plan of every task zoo (split, groups, evaluated tasks) and its paths.
from rpg.errors import RPGInputError
from rpg.zoo.tasks import collection_settings, generated_name, plan_task_zoo

TASK_ZOOS = [(exp, zoo) for exp, zoo in PAIRS if SETTINGS[exp][zoo].get("tasks")]
TASK_PLANS = {}
for _exp, _zoo in TASK_ZOOS:
    _where = f"experiments.{_exp}.zoos.{_zoo}"
    try:
        TASK_PLANS[_exp, _zoo] = plan_task_zoo(
            SETTINGS[_exp][_zoo]["tasks"], SETTINGS[_exp][_zoo]["data"]
        )
    except (RPGInputError, ValueError) as exc:
        raise WorkflowError(f"invalid configuration:\n{_where}.tasks: {exc}") from None
    _gen = SETTINGS[_exp][_zoo]["generator"]
    _bits = TASK_PLANS[_exp, _zoo].split.num_classes
    if _gen["task_condition"] is not None and _gen["task_bits"] != _bits:
        raise WorkflowError(
            f"invalid configuration:\n{_where}.generator.task_bits: "
            f"{_gen['task_bits']}, but the dataset has {_bits} classes"
        )
TASK_ZOO_REGEX = zoo_regex([z for _, z in TASK_ZOOS]) or "(?!x)x"


def task_plan(w):
    try:
        return TASK_PLANS[w.exp, w.zoo]
    except KeyError:
        raise WorkflowError(f"zoo '{w.zoo}' of '{w.exp}' is no task zoo") from None


def task_checkpoints(exp, zoo, split):
    """All checkpoints of a task zoo's split (seen: the generator's training zoo)."""
    names = TASK_PLANS[exp, zoo].checkpoint_names(split)
    return [f"results/{exp}/zoo/{zoo}/{n}" for n in names]


def task_manifest(w):
    """A row per evaluated task: split, task vector, reference checkpoints, generated models."""
    s = S(w)
    return task_plan(w).manifest(
        zoo_dir=f"results/{w.exp}/zoo/{w.zoo}",
        generated_dir=f"results/{w.exp}/generated/{w.zoo}",
        models_per_task=s["generate"]["num_models"],
    )


def task_rules(shape):
    """Distinct values of ``shape(exp, zoo)`` over the task zoos, with the zoos using each (cf. count_rules)."""
    groups = {}
    for exp, zoo in TASK_ZOOS:
        for key in shape(exp, zoo):
            groups.setdefault(key, []).append(zoo)
    return [
        (key, zoos, "" if len(groups) == 1 else "_" + "_".join(map(str, key)))
        for key, zoos in sorted(groups.items())
    ]


def _group_shapes(exp, zoo):
    plan = TASK_PLANS[exp, zoo]
    return {
        (len(g.task_ids), plan.checkpoints_per_task)
        for gs in plan.groups.values()
        for g in gs
    }


def _generate_shapes(exp, zoo):
    plan = TASK_PLANS[exp, zoo]
    n_models = SETTINGS[exp][zoo]["generate"]["num_models"]
    return {(len(plan.eval_tasks["held_out"]), len(plan.eval_tasks["seen"]), n_models)}
