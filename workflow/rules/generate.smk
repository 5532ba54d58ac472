# Stage 4: batched generation of new models (one job per zoo writes num_models files, one model in memory).

for _n, _zoos, _suffix in count_rules("generate.num_models"):

    rule:
        name:
            f"generate{_suffix}"
        input:
            tokens="results/{exp}/tokens/{zoo}",
            model="results/{exp}/generator/{zoo}/model.safetensors",
            config="results/{exp}/generator/{zoo}/config.json",
        output:
            expand(
                "results/{{exp}}/generated/{{zoo}}/model_{i:03d}.safetensors",
                i=range(_n),
            ),
        log:
            "results/{exp}/logs/generate/{zoo}.log",
        benchmark:
            "results/{exp}/benchmarks/generate/{zoo}.tsv"
        wildcard_constraints:
            zoo=zoo_regex(_zoos),
        conda:
            "../../environment.yml"
        threads: 1
        resources:
            mem_mb=lambda wildcards, attempt: 8000 * attempt,
            runtime=lambda wildcards, attempt: 120 * attempt,
            gpu=lambda w: min(1, S(w)["train"]["gpus"]),
        params:
            generate=lambda w: S(w)["generate"],
            device=lambda w: S(w)["device"],
        script:
            "../scripts/generate.py"
