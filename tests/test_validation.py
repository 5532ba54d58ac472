"""Validation by sampling during training, the stopping rule of ``train.steps: auto`` and the recipe rules."""

from __future__ import annotations

import logging
import math
import time

import pandas as pd
import pytest
import torch
from torch import nn

from rpg.config import ConfigError, GeneratorConfig, TrainConfig, recipe, result_dict
from rpg.config.pipeline import resolve_config
from rpg.evaluate.outcome import Outcome
from rpg.generator import trainer as trainer_module
from rpg.generator.trainer import train_generator
from rpg.generator.validation import VAL_COLUMNS, AutoStop, SampleValidator, validation_states
from rpg.io import load_safetensors, read_json
from rpg.optim import linear_cooldown, warmup_cosine
from rpg.stages.params import stage_params
from rpg.tokens.store import TokenStore, write_token_store

# --- the stopping rule ------------------------------------------------------------------------------------------


def run_rule(scores, *, target=0.9, tolerance=0.01, patience=2, min_delta=0.002, plateau_after=0.2, every=100):
    """Feed scripted validation scores (one every ``every`` steps) until the rule stops: (stop step, reason, kept)."""
    rule = AutoStop(target=target, tolerance=tolerance, patience=patience, min_delta=min_delta,
                    plateau_after=plateau_after)  # fmt: skip
    for i, score in enumerate(scores):
        _, reason = rule.update((i + 1) * every, score)
        if reason:
            return (i + 1) * every, reason, rule.best_step
    return None, None, rule.best_step


def test_stopping_rule_on_scripted_scores():
    # reaches the originals (0.9 within 0.01) at 300 and 400: stops at the second; keeps the best (400)
    assert run_rule([0.5, 0.7, 0.895, 0.91, 0.5]) == (400, "reached", 400)
    # a dip in between restarts the count
    assert run_rule([0.5, 0.91, 0.6, 0.92, 0.93]) == (500, "reached", 500)
    # within the tolerance but below an earlier best: a plateau, and the best is kept, not the last
    assert run_rule([0.5, 0.95, 0.6, 0.92, 0.93]) == (400, "plateau", 200)
    # flat far below: no new best by more than min_delta for 3 validations
    assert run_rule([0.5, 0.6, 0.6015, 0.59, 0.58, 0.7], patience=3) == (500, "plateau", 300)
    # flat at the starting level (chance) while the generator has not begun to work: not a plateau
    # (a coupled test_convnext run's first validations; target 0.965), unless plateau_after is 0
    chance = [0.116, 0.070, 0.054, 0.084, 0.09]
    assert run_rule(chance, target=0.965, patience=3) == (None, None, 100)
    assert run_rule(chance, target=0.965, patience=3, plateau_after=0.0) == (400, "plateau", 100)
    # ... a rise by noise is not leaving it either; a rise by a fifth of the gap is, and then a plateau stops
    assert run_rule([0.085, 0.114, 0.103, 0.100, 0.11], target=0.965, patience=3) == (None, None, 200)
    assert run_rule([0.1, 0.4, 0.41, 0.39, 0.40, 0.405], patience=3) == (600, "plateau", 300)
    # a first validation already within the tolerance of the target: any plateau counts
    assert run_rule([0.895, 0.80, 0.85, 0.80], patience=3, tolerance=0.01) == (400, "plateau", 100)
    # still rising: never stops (max_steps decides), the best is the last
    assert run_rule([0.1, 0.2, 0.3, 0.4]) == (None, None, 400)
    # a broken validation (NaN) is no best and no reach
    assert run_rule([0.5, math.nan, 0.7], patience=3) == (None, None, 300)
    # state round trip (what the resumable state holds)
    rule = AutoStop(target=0.9, tolerance=0.01, patience=2, min_delta=0.0)
    rule.update(10, 0.5)
    again = AutoStop(target=None, tolerance=0.01, patience=2, min_delta=0.0)
    again.load_state_dict(rule.state_dict())
    assert again.update(20, 0.95) == rule.update(20, 0.95) and again.state_dict() == rule.state_dict()


