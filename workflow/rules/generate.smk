# Stage 4: generation. Model i uses seed generate.seed + i; generate.models_per_job models make one job (a batch
# directory), so raising generate.num_models adds jobs for the new models only (a partly filled last batch reruns).
# Inside a job, generate.batch_size models are sampled together (the same files as one at a time).


rule generate:
    input:
        tokens="results/{exp}/tokens/{zoo}",
        model="results/{exp}/generator/{zoo}/model.safetensors",
        config="results/{exp}/generator/{zoo}/config.json",
    output:
        directory("results/{exp}/generated/{zoo}/batch{b}"),
    log:
        "results/{exp}/logs/generate/{zoo}/batch{b}.log",
    benchmark:
        "results/{exp}/benchmarks/generate/{zoo}/batch{b}.tsv"
    conda:
        "../../environment.yml"
    threads: lambda w: S(w).generate.threads or 1
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
        gpu=lambda w: min(1, S(w).train.gpus),
    params:
        settings=P("generate"),
        indices=batch_indices,
    script:
        "../scripts/generate.py"
