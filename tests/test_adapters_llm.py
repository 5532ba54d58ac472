"""The causal-LM path of adapter zoos (the LLaMA preset's code) on a tiny random LlamaConfig model: commonsense
records in every supported format, likelihood scoring, DoRA collection, the evaluator's per-task accuracy, and the
PEFT folder loaded with ``PeftModel.from_pretrained``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from adapter_models import commonsense_files, tiny_llama

from rpg.adapters.base import load_base, load_tokenizer
from rpg.adapters.collect import collect_adapter_run, peft_dir_name
from rpg.adapters.evaluate import AdapterEvaluator
from rpg.adapters.inputs import continuation_logprobs
from rpg.adapters.model import live_tensors
from rpg.adapters.spec import AdapterSpec
from rpg.config import DataConfig, resolve_config
from rpg.data import build_dataset
from rpg.data.commonsense import parse_record
from rpg.errors import RPGInputError
from rpg.stages.checks import check_settings
from rpg.zoo.checkpoint import load_checkpoint
from rpg.zoo.models import build_model

RECORDS = {
    "boolq": ({"question": "is it red", "passage": "it is red", "answer": True}, 2, 1),
    "boolq_label": ({"question": "is it red?", "passage": "no", "label": 0}, 2, 0),
    "piqa": ({"goal": "open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0}, 2, 0),
    "siqa": ({"context": "Kim ran.", "question": "Why?", "answerA": "late", "answerB": "bored", "answerC": "cold",
              "label": "2"}, 3, 1),
    "hellaswag": ({"ctx_a": "A man sits", "ctx_b": "he", "endings": ["a", "b", "c", "d"], "label": 3,
                   "activity_label": "Sitting"}, 4, 3),
    "winogrande": ({"sentence": "The cup fell off the shelf because _ was wobbly.", "option1": "the cup",
                    "option2": "the shelf", "answer": "2"}, 2, 1),
    "arc_hf": ({"question": "What is H2O?", "choices": {"text": ["water", "salt"], "label": ["A", "B"]},
                "answerKey": "A"}, 2, 0),
    "arc_jsonl": ({"question": {"stem": "Pick one", "choices": [{"text": "x", "label": "1"},
                                                                {"text": "y", "label": "2"}]}, "answerKey": "2"}, 2, 1),
    "obqa_hf": ({"question_stem": "Sun is a", "choices": {"text": ["star", "moon", "rock", "tree"],
                                                         "label": ["A", "B", "C", "D"]}, "answerKey": "A"}, 4, 0),
    "llm_adapters": ({"instruction": "Please choose the correct answer to the question: why? Answer1: a Answer2: b "
                      "Answer format: answer1/answer2", "input": "", "output": "the correct answer is answer2",
                      "answer": "answer2"}, 2, 1),
}  # fmt: skip


@pytest.mark.parametrize("name", list(RECORDS))
def test_record_formats(name):
    record, n_options, label = RECORDS[name]
    item = parse_record(record, "t")
    assert len(item.options) == n_options and item.label == label
    assert all(isinstance(c, str) and isinstance(x, str) and x.strip() for c, x in item.options)


def test_winogrande_partial_scoring_and_bad_records():
    item = parse_record(RECORDS["winogrande"][0], "winogrande")
    assert item.options[1] == ("The cup fell off the shelf because the shelf", " was wobbly.")
    with pytest.raises(ValueError, match="no known format"):
        parse_record({"text": "hello"}, "t")


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    data_root, words = commonsense_files(root / "data")
    return tiny_llama(root / "llama", words=words), data_root


def data_cfg(data_root, **kw):
    return DataConfig.parse({"name": "commonsense", "root": str(data_root), "tasks": ["boolq", "piqa"], **kw})


def test_commonsense_files(llm):
    _, root = llm
    cfg = data_cfg(root)
    train, val, test = (build_dataset(cfg, s) for s in ("train", "val", "test"))
    assert len(val) == 1 + 4  # boolq: 10% of its 12 training records; piqa: its val file
    assert len(train) == 11 + 12 and len(test) == 6 + 8
    assert set(test.tasks) == {"boolq", "piqa"}
    assert len(build_dataset(data_cfg(root, max_items=3), "test")) == 6
    with pytest.raises(RPGInputError, match="piqa/test"):
        (root / "piqa" / "test.json").rename(root / "piqa" / "t.json")
        try:
            build_dataset(cfg, "test")
        finally:
            (root / "piqa" / "t.json").rename(root / "piqa" / "test.json")
    bad = root / "bad"
    (bad / "boolq").mkdir(parents=True)
    (bad / "boolq" / "train.json").write_text(json.dumps([{"question": "q"}] * 3))
    with pytest.raises(RPGInputError, match="record [0-9]: a record of no known format") as err:
        build_dataset(data_cfg(bad, tasks=["boolq"]), "train")
    assert err.value.path.endswith("train.json")


def test_likelihood_scoring_by_hand(llm):
    base, _ = llm
    spec = AdapterSpec(base=str(base), task="causal_lm", target_modules=("q_proj", "v_proj"), max_length=64)
    model, tok = load_base(spec), load_tokenizer(spec.base)
    pairs = [("the ball is red\nQuestion: is the ball red?\nAnswer:", " yes"), ("paint it", " use blue paint")]
    got = continuation_logprobs(model, tok, pairs, max_length=64, device=torch.device("cpu"))
    for (ctx, cont), score in zip(pairs, got):
        c, x = tok(ctx)["input_ids"], tok(cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([c + x])).logits[0].float(), -1)
        expected = sum(float(logp[len(c) - 1 + i, t]) for i, t in enumerate(x))
        assert float(score) == pytest.approx(expected, abs=1e-4)
    mean = continuation_logprobs(model, tok, pairs, max_length=64, device=torch.device("cpu"), mean=True)
    assert float(mean[1]) == pytest.approx(float(got[1]) / 3, abs=1e-5)


def test_dora_on_a_causal_lm(llm, tmp_path):
    from peft import PeftModel

    base, root = llm
    spec = AdapterSpec(base=str(base), method="dora", rank=2, alpha=4, target_modules=("q_proj", "v_proj", "up_proj"),
                       task="causal_lm", max_length=64)  # fmt: skip
    collect = {"epochs": 1, "lr": 0.01, "batch_size": 4, "finetune_lr": 0.001, "finetune_epochs": 1,
               "finetune_batch_size": 8, "checkpoints": 2}  # fmt: skip
    paths = [tmp_path / "ckpt_000.safetensors", tmp_path / "ckpt_001.safetensors"]
    collect_adapter_run(spec=spec, collect=collect, data=data_cfg(root), run=0, out_paths=paths,
                        table_path=tmp_path / "run.csv", device="cpu")  # fmt: skip
    state, meta = load_checkpoint(paths[1])
    assert state and all("lora_" in k for k in state) and any("magnitude" in k for k in state)
    assert set(meta["val_metrics"]) == {"accuracy", "accuracy_all", "accuracy_boolq", "accuracy_piqa"}
    model = build_model(meta["arch"], meta["arch_kwargs"])
    model.load_state_dict(state, strict=True)
    outcome = AdapterEvaluator(data=data_cfg(root), device="cpu").evaluate(model, "test")
    assert outcome.outputs.shape == (14, 2) and outcome.failures.shape == (14,)
    per_task = [outcome.metrics["accuracy_boolq"], outcome.metrics["accuracy_piqa"]]
    assert outcome.score == pytest.approx(sum(per_task) / 2)
    assert outcome.metrics["accuracy_all"] == pytest.approx(1 - float(outcome.failures.float().mean()))
    peft = PeftModel.from_pretrained(load_base(spec), str(tmp_path / peft_dir_name(1)))
    loaded = live_tensors(peft)
    assert sorted(loaded) == sorted(state) and all(torch.equal(loaded[k], state[k]) for k in state)


def test_llama_preset_validates(llm):
    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "adapters_llama.yaml").read_text())
    resolved = resolve_config(raw)
    settings = [s for zoos in resolved.values() for s in zoos.values()]
    assert {s.adapter.rank for s in settings} == {4, 16, 64} and all(s.adapter.method == "dora" for s in settings)
    problems = check_settings(resolved)  # the preset's base model and data folders are not on this machine
    assert any("adapter.base" in p for p in problems) or any("data.root" in p for p in problems)
    base, root = llm
    for exp in raw["experiments"].values():
        exp["data"]["root"] = str(root)
        exp["data"]["tasks"] = ["boolq", "piqa"]
        for zoo in exp["zoos"].values():
            zoo["adapter"]["base"] = str(base)
    assert check_settings(resolve_config(raw)) == []
