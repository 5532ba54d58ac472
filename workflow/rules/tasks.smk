# Unseen tasks (paper section 4): task zoos are zoos with a `tasks:` block (rpg.tasks, rpg.stages.tasks).
#
# zoo/<zoo>/backbone.safetensors                shared backbone, trained once on the full problem
# zoo/<zoo>/tasks.json                          the plan: seen / held-out task ids, groups, evaluated tasks
# zoo/<zoo>/<split>/<group>/                    one collection job: member<jj>_ckpt<ii>.safetensors + group.csv
#                                               (split: seen | held_out; the group's task ids are in tasks.json)
# generated/<zoo>/tasks/<split>/task<k>_model<m>.safetensors   model m for the k-th evaluated task of the split
# evaluation/<zoo>/tasks/                       summary.json, table.csv, init_finetune.csv, plots
#                                               (a continuous family, tasks.family: rotation: summary.json,
#                                               table.csv, finetune.csv, plots; rpg.tasks.continuous_eval)
#
# Seen groups go through the standard tokenize and train_generator rules (zoo_dirs in common.smk); held-out
# groups are reference models for the evaluation only.
rule task_backbone:
    output:
        backbone="results/{exp}/zoo/{zoo}/backbone.safetensors",
        table="results/{exp}/zoo/{zoo}/backbone.csv",
    log:
        "results/{exp}/logs/collect/{zoo}/backbone.log",
    benchmark:
        "results/{exp}/benchmarks/collect/{zoo}/backbone.tsv"
    wildcard_constraints:
        zoo=TASK_ZOO_REGEX,
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        settings=P("task_backbone"),
    script:
        "../scripts/task_backbone.py"


rule task_split:
    output:
        "results/{exp}/zoo/{zoo}/tasks.json",
    log:
        "results/{exp}/logs/collect/{zoo}/tasks.log",
    benchmark:
        "results/{exp}/benchmarks/collect/{zoo}/tasks.tsv"
    wildcard_constraints:
        zoo=TASK_ZOO_REGEX,
    conda:
        "../../environment.yml"
    params:
        plan=lambda w: task_plan(w).to_dict(),
    script:
        "../scripts/task_split.py"


rule collect_task_group:
    input:
        backbone="results/{exp}/zoo/{zoo}/backbone.safetensors",
    output:
        directory("results/{exp}/zoo/{zoo}/{split}/{group}"),
    log:
        "results/{exp}/logs/collect/{zoo}/{split}/{group}.log",
    benchmark:
        "results/{exp}/benchmarks/collect/{zoo}/{split}/{group}.tsv"
    wildcard_constraints:
        zoo=TASK_ZOO_REGEX,
        split="seen|held_out",
        group="group[0-9]+-[0-9]+tasks",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        settings=P("collect_task_group"),
        task_ids=lambda w: list(task_plan(w).group(w.split, w.group).task_ids),
    script:
        "../scripts/task_collect.py"


rule generate_tasks:
    input:
        tokens="results/{exp}/tokens/{zoo}",
        model="results/{exp}/generator/{zoo}/model.safetensors",
        config="results/{exp}/generator/{zoo}/config.json",
    output:
        directory("results/{exp}/generated/{zoo}/tasks"),
    log:
        "results/{exp}/logs/generate/{zoo}_tasks.log",
    benchmark:
        "results/{exp}/benchmarks/generate/{zoo}_tasks.tsv"
    wildcard_constraints:
        zoo=TASK_ZOO_REGEX,
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
        gpu=lambda w: min(1, S(w).train.gpus),
    params:
        settings=P("generate_tasks"),
        models=lambda w: [
            {"path": p, "task": e["task"]}
            for e in task_manifest(w)
            for p in e["generated"]
        ],
    script:
        "../scripts/task_generate.py"


rule evaluate_tasks:
    input:
        backbone="results/{exp}/zoo/{zoo}/backbone.safetensors",
        plan="results/{exp}/zoo/{zoo}/tasks.json",
        tokens="results/{exp}/tokens/{zoo}",
        generator="results/{exp}/generator/{zoo}/model.safetensors",
        train_log="results/{exp}/generator/{zoo}/train_log.csv",
        seen=lambda w: task_group_dirs(w.exp, w.zoo, "seen"),
        held_out=lambda w: task_group_dirs(w.exp, w.zoo, "held_out"),
        generated="results/{exp}/generated/{zoo}/tasks",
    output:
        summary="results/{exp}/evaluation/{zoo}/tasks/summary.json",
        table=report(
            "results/{exp}/evaluation/{zoo}/tasks/table.csv",
            caption="../report/task_table.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
        parquet="results/{exp}/evaluation/{zoo}/tasks/table.parquet",
        finetune=report(
            "results/{exp}/evaluation/{zoo}/tasks/init_finetune.csv",
            caption="../report/task_init_finetune.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
        accuracy=report(
            "results/{exp}/evaluation/{zoo}/tasks/task_accuracy.png",
            caption="../report/task_accuracy.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
        init_plot=report(
            "results/{exp}/evaluation/{zoo}/tasks/init_finetune.png",
            caption="../report/task_init_finetune.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
        loss=report(
            "results/{exp}/evaluation/{zoo}/tasks/loss.png",
            caption="../report/loss.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
    log:
        "results/{exp}/logs/evaluate/{zoo}_tasks.log",
    benchmark:
        "results/{exp}/benchmarks/evaluate/{zoo}_tasks.tsv"
    wildcard_constraints:
        zoo=BINARY_TASK_ZOO_REGEX,
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        settings=P("evaluate_tasks"),
        manifest=task_manifest,
    script:
        "../scripts/task_evaluate.py"


rule evaluate_continuous_tasks:
    input:
        backbone="results/{exp}/zoo/{zoo}/backbone.safetensors",
        plan="results/{exp}/zoo/{zoo}/tasks.json",
        tokens="results/{exp}/tokens/{zoo}",
        generator="results/{exp}/generator/{zoo}/model.safetensors",
        train_log="results/{exp}/generator/{zoo}/train_log.csv",
        seen=lambda w: task_group_dirs(w.exp, w.zoo, "seen"),
        held_out=lambda w: task_group_dirs(w.exp, w.zoo, "held_out"),
        generated="results/{exp}/generated/{zoo}/tasks",
    output:
        summary="results/{exp}/evaluation/{zoo}/tasks/summary.json",
        table=report(
            "results/{exp}/evaluation/{zoo}/tasks/table.csv",
            caption="../report/continuous_table.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
        parquet="results/{exp}/evaluation/{zoo}/tasks/table.parquet",
        finetune="results/{exp}/evaluation/{zoo}/tasks/finetune.csv",
        accuracy=report(
            "results/{exp}/evaluation/{zoo}/tasks/accuracy_vs_value.png",
            caption="../report/continuous_accuracy.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
        finetune_plot=report(
            "results/{exp}/evaluation/{zoo}/tasks/finetune.png",
            caption="../report/continuous_finetune.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
        loss=report(
            "results/{exp}/evaluation/{zoo}/tasks/loss.png",
            caption="../report/loss.rst",
            category="{exp}",
            subcategory="{zoo}",
        ),
    log:
        "results/{exp}/logs/evaluate/{zoo}_tasks.log",
    benchmark:
        "results/{exp}/benchmarks/evaluate/{zoo}_tasks.tsv"
    wildcard_constraints:
        zoo=CONTINUOUS_TASK_ZOO_REGEX,
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        settings=P("evaluate_tasks"),
        manifest=task_manifest,
    script:
        "../scripts/task_evaluate.py"