def test_validation_states_spread_over_runs():
    assert validation_states(4, 2) == [0, 0, 1, 1]
    assert validation_states(4, 100) == [0, 25, 50, 75]
    assert validation_states(3, 1) == [0, 0, 0]


# --- configuration ----------------------------------------------------------------------------------------------


def test_auto_steps_config_errors_and_params():
    with pytest.raises(ConfigError, match="validate_every"):
        TrainConfig.parse({"steps": "auto", "max_steps": 100})
    with pytest.raises(ConfigError, match="max_steps"):
        TrainConfig.parse({"steps": "auto", "validate_every": 10})
    with pytest.raises(ConfigError, match="must be <= max_steps"):
        TrainConfig.parse({"steps": "auto", "validate_every": 200, "max_steps": 100})
    with pytest.raises(ConfigError, match="'auto'"):
        TrainConfig.parse({"steps": "forever"})
    with pytest.raises(ConfigError, match="validate_every"):
        TrainConfig.parse({"validate_every": 0})
    cfg = TrainConfig.parse({"steps": "auto", "max_steps": 100, "validate_every": 10})
    assert cfg.auto_steps and cfg.total_steps == 100
    # nothing new reaches the params of a run without validation (adding the options reruns no training)
    plain = result_dict(TrainConfig.parse({"validate_models": 8, "patience": 5, "max_steps": 7, "cooldown": 0.5}))
    assert plain == result_dict(TrainConfig.parse({}))
    auto = {"steps": "auto", "max_steps": 100, "validate_every": 10}
    assert result_dict(TrainConfig.parse(auto))["cooldown"] == 0.2  # the default under steps: auto
    assert "cooldown" not in result_dict(TrainConfig.parse({**auto, "cooldown": None}))  # null: the rule as before
    with pytest.raises(ConfigError, match="cooldown"):
        TrainConfig.parse({**auto, "cooldown": 1.5})
    on = result_dict(TrainConfig.parse({"validate_every": 50}))
    assert on["validate_every"] == 50 and on["validate_models"] == 4 and "patience" not in on
    # with validation, the training stage's params include the data and the evaluator it scores with
    config = {"experiments": {"e": {"data": {"name": "digits"}, "zoos": {"z": {"arch": "cnn_s"}},
                                    "train": {"validate_every": 50}}}}  # fmt: skip
    params = stage_params(resolve_config(config)["e"]["z"], "train_generator")
    assert params["evaluator"] == "classification" and params["data"]["name"] == "digits"
    del config["experiments"]["e"]["train"]
    assert set(stage_params(resolve_config(config)["e"]["z"], "train_generator")) == {"generator", "train"}


# --- the recipe rules -------------------------------------------------------------------------------------------


