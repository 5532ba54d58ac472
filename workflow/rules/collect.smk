# Stage 1: checkpoint collection. One job per training run, writing the run's directory of checkpoints; a zoo
# with a source folder (bring your own zoo) is imported instead, one job per run of the folder.


rule collect_run:
    output:
        directory("results/{exp}/zoo/{zoo}/run{run}"),
    log:
        "results/{exp}/logs/collect/{zoo}/run{run}.log",
    benchmark:
        "results/{exp}/benchmarks/collect/{zoo}/run{run}.tsv"
    wildcard_constraints:
        zoo=COLLECTED_ZOOS,
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        settings=P("collect_run"),
    script:
        "../scripts/collect_run.py"


rule import_run:
    input:
        source_files,
    output:
        directory("results/{exp}/zoo/{zoo}/run{run}"),
    log:
        "results/{exp}/logs/collect/{zoo}/import_run{run}.log",
    benchmark:
        "results/{exp}/benchmarks/collect/{zoo}/import_run{run}.tsv"
    wildcard_constraints:
        zoo=SOURCE_ZOOS,
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        settings=P("import_run"),
    script:
        "../scripts/import_run.py"


rule zoo_table:
    input:
        zoo_dirs,
    output:
        "results/{exp}/zoo/{zoo}/checkpoints.csv",
    log:
        "results/{exp}/logs/collect/{zoo}/table.log",
    benchmark:
        "results/{exp}/benchmarks/collect/{zoo}/table.tsv"
    priority: 10  # the path to the generator (a run's longest job) before baselines and evaluation
    conda:
        "../../environment.yml"
    script:
        "../scripts/zoo_table.py"
