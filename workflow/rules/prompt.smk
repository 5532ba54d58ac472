# Weights from a sentence (rpg.prompt, rpg.stages.prompt): a prompt becomes a task vector, the experiment's task zoo
# makes weights for it, and a reference trained for that task compares:
#   snakemake --configfile configs/unseen_tasks.yaml --config prompt="tell the even digits from the odd ones"
# prompted/<slug>/   summary.json, table.csv, reference/ (trained for the task), generated/ (from the generator)
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


rule prompted:
    input:
        backbone=lambda w: f"results/{w.exp}/zoo/{prompted_zoo(w)}/backbone.safetensors",
        plan=lambda w: f"results/{w.exp}/zoo/{prompted_zoo(w)}/tasks.json",
        tokens=lambda w: f"results/{w.exp}/tokens/{prompted_zoo(w)}",
        model=lambda w: f"results/{w.exp}/generator/{prompted_zoo(w)}/model.safetensors",
        config=lambda w: f"results/{w.exp}/generator/{prompted_zoo(w)}/config.json",
    output:
        summary="results/{exp}/prompted/{slug}/summary.json",
        table="results/{exp}/prompted/{slug}/table.csv",
        reference=directory("results/{exp}/prompted/{slug}/reference"),
        generated=directory("results/{exp}/prompted/{slug}/generated"),
    log:
        "results/{exp}/logs/prompted/{slug}.log",
    benchmark:
        "results/{exp}/benchmarks/prompted/{slug}.tsv"
    wildcard_constraints:
        slug="[a-z0-9][a-z0-9-]*",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        settings=lambda w: stage_params(SETTINGS[w.exp][prompted_zoo(w)], "prompted"),
        prompt=prompt_text,
    script:
        "../scripts/prompted.py"
