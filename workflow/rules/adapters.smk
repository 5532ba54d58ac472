# Adapter zoos (zoos with an `adapter:` block, rpg.adapters): collection, tokenization, training and generation use
# the standard rules; collect_run also writes each checkpoint in PEFT format (zoo/<zoo>/run<r>/peft_<iii>/). This
# rule writes the generated adapters of one batch as PEFT folders:
#   generated_peft/<zoo>/batch<bbb>/model_<iii>/   adapter_model.safetensors + adapter_config.json


rule export_peft:
    input:
        "results/{exp}/generated/{zoo}/batch{b}",
    output:
        directory("results/{exp}/generated_peft/{zoo}/batch{b}"),
    log:
        "results/{exp}/logs/export_peft/{zoo}/batch{b}.log",
    benchmark:
        "results/{exp}/benchmarks/export_peft/{zoo}/batch{b}.tsv"
    wildcard_constraints:
        zoo=ADAPTER_ZOO_REGEX,
    conda:
        "../../environment.yml"
    params:
        settings=P("export_peft"),
    script:
        "../scripts/export_peft.py"
