"""Generator training on a real (tiny) token store: outputs, exact resume after a kill, DDP with 2 processes."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from rpg.config import ConfigError, GeneratorConfig, TrainConfig
from rpg.generator.model import build_generator
from rpg.generator.trainer import EMA, step_seed, train_generator
from rpg.io import load_safetensors, read_json
from rpg.optim import batch_rows, warmup_cosine
from rpg.tokens.store import TokenStore


def lr_factor(step, **kw):
    return warmup_cosine(step, lr=1.0, **kw)


def test_schedule_and_batches():
    assert lr_factor(0, warmup=4, total=10) == pytest.approx(0.25)
    assert lr_factor(4, warmup=4, total=10) == pytest.approx(1.0)
    assert lr_factor(10, warmup=4, total=10, min_ratio=0.1) == pytest.approx(0.1)
    rows = [r for s in range(3) for r in batch_rows(s, batch_size=2, num_checkpoints=6, seed=0)]
    assert sorted(rows) == list(range(6))  # one epoch = every checkpoint once
    rows = batch_rows(5, batch_size=4, num_checkpoints=6, seed=1)  # crosses an epoch boundary
    assert len(rows) == 4 and rows == batch_rows(5, batch_size=4, num_checkpoints=6, seed=1)
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.parse({"stepz": 3})
    with pytest.raises(ValueError):
        TrainConfig.parse({"steps": 0})


def test_train_writes_outputs(tmp_path, token_dir, tiny_gen, tiny_train):
    out = tmp_path / "gen"
    train_generator(token_dir=token_dir, out_dir=out, generator_cfg=tiny_gen, train_cfg=tiny_train, device="cpu")
    log = pd.read_csv(out / "train_log.csv")
    assert list(log.columns) == ["step", "loss", "lr", "time"]
    assert log["step"].tolist() == [1, 2, 3, 4, 5, 6] and log["loss"].map(math.isfinite).all()
    assert log["lr"].iloc[0] == pytest.approx(5e-4) and log["lr"].iloc[1] == pytest.approx(1e-3)
    cfg = read_json(out / "config.json")
    store = TokenStore(token_dir)
    assert cfg["num_states"] == 2 and cfg["token_size"] == 16 and cfg["num_tokens"] == store.layout.num_tokens
    assert cfg["generator"]["dim"] == 32 and cfg["token_dir"] == str(token_dir)
    tensors, meta = load_safetensors(out / "model.safetensors")
    assert meta["generate_with"] == "ema"
    assert "ema.denoiser.convs.0.weight" in tensors and "denoiser.convs.0.weight" in tensors
    assert not torch.equal(tensors["ema.denoiser.convs.0.weight"], tensors["denoiser.convs.0.weight"])
    assert not (out / "resume" / "state.pt").exists()  # removed once the outputs are written


def test_killed_run_resumes_to_the_same_loss_curve(tmp_path, token_dir, tiny_gen, tiny_train):
    full, killed = tmp_path / "full", tmp_path / "killed"
    train_generator(token_dir=token_dir, out_dir=full, generator_cfg=tiny_gen, train_cfg=tiny_train, device="cpu")
    # killed after 3 steps: the last save was at step 2, no outputs yet
    train_generator(token_dir=token_dir, out_dir=killed, generator_cfg=tiny_gen,
                    train_cfg=tiny_train, device="cpu", stop_after=3)  # fmt: skip
    assert not (killed / "model.safetensors").exists()
    state = torch.load(killed / "resume" / "state.pt", weights_only=True)
    assert state["step"] == 2
    train_generator(token_dir=token_dir, out_dir=killed, generator_cfg=tiny_gen, train_cfg=tiny_train, device="cpu")
    a, b = pd.read_csv(full / "train_log.csv"), pd.read_csv(killed / "train_log.csv")
    assert a["step"].tolist() == b["step"].tolist()
    assert torch.allclose(torch.tensor(a["loss"].values), torch.tensor(b["loss"].values), rtol=0, atol=1e-6)
    wa, wb = load_safetensors(full / "model.safetensors")[0], load_safetensors(killed / "model.safetensors")[0]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    # a changed config does not resume from a foreign state
    train_generator(token_dir=token_dir, out_dir=killed, generator_cfg=tiny_gen,
                    train_cfg={**tiny_train, "lr": 5e-4, "steps": 2}, device="cpu")  # fmt: skip
    assert pd.read_csv(killed / "train_log.csv")["step"].tolist() == [1, 2]


@pytest.mark.parametrize("coupling", [pytest.param({}, id="paper"), pytest.param(
    {"coupling": "autoregressive", "coupling_block": 2}, id="autoregressive", marks=pytest.mark.slow)])  # fmt: skip
def test_ddp_two_processes_gloo(tmp_path, token_dir, tiny_gen, tiny_train, coupling):
    tiny_gen = {**tiny_gen, **coupling}
    out = tmp_path / "ddp"
    train_generator(token_dir=token_dir, out_dir=out, generator_cfg=tiny_gen,
                    train_cfg={**tiny_train, "steps": 3, "nproc": 2, "threads": 1}, device="cpu")  # fmt: skip
    log = pd.read_csv(out / "train_log.csv")
    assert log["step"].tolist() == [1, 2, 3] and log["loss"].map(math.isfinite).all()
    assert (out / "model.safetensors").is_file() and read_json(out / "config.json")["train"]["nproc"] == 2

    # the same 3 steps in one process: each rank's share of the batch (rows rank::2, its own seeded token subset),
    # gradients averaged, one AdamW step; DDP must give the same parameters and losses
    gcfg, tcfg = GeneratorConfig.parse(tiny_gen), TrainConfig.parse({**tiny_train, "steps": 3})
    store = TokenStore(token_dir)
    torch.manual_seed(tcfg.seed)
    model = build_generator(gcfg, store.layout, store.num_states)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: warmup_cosine(k, lr=1.0, warmup=tcfg.warmup_steps, total=tcfg.steps)
    )
    states = torch.tensor(store.index["state"].tolist())
    losses = []
    for step in range(tcfg.steps):
        rows = batch_rows(step, batch_size=tcfg.batch_size, num_checkpoints=len(store), seed=tcfg.seed)
        opt.zero_grad()
        total = 0.0
        for rank in range(2):
            r = rows[rank::2]
            gen = torch.Generator().manual_seed(step_seed(tcfg.seed, step, rank))
            loss = model(store.tokens(r), states[r], diffusion_batch=math.ceil(tcfg.diffusion_batch / 2), generator=gen)
            (loss / 2).backward()
            total += float(loss.detach()) / 2
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(total)
    assert log["loss"].tolist() == pytest.approx(losses, rel=1e-5)
    ddp = load_safetensors(out / "model.safetensors")[0]
    for name, p in model.named_parameters():
        assert torch.allclose(ddp[name], p.detach(), atol=1e-6), name


def test_ema_averages_parameters_and_float_buffers():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(net, decay=0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.train()(torch.randn(16, 3) * 3 + 2)  # moves the BatchNorm running statistics
    ema.update(net, num_updates=100)  # decay min(0.5, 101/110) = 0.5
    after = net.state_dict()
    for key in ("0.weight", "1.running_mean", "1.running_var"):
        assert torch.allclose(ema.state[key], 0.5 * before[key] + 0.5 * after[key]), key
    assert torch.equal(ema.state["1.num_batches_tracked"], after["1.num_batches_tracked"])  # integers: copied
