# Stage 2: tokenization into layout/index Parquet tables and safetensors token shards.


rule tokenize:
    input:
        runs=zoo_dirs,
        table="results/{exp}/zoo/{zoo}/checkpoints.csv",
    output:
        directory("results/{exp}/tokens/{zoo}"),
    log:
        "results/{exp}/logs/tokenize/{zoo}.log",
    benchmark:
        "results/{exp}/benchmarks/tokenize/{zoo}.tsv"
    priority: 10  # see zoo_table
    conda:
        "../../environment.yml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        settings=P("tokenize"),
    script:
        "../scripts/tokenize.py"
