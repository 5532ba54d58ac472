# Stage 5: evaluation of originals, generated models and baselines (accuracy, similarity, novelty, plots).


rule evaluate:
    input:
        tokens="results/{exp}/tokens/{zoo}",
        runs=zoo_dirs,
        generated=generated_batches,
        pdiff=pdiff_batches,
        generator="results/{exp}/generator/{zoo}/model.safetensors",
        train_log="results/{exp}/generator/{zoo}/train_log.csv",
    output:
        table=report(
            "results/{exp}/evaluation/{zoo}/table.csv",
            caption="../report/table.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
        parquet="results/{exp}/evaluation/{zoo}/table.parquet",
        summary="results/{exp}/evaluation/{zoo}/summary.json",
        scatter=report(
            "results/{exp}/evaluation/{zoo}/accuracy_vs_similarity.png",
            caption="../report/accuracy_vs_similarity.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
        loss=report(
            "results/{exp}/evaluation/{zoo}/loss.png",
            caption="../report/loss.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
        distances=report(
            "results/{exp}/evaluation/{zoo}/distances.png",
            caption="../report/distances.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
    log:
        "results/{exp}/logs/evaluate/{zoo}.log",
    benchmark:
        "results/{exp}/benchmarks/evaluate/{zoo}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        settings=P("evaluate"),
    script:
        "../scripts/evaluate.py"