def test_recipe_rules_reproduce_the_shipped_choices():
    from rpg.zoo.models import build_model

    def sizes(model):
        return [v.numel() for v in model.state_dict().values() if v.is_floating_point() and v.numel() > 1]

    cnn_m = sizes(build_model("cnn_m", {}))
    vit_kwargs = dict(img_size=8, patch_size=2, embed_dim=32, depth=2, num_heads=2, global_pool="avg",
                      class_token=False, num_classes=10)  # fmt: skip
    vit = sizes(build_model("vit_tiny_patch16_224", vit_kwargs))
    assert recipe.token_size(cnn_m)[0] == 64 and recipe.num_tokens(cnn_m, 64) == 183  # config.yaml
    assert recipe.token_size(vit)[0] == 128  # config.yaml's vit override
    assert recipe.token_size([9216] * 6 + [48] * 50)[0] == 256  # small zoos: at most the paper's tiny 256
    assert recipe.token_size([200_000, 100_000, 75_738])[0] == 256  # test_timm scale
    assert recipe.token_size([11_700_000])[0] == 8192  # ResNet-18 scale: the paper's default
    assert recipe.token_size([86_600_000])[0] == 16384  # beyond: the largest
    assert recipe.diffusion_batch(183)[0] == 128 and recipe.diffusion_batch(1513)[0] == 384
    assert recipe.diffusion_batch(100_000)[0] == 1024
    assert recipe.lr(128, 11_000)[0] == 3e-3 and recipe.lr(4096, 11_700_000)[0] == 3e-5
    assert recipe.lr(8192, 86_600_000)[0] == 1e-5 and 3e-5 < recipe.lr(1024, 1_000_000)[0] < 3e-3
    assert recipe.warmup_steps(3000)[0] == 50 and recipe.warmup_steps(100)[0] == 20
    cfg = TrainConfig.parse({"steps": "auto", "max_steps": 6000, "validate_every": 100, "lr": "auto",
                             "warmup_steps": "auto", "diffusion_batch": "auto"})  # fmt: skip
    resolved, chosen = recipe.resolve_train(cfg, tokens=183, parameters=11_000, width=128)
    assert (resolved.lr, resolved.warmup_steps, resolved.diffusion_batch) == (3e-3, 100, 128)
    assert set(chosen) == {"lr", "warmup_steps", "diffusion_batch"} and all(c["reason"] for c in chosen.values())
    assert recipe.resolve_train(TrainConfig.parse({}), tokens=1, parameters=1, width=1)[1] == {}
    # the width: config.yaml's 128 for tokens of 64 and 128, test_timm's 256 at 256, the paper's 8192 at most
    assert [recipe.dim(k)[0] for k in (16, 64, 128, 256, 8192, 16384)] == [128, 128, 128, 256, 8192, 8192]
    gen, chosen = recipe.resolve_generator(GeneratorConfig.parse({"dim": "auto"}), token_size=256)
    assert gen.dim == 256 and chosen["dim"]["value"] == 256 and "token size" in chosen["dim"]["reason"]
    fixed = GeneratorConfig.parse({"dim": 64})
    assert recipe.resolve_generator(fixed, token_size=256) == (fixed, {})
    with pytest.raises(ConfigError, match="headdim"):  # the chosen width is checked like a configured one
        recipe.resolve_generator(GeneratorConfig.parse({"dim": "auto", "headdim": 96}), token_size=256)


def test_generator_dim_auto_in_training(tmp_path, token_dir, tiny_gen, tiny_train):
    """``generator.dim: auto`` trains at the chosen width, and config.json says which and why."""
    train_generator(token_dir=token_dir, out_dir=tmp_path, generator_cfg={**tiny_gen, "dim": "auto"},
                    train_cfg={**tiny_train, "steps": 2}, device="cpu")  # fmt: skip
    config = read_json(tmp_path / "config.json")
    assert config["generator"]["dim"] == 128 and config["recipe"]["dim"]["value"] == 128
    weights = load_safetensors(tmp_path / "model.safetensors")[0]
    assert weights["permutation.embedding.weight"].shape[-1] == 128


def test_token_size_auto_in_the_store(tmp_path, token_dir):
    store = TokenStore(token_dir)
    paths = [store.directory.parent / "zoo" / p.split("/zoo/", 1)[1] for p in store.index["checkpoint"]]
    write_token_store(paths, tmp_path / "auto", token_size="auto", shard_size=4)
    auto = TokenStore(tmp_path / "auto")
    assert auto.layout.token_size == 64 and auto.meta["recipe"]["token_size"]["value"] == 64
    assert "parameters" in auto.meta["recipe"]["token_size"]["reason"]


# --- validation inside training, on the fake zoo -----------------------------------------------------------------


class _BN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(8))
        self.register_buffer("running_var", torch.ones(8))
        self.register_buffer("num_batches_tracked", torch.tensor(0))


