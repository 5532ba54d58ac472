# Stage 6: one self-contained HTML report over all experiments and zoos (also: snakemake --report report.html).


rule report:
    input:
        all_summaries(),
    output:
        "results/report.html",
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../../environment.yml"
    params:
        evaluations={  # sorted: the order of experiments and zoos in the config is no param
            exp: {zoo: evaluation_dir(exp, zoo) for zoo in sorted(SETTINGS[exp])}
            for exp in sorted(SETTINGS)
        },
    script:
        "../scripts/report.py"
