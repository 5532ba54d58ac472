# Stage 1: checkpoint collection. One job per training run (a cluster fans out over runs).

for _n, _zoos, _suffix in count_rules("collect.checkpoints"):

    rule:
        name:
            f"collect_run{_suffix}"
        output:
            checkpoints=expand(
                "results/{{exp}}/zoo/{{zoo}}/run{{run}}/ckpt_{i:03d}.safetensors",
                i=range(_n),
            ),
            table="results/{exp}/zoo/{zoo}/run{run}/run.csv",
        log:
            "results/{exp}/logs/collect/{zoo}/run{run}.log",
        benchmark:
            "results/{exp}/benchmarks/collect/{zoo}/run{run}.tsv"
        wildcard_constraints:
            zoo=zoo_regex(_zoos),
        conda:
            "../../environment.yml"
        threads: 1
        resources:
            mem_mb=lambda wildcards, attempt: 4000 * attempt,
            runtime=lambda wildcards, attempt: 60 * attempt,
        params:
            zoo=lambda w: {
                k: S(w)[k] for k in ("arch", "arch_kwargs", "init", "runs", "collect")
            },
            data=lambda w: S(w)["data"],
            device=lambda w: S(w)["device"],
        script:
            "../scripts/collect_run.py"


rule zoo_table:
    input:
        zoo_checkpoints,
    output:
        "results/{exp}/zoo/{zoo}/checkpoints.csv",
    log:
        "results/{exp}/logs/collect/{zoo}/table.log",
    benchmark:
        "results/{exp}/benchmarks/collect/{zoo}/table.tsv"
    conda:
        "../../environment.yml"
    script:
        "../scripts/zoo_table.py"