class FakeNet(nn.Module):
    """The fake zoo's architecture (conftest: fc, bn.weight, bn.running_var, head)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.bn, self.head = nn.Linear(5, 8), _BN(), nn.Linear(8, 3, bias=False)

    def forward(self, x):
        return self.head(torch.relu(self.fc(x)) * self.bn.weight / self.bn.running_var.sqrt())


class FakeEvaluator:
    """Accuracy on 64 fixed inputs against the labels of the fake zoo's first checkpoint."""

    name, main_metric = "fake", "accuracy"

    def __init__(self, store: TokenStore) -> None:
        self.x = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
        ref = FakeNet()
        ref.load_state_dict(store.checkpoint_state_dict(0))
        with torch.no_grad():
            self.labels = ref(self.x).argmax(1)
        self.calls = 0

    def evaluate(self, model, split):
        assert split == "val"
        self.calls += 1
        with torch.no_grad():
            wrong = model(self.x).argmax(1) != self.labels
        return Outcome(main="accuracy", metrics={"accuracy": 1 - float(wrong.float().mean())}, failures=wrong)


def fake_validator(token_dir, **kw):
    store = TokenStore(token_dir)
    return SampleValidator(store=store, evaluator=FakeEvaluator(store), make_model=FakeNet, **kw)


