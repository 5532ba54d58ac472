# Stage 3: training the recurrent diffusion generator (resumable; torchrun DDP when train.nproc > 1).


rule train_generator:
    input:
        tokens="results/{exp}/tokens/{zoo}",
    output:
        model="results/{exp}/generator/{zoo}/model.safetensors",
        config="results/{exp}/generator/{zoo}/config.json",
        log="results/{exp}/generator/{zoo}/train_log.csv",
    log:
        "results/{exp}/logs/train/{zoo}.log",
    benchmark:
        "results/{exp}/benchmarks/train/{zoo}.tsv"
    priority: 10  # see zoo_table
    conda:
        "../../environment.yml"
    threads: lambda w: S(w).train.threads
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 240 * attempt,
        gpu=lambda w: S(w).train.gpus,
    params:
        settings=P("train_generator"),
    script:
        "../scripts/train_generator.py"
