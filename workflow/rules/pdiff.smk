# The p-diff baseline (rpg.pdiff: a flat autoencoder + latent diffusion), for zoos with `pdiff: {enabled: true}`.
# It is trained on the zoo's token store (the same normalised parameters as RPG) and its models are evaluated
# beside RPG's: evaluate.smk takes pdiff_batches(w) as an extra input (kind "pdiff" rows in the table).


rule train_pdiff:
    input:
        tokens="results/{exp}/tokens/{zoo}",
    output:
        model="results/{exp}/pdiff/{zoo}/model.safetensors",
        config="results/{exp}/pdiff/{zoo}/config.json",
        log="results/{exp}/pdiff/{zoo}/train_log.csv",
    log:
        "results/{exp}/logs/pdiff/train_{zoo}.log",
    benchmark:
        "results/{exp}/benchmarks/pdiff/train_{zoo}.tsv"
    wildcard_constraints:
        zoo=PDIFF_ZOOS,
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        settings=P("train_pdiff"),
    script:
        "../scripts/train_pdiff.py"


rule generate_pdiff:
    input:
        tokens="results/{exp}/tokens/{zoo}",
        model="results/{exp}/pdiff/{zoo}/model.safetensors",
        config="results/{exp}/pdiff/{zoo}/config.json",
    output:
        directory("results/{exp}/generated_pdiff/{zoo}/batch{b}"),
    log:
        "results/{exp}/logs/pdiff/generate_{zoo}/batch{b}.log",
    benchmark:
        "results/{exp}/benchmarks/pdiff/generate_{zoo}/batch{b}.tsv"
    wildcard_constraints:
        zoo=PDIFF_ZOOS,
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        settings=P("generate_pdiff"),
        indices=batch_indices,
    script:
        "../scripts/generate_pdiff.py"