def test_validation_logs_beside_the_loss_and_leaves_training_unchanged(tmp_path, token_dir, tiny_gen, tiny_train):
    off, on = tmp_path / "off", tmp_path / "on"
    train_generator(token_dir=token_dir, out_dir=off, generator_cfg=tiny_gen, train_cfg=tiny_train, device="cpu")
    validator = fake_validator(token_dir, num_models=3, sampling_steps=3)
    train_generator(token_dir=token_dir, out_dir=on, generator_cfg=tiny_gen, device="cpu", validator=validator,
                    train_cfg={**tiny_train, "validate_every": 4})  # fmt: skip
    a, b = load_safetensors(off / "model.safetensors")[0], load_safetensors(on / "model.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical weights
    log_off, log_on = pd.read_csv(off / "train_log.csv"), pd.read_csv(on / "train_log.csv")
    assert list(log_off.columns) == ["step", "loss", "lr", "time"]  # without validation: today's log
    assert list(log_on.columns) == ["step", "loss", "lr", "time", *VAL_COLUMNS]
    assert log_on["loss"].tolist() == log_off["loss"].tolist()
    validated = log_on[log_on["val_score"].notna()]
    assert validated["step"].tolist() == [4, 6]  # every 4 steps and at the last
    assert validated["val_score"].between(0, 1).all() and validated["val_distinct"].between(0, 3).all()
    assert (validated["val_nearest_distance"] > 0).all() and validated["val_target"].between(0, 1).all()
    assert log_on[log_on["val_score"].isna()]["val_distinct"].isna().all()
    training = read_json(on / "config.json")["training"]
    assert training["stopped"] == "steps" and training["kept_step"] == 6 and training["validations"] == 2
    assert 0 < training["validation_share"] < 1
    assert read_json(off / "config.json")["training"] == {"steps_run": 6, "kept_step": 6, "stopped": "steps"}
    # the same validation twice gives the same numbers (own seeded noise, no global RNG)
    again = fake_validator(token_dir, num_models=3, sampling_steps=3)
    train_generator(token_dir=token_dir, out_dir=tmp_path / "again", generator_cfg=tiny_gen, device="cpu",
                    validator=again, train_cfg={**tiny_train, "validate_every": 4})  # fmt: skip
    log_again = pd.read_csv(tmp_path / "again" / "train_log.csv")
    assert log_again["val_score"].equals(log_on["val_score"])
    with pytest.raises(ValueError, match="validation"):
        train_generator(token_dir=token_dir, out_dir=tmp_path / "x", generator_cfg=tiny_gen, device="cpu",
                        train_cfg={**tiny_train, "validate_every": 4})  # fmt: skip


class ScriptedValidator:
    """Returns scripted validation scores (target 0.9), one per call, after ``delay`` seconds (or ``delay[i]`` for
    call i)."""

    def __init__(self, scores, delay: float | list[float] = 0.0) -> None:
        self.scores, self.calls, self.delay = list(scores), 0, delay

    def __call__(self, generator):
        time.sleep(self.delay[self.calls] if isinstance(self.delay, list) else self.delay)
        score = self.scores[self.calls]
        self.calls += 1
        return {"val_score": score, "val_target": 0.9, "val_distinct": 4, "val_nearest_distance": 1.0,
                "val_time": 0.01, "scores": [score] * 4}  # fmt: skip


AUTO = {
    "steps": "auto",
    "max_steps": 12,
    "validate_every": 2,
    "patience": 2,
    "val_tolerance": 0.01,
    "cooldown": None,
}  # the rule alone (the cool-down: COOL below)
SCRIPT = [0.3, 0.6, 0.88, 0.95, 0.93, 0.1]  # within 0.01 of 0.9 at steps 8 and 10: stop at 10, keep 8 (the best)


def test_auto_steps_stops_and_keeps_the_best(tmp_path, token_dir, tiny_gen, tiny_train):
    out = tmp_path / "auto"
    train_generator(token_dir=token_dir, out_dir=out, generator_cfg=tiny_gen, device="cpu",
                    train_cfg={**tiny_train, **AUTO}, validator=ScriptedValidator(SCRIPT))  # fmt: skip
    log = pd.read_csv(out / "train_log.csv")
    assert log["step"].max() == 10 and log["val_score"].dropna().tolist() == SCRIPT[:5]
    cfg = read_json(out / "config.json")
    assert cfg["training"]["stopped"] == "reached" and cfg["training"]["kept_step"] == 8
    assert cfg["training"]["best_val_score"] == 0.95 and cfg["training"]["steps_run"] == 10
    kept, meta = load_safetensors(out / "model.safetensors")
    assert int(meta["steps"]) == 8
    # the kept weights are those of step 8 of the same schedule (a run over max_steps, killed after 8 steps)
    ref = tmp_path / "ref"
    train_generator(token_dir=token_dir, out_dir=ref, generator_cfg=tiny_gen, device="cpu", stop_after=8,
                    train_cfg={**tiny_train, **AUTO}, validator=ScriptedValidator([0.1, 0.2, 0.3, 0.4]))  # fmt: skip
    state = torch.load(ref / "resume" / "state.pt", weights_only=True)
    assert state["step"] == 8
    for name, value in state["ema"].items():
        assert torch.equal(kept[f"ema.{name}"], value), name
    for name, value in state["model"].items():
        assert torch.equal(kept[name], value), name
    # a plateau stops too, once the scores have left their starting level; never reaching nor flattening runs to
    # max_steps and keeps the best
    out2 = tmp_path / "plateau"
    train_generator(token_dir=token_dir, out_dir=out2, generator_cfg=tiny_gen, device="cpu",
                    train_cfg={**tiny_train, **AUTO},
                    validator=ScriptedValidator([0.2, 0.5, 0.4, 0.45, 0.9]))  # fmt: skip
    training = read_json(out2 / "config.json")["training"]
    assert (training["stopped"], training["kept_step"], training["steps_run"]) == ("plateau", 4, 8)
    out3 = tmp_path / "max"
    rising = ScriptedValidator([0.1 * i for i in range(6)])
    train_generator(token_dir=token_dir, out_dir=out3, generator_cfg=tiny_gen, device="cpu",
                    train_cfg={**tiny_train, **AUTO}, validator=rising)  # fmt: skip
    training = read_json(out3 / "config.json")["training"]
    assert training["stopped"] == "max_steps" and training["kept_step"] == 12 and training["steps_run"] == 12


@pytest.fixture
def spare_core(monkeypatch):
    """Validation beside training whatever the machine's CPU count (it needs twice the training's threads)."""
    monkeypatch.setattr(trainer_module, "_spare_core", lambda threads: True)


@pytest.mark.parametrize("overlap", [False, True])
def test_auto_steps_resume_after_a_kill(tmp_path, token_dir, tiny_gen, tiny_train, overlap, spare_core):
    full, killed = tmp_path / "full", tmp_path / "killed"
    cfg = {**tiny_train, **AUTO, "validate_overlap": overlap, "save_every": 2}
    train_generator(token_dir=token_dir, out_dir=full, generator_cfg=tiny_gen, device="cpu", train_cfg=cfg,
                    validator=ScriptedValidator(SCRIPT))  # fmt: skip
    # killed after 9 steps: state saved at 8 with the validations so far and the best (step 8) weights; with
    # overlap the validation of step 8 (slow) was under way at the save: the resumed run validates step 8 again
    train_generator(token_dir=token_dir, out_dir=killed, generator_cfg=tiny_gen, device="cpu", train_cfg=cfg,
                    validator=ScriptedValidator(SCRIPT, delay=[0, 0, 0, 1.0]), stop_after=9)  # fmt: skip
    state = torch.load(killed / "resume" / "state.pt", weights_only=True)
    if overlap:
        assert state["step"] == 8 and state["validation"]["steps"] == [2, 4, 6] and state["validation_pending"] == 8
    else:
        assert state["step"] == 8 and state["validation"]["best_step"] == 8 and state["best"]["model"]
    done = len(state["validation"]["steps"])
    train_generator(token_dir=token_dir, out_dir=killed, generator_cfg=tiny_gen, device="cpu", train_cfg=cfg,
                    validator=ScriptedValidator(SCRIPT[done:]))  # fmt: skip
    a, b = pd.read_csv(full / "train_log.csv"), pd.read_csv(killed / "train_log.csv")
    assert a.drop(columns=["time", "val_time"]).equals(b.drop(columns=["time", "val_time"]))
    wa, wb = load_safetensors(full / "model.safetensors")[0], load_safetensors(killed / "model.safetensors")[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ta, tb = read_json(full / "config.json")["training"], read_json(killed / "config.json")["training"]
    for key in ("stopped", "kept_step", "steps_run", "best_step", "validations"):
        assert ta[key] == tb[key], key


def test_cooldown_schedule_and_the_rule_that_starts_it():
    assert linear_cooldown(10, start=10, end=15, factor=0.8) == pytest.approx(0.8)
    assert linear_cooldown(14, start=10, end=15, factor=0.8) == pytest.approx(0.16)
    assert linear_cooldown(99, start=10, end=15, factor=0.8, min_ratio=0.1) == pytest.approx(0.1)
    rule = AutoStop(target=0.9, tolerance=0.01, patience=2, min_delta=0.0)
    for step, score in ((10, 0.95), (20, 0.5), (30, 0.45)):
        rule.update(step, score)
    assert rule.reason == "plateau"
    rule.update(40, 0.95), rule.update(50, 0.95)
    assert rule.reason == "plateau"  # the first reason stays while a cool-down runs on
    assert rule.lr_factor(31, lambda s: 1.0, 0.0) == 1.0 and not rule.cooling(31)
    rule.begin_cooldown(30, 40, factor=0.5)
    assert rule.cooling(39) and not rule.cooling(40)
    assert rule.lr_factor(29, lambda s: 1.0, 0.0) == 1.0 and rule.lr_factor(35, lambda s: 1.0, 0.0) == 0.25
    again = AutoStop(target=None, tolerance=0.01, patience=2, min_delta=0.0)
    again.load_state_dict(rule.state_dict())
    assert again.state_dict() == rule.state_dict() and again.cooldown_end == 40


COOL = {**AUTO, "max_steps": 20, "cooldown": 0.5}
COOL_SCRIPT = [*SCRIPT[:5], 0.96, 0.9, 0.91]  # fires at 10 (reached): cools down over 5 steps, validated at 12, 14, 15


def test_auto_steps_cool_down_before_stopping(tmp_path, token_dir, tiny_gen, tiny_train):
    out = tmp_path / "cool"
    train_generator(token_dir=token_dir, out_dir=out, generator_cfg=tiny_gen, device="cpu",
                    train_cfg={**tiny_train, **COOL}, validator=ScriptedValidator(COOL_SCRIPT))  # fmt: skip
    log = pd.read_csv(out / "train_log.csv")
    assert log["step"].max() == 15
    assert log.dropna(subset=["val_score"])["step"].tolist() == [2, 4, 6, 8, 10, 12, 14, 15]
    training = read_json(out / "config.json")["training"]
    assert training["stopped"] == "reached" and training["cooldown"] == {"from_step": 10, "steps": 5}
    assert training["steps_run"] == 15 and training["kept_step"] == 12  # the best of the whole run, in the cool-down
    # the lr of steps 11..15 falls linearly from the cosine's value at step 10 towards 0 (min_lr_ratio 0)
    cfg = TrainConfig.parse({**tiny_train, **COOL})
    at10 = cfg.lr * warmup_cosine(10, lr=1.0, warmup=cfg.warmup_steps, total=20)
    lrs = log.set_index("step")["lr"]
    assert [lrs[s] for s in range(11, 16)] == pytest.approx([at10 * (1 - k / 5) for k in range(5)])
    assert lrs[10] == pytest.approx(cfg.lr * warmup_cosine(9, lr=1.0, warmup=cfg.warmup_steps, total=20))
    # without cooldown the same validations stop at 10 (the rule as before)
    plain = tmp_path / "plain"
    train_generator(token_dir=token_dir, out_dir=plain, generator_cfg=tiny_gen, device="cpu",
                    train_cfg={**tiny_train, **COOL, "cooldown": None},
                    validator=ScriptedValidator(COOL_SCRIPT))  # fmt: skip
    assert read_json(plain / "config.json")["training"]["steps_run"] == 10
    # killed in the cool-down (after 13 steps: saved at 12, the new best) and resumed: the same run
    killed, sync = tmp_path / "killed", {**tiny_train, **COOL, "validate_overlap": False}
    train_generator(token_dir=token_dir, out_dir=killed, generator_cfg=tiny_gen, device="cpu", stop_after=13,
                    train_cfg=sync, validator=ScriptedValidator(COOL_SCRIPT))  # fmt: skip
    state = torch.load(killed / "resume" / "state.pt", weights_only=True)
    assert state["step"] == 12 and state["validation"]["cooldown_end"] == 15
    train_generator(token_dir=token_dir, out_dir=killed, generator_cfg=tiny_gen, device="cpu",
                    train_cfg=sync, validator=ScriptedValidator(COOL_SCRIPT[6:]))  # fmt: skip
    a, b = pd.read_csv(out / "train_log.csv"), pd.read_csv(killed / "train_log.csv")
    assert a.drop(columns=["time", "val_time"]).equals(b.drop(columns=["time", "val_time"]))
    wa, wb = load_safetensors(out / "model.safetensors")[0], load_safetensors(killed / "model.safetensors")[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert read_json(killed / "config.json")["training"]["cooldown"] == training["cooldown"]


@pytest.mark.parametrize(("cfg", "script"), [(AUTO, SCRIPT), (COOL, COOL_SCRIPT)], ids=["stop", "cooldown"])
def test_overlapped_validation_gives_the_run_of_validation_in_turn(tmp_path, token_dir, tiny_gen, tiny_train, cfg,
                                                                    script, caplog, spare_core):  # fmt: skip
    """Validations on a thread beside the next steps (slow ones: the steps after a validation run speculatively and
    are undone when it stops training or starts the cool-down) give the same weights, log and stop as in turn."""
    caplog.set_level(logging.INFO, logger="rpg.generator.trainer")
    runs = {}
    for overlap, delay in ((False, 0.0), (True, 0.0), (True, 0.15)):
        out = tmp_path / f"{overlap}-{delay}"
        caplog.clear()
        train_generator(token_dir=token_dir, out_dir=out, generator_cfg=tiny_gen, device="cpu",
                        train_cfg={**tiny_train, **cfg, "validate_overlap": overlap},
                        validator=ScriptedValidator(script, delay=delay))  # fmt: skip
        training = read_json(out / "config.json")["training"]
        assert training["validation_overlap"] is overlap
        assert ("trained beside its validation are undone" in caplog.text) is overlap  # the step back was taken
        runs[overlap, delay] = (
            load_safetensors(out / "model.safetensors")[0],
            pd.read_csv(out / "train_log.csv").drop(columns=["time", "val_time"]),
            {k: v for k, v in training.items() if "seconds" not in k and "validation_" not in k},
        )
    (wa, la, ta) = runs[False, 0.0]
    for key in ((True, 0.0), (True, 0.15)):
        wb, lb, tb = runs[key]
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), key
        assert la.equals(lb), key
        assert ta == tb, key


def test_overlapped_validation_scores_like_validation_in_turn(tmp_path, token_dir, tiny_gen, tiny_train,
                                                               monkeypatch):  # fmt: skip
    """The real validator on its thread: the same scores, distinct counts and distances as in the training thread;
    without CPUs for the validation's threads beside the training's, validation runs in turn."""
    logs = []
    for overlap, spare in ((False, True), (True, True), (True, False)):
        monkeypatch.setattr(trainer_module, "_spare_core", lambda threads, spare=spare: spare)
        out = tmp_path / f"{overlap}-{spare}"
        train_generator(token_dir=token_dir, out_dir=out, generator_cfg=tiny_gen, device="cpu",
                        validator=fake_validator(token_dir, num_models=3, sampling_steps=3),
                        train_cfg={**tiny_train, "steps": 8, "validate_every": 2,
                                   "validate_overlap": overlap})  # fmt: skip
        logs.append(pd.read_csv(out / "train_log.csv").drop(columns=["time", "val_time"]))
        assert read_json(out / "config.json")["training"]["validation_overlap"] is (overlap and spare)
    assert logs[0].equals(logs[1]) and logs[0].equals(logs[2]) and logs[0]["val_score"].notna().sum() == 4


@pytest.mark.parametrize("cpus, threads, beside", [(1, 1, False), (2, 1, True), (3, 2, False), (4, 2, True)])
def test_validation_beside_training_needs_cpus_for_both(monkeypatch, cpus, threads, beside):
    """The validation's thread runs as many intra-op threads as the training's: overlap only where both fit."""
    monkeypatch.setattr(trainer_module.os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert trainer_module._spare_core(threads) is beside


# --- end to end -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_pipeline_with_auto_steps(tiny_run, tmp_path):
    """The tiny config with ``steps: auto``: validation on digits with the classification evaluator, the training
    stops by its rule, the generator kept is the best validation's, and the evaluation reads the validation log.
    Run in a copy of the session's finished tiny run: only the training and what follows it rerun."""
    import json
    from pathlib import Path

    import yaml
    from snakemake_helpers import copy_run, job_counts, snakemake

    tiny = Path(__file__).parent / "configs" / "tiny.yaml"
    cfg = yaml.safe_load(tiny.read_text())
    cfg["experiments"]["tiny"]["train"].update(steps="auto", max_steps=300, validate_every=50, patience=2)
    config = tmp_path / "auto.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = copy_run(tiny_run, tmp_path / "work")
    proc = snakemake("--cores", "2", "--configfile", str(config), "--directory", str(work),
                     "results/tiny/evaluation/cnn_s/summary.json")  # fmt: skip
    assert job_counts(proc.stdout + proc.stderr) == {"train_generator": 1, "generate": 1, "evaluate": 1}
    gen = work / "results" / "tiny" / "generator" / "cnn_s"
    training = json.loads((gen / "config.json").read_text())["training"]
    assert training["stopped"] in ("reached", "plateau", "max_steps") and training["validations"] >= 2
    assert training["kept_step"] == training["best_step"] and training["kept_step"] % 50 == 0
    log = pd.read_csv(gen / "train_log.csv")
    assert log["step"].max() == training["steps_run"] and log["val_score"].notna().sum() == training["validations"]
    assert 0.3 < log["val_target"].dropna().iloc[0] <= 1.0  # the originals' val accuracy
    assert log.loc[log["step"] == training["kept_step"], "val_score"].item() == training["best_val_score"]
    summary = json.loads((work / "results" / "tiny" / "evaluation" / "cnn_s" / "summary.json").read_text())
    assert summary["diagnosis"]["validation_trend"] is not None  # the evaluation read the validation columns
    assert "validation at step 50" in (work / "results" / "tiny" / "logs" / "train" / "cnn_s.log").read_text()
