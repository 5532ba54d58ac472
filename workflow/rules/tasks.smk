# Unseen tasks (paper section 4): task zoos are zoos with a `tasks:` block (rpg.zoo.tasks).
#
# zoo/<zoo>/backbone.safetensors                shared backbone, trained once on the full problem
# zoo/<zoo>/tasks.json                          the split: seen / held-out task ids, groups, evaluated tasks
# zoo/<zoo>/<split>/group<g>-<n>tasks/member<j>_ckpt<i>.safetensors
#                                               checkpoint i of the group's j-th task (split: seen | held_out);
#                                               the group's task ids are in tasks.json, group.csv and the metadata
# generated/<zoo>/<split>/task<k>_model<m>.safetensors
#                                               model m for the k-th evaluated task of the split
# evaluation/<zoo>/tasks/                       summary.json, table.csv, init_finetune.csv, plots
#
# Seen checkpoints go through the standard tokenize and train_generator rules (zoo_checkpoints in common.smk);
# held-out checkpoints are reference models for the evaluation only. A group's directory name carries its number
# of tasks, so that each job's outputs are fixed: one rule per distinct (tasks per group, checkpoints per task).
include: "tasks_common.smk"


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
        zoo=lambda w: {k: S(w)[k] for k in ("arch", "arch_kwargs", "init", "collect")},
        data=lambda w: S(w)["data"],
        device=lambda w: S(w)["device"],
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


for (_n, _c), _zoos, _suffix in task_rules(_group_shapes):

    rule:
        name:
            f"collect_task_group{_suffix}"
        input:
            backbone="results/{exp}/zoo/{zoo}/backbone.safetensors",
        output:
            checkpoints=expand(
                "results/{{exp}}/zoo/{{zoo}}/{{split}}/{{group}}/member{j:02d}_ckpt{i:02d}.safetensors",
                j=range(_n),
                i=range(_c),
            ),
            table="results/{exp}/zoo/{zoo}/{split}/{group}/group.csv",
        log:
            "results/{exp}/logs/collect/{zoo}/{split}/{group}.log",
        benchmark:
            "results/{exp}/benchmarks/collect/{zoo}/{split}/{group}.tsv"
        wildcard_constraints:
            zoo=zoo_regex(_zoos),
            split="seen|held_out",
            group=f"group[0-9]+-{_n}tasks",
        conda:
            "../../environment.yml"
        threads: 1
        resources:
            mem_mb=lambda wildcards, attempt: 4000 * attempt,
            runtime=lambda wildcards, attempt: 60 * attempt,
        params:
            zoo=lambda w: {
                "arch": S(w)["arch"],
                "arch_kwargs": S(w)["arch_kwargs"],
                "tasks": collection_settings(S(w)["tasks"]),
            },
            data=lambda w: S(w)["data"],
            task_ids=lambda w: list(task_plan(w).group(w.split, w.group).task_ids),
            device=lambda w: S(w)["device"],
        script:
            "../scripts/task_collect.py"


for (_h, _s, _m), _zoos, _suffix in task_rules(_generate_shapes):

    rule:
        name:
            f"generate_tasks{_suffix}"
        input:
            tokens="results/{exp}/tokens/{zoo}",
            model="results/{exp}/generator/{zoo}/model.safetensors",
            config="results/{exp}/generator/{zoo}/config.json",
        output:
            [
                f"results/{{exp}}/generated/{{zoo}}/{generated_name(split, k, m)}"
                for split, n in (("held_out", _h), ("seen", _s))
                for k in range(n)
                for m in range(_m)
            ],
        log:
            "results/{exp}/logs/generate/{zoo}_tasks.log",
        benchmark:
            "results/{exp}/benchmarks/generate/{zoo}_tasks.tsv"
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
            models=lambda w: [
                {"path": p, "task": e["task"]}
                for e in task_manifest(w)
                for p in e["generated"]
            ],
            generate=lambda w: S(w)["generate"],
            device=lambda w: S(w)["device"],
        script:
            "../scripts/task_generate.py"


rule evaluate_tasks:
    input:
        backbone="results/{exp}/zoo/{zoo}/backbone.safetensors",
        split="results/{exp}/zoo/{zoo}/tasks.json",
        tokens="results/{exp}/tokens/{zoo}",
        generator="results/{exp}/generator/{zoo}/model.safetensors",
        train_log="results/{exp}/generator/{zoo}/train_log.csv",
        reference=lambda w: [p for e in task_manifest(w) for p in e["reference"]],
        generated=lambda w: [p for e in task_manifest(w) for p in e["generated"]],
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
        zoo=TASK_ZOO_REGEX,
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        manifest=task_manifest,
        zoo=lambda w: {k: S(w)[k] for k in ("arch", "arch_kwargs", "tasks")},
        data=lambda w: S(w)["data"],
        device=lambda w: S(w)["device"],
    script:
        "../scripts/task_evaluate.py"
