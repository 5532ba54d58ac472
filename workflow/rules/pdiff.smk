# The p-diff baseline (rpg.pdiff: a flat autoencoder + latent diffusion), for zoos with `pdiff: {enabled: true}`.
# It is trained on the zoo's token store (the same normalised parameters as RPG) and its models are evaluated
# beside RPG's: evaluate.smk takes pdiff_models(w) as an extra input (kind "pdiff" rows in the table).
#
# pdiff/<zoo>/model.safetensors, config.json, train_log.csv
# generated_pdiff/<zoo>/model_<iii>.safetensors


include: "pdiff_common.smk"


if PDIFF_PAIRS:

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
            zoo=zoo_regex([zoo for _, zoo in PDIFF_PAIRS]),
        conda:
            "../../environment.yml"
        threads: 1
        resources:
            mem_mb=lambda wildcards, attempt: 8000 * attempt,
            runtime=lambda wildcards, attempt: 120 * attempt,
        params:
            pdiff=lambda w: S(w)["pdiff"],
            device=lambda w: S(w)["device"],
        script:
            "../scripts/train_pdiff.py"

    _pdiff_counts = {}
    for _exp, _zoo in PDIFF_PAIRS:
        _pdiff_counts.setdefault(
            SETTINGS[_exp][_zoo]["generate"]["num_models"], []
        ).append(_zoo)
    for _n, _zoos in sorted(_pdiff_counts.items()):

        rule:
            name:
                "generate_pdiff" if len(_pdiff_counts) == 1 else f"generate_pdiff_{_n}"
            input:
                tokens="results/{exp}/tokens/{zoo}",
                model="results/{exp}/pdiff/{zoo}/model.safetensors",
                config="results/{exp}/pdiff/{zoo}/config.json",
            output:
                expand(
                    "results/{{exp}}/generated_pdiff/{{zoo}}/model_{i:03d}.safetensors",
                    i=range(_n),
                ),
            log:
                "results/{exp}/logs/pdiff/generate_{zoo}.log",
            benchmark:
                "results/{exp}/benchmarks/pdiff/generate_{zoo}.tsv"
            wildcard_constraints:
                zoo=zoo_regex(_zoos),
            conda:
                "../../environment.yml"
            threads: 1
            resources:
                mem_mb=lambda wildcards, attempt: 8000 * attempt,
                runtime=lambda wildcards, attempt: 60 * attempt,
            params:
                generate=lambda w: S(w)["generate"],
                pdiff=lambda w: S(w)["pdiff"],
                device=lambda w: S(w)["device"],
            script:
                "../scripts/generate_pdiff.py"
