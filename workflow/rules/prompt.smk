# Weights from a sentence (rpg.prompt, rpg.stages.prompt): a prompt becomes a task vector, the experiment's task zoo
# makes weights for it, and a reference trained for that task compares:
#   snakemake --configfile configs/unseen_tasks.yaml --config prompt="tell the even digits from the odd ones"
# prompted/<slug>/   summary.json, table.csv, reference/ (trained for the task), generated/ (from the generator)
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
