"""Generator training on a real (tiny) token store: outputs, exact resume after a kill, DDP with 2 processes."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from rpg.io import load_safetensors, read_json, save_safetensors
from rpg.tokens.store import TokenStore, write_token_store
from rpg.train import batch_rows, lr_factor, train_config, train_generator

torch.set_num_threads(1)
GEN = {"preset": "tiny", "dim": 32, "d_state": 8, "headdim": 16, "chunk_size": 8,
       "denoiser_channels": [1, 4, 8, 4, 1], "time_dim": 16}  # fmt: skip
TRAIN = {"steps": 6, "batch_size": 2, "diffusion_batch": 16, "lr": 1e-3, "warmup_steps": 2, "save_every": 2,
         "log_every": 2, "seed": 0, "ema_decay": 0.9}  # fmt: skip


def make_token_store(root, *, runs: int = 2, per_run: int = 3, tasks: bool = False, token_size: int = 16):
    """A zoo of tiny fake checkpoints (linear + BatchNorm entries) tokenized into ``root/tokens``."""
    paths = []
    keys = ["fc.weight", "fc.bias", "bn.weight", "bn.running_var", "bn.num_batches_tracked", "head.weight"]
    for r in range(runs):
        g = torch.Generator().manual_seed(100 + r)
        base = {"fc.weight": torch.randn(8, 5, generator=g), "fc.bias": torch.randn(8, generator=g),
                "bn.weight": 1 + 0.1 * torch.randn(8, generator=g), "bn.running_var": torch.rand(8, generator=g) + 0.5,
                "bn.num_batches_tracked": torch.tensor(7), "head.weight": torch.randn(3, 8, generator=g)}  # fmt: skip
        for s in range(per_run):
            sd = {k: v + 0.01 * s * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                  for k, v in base.items()}  # fmt: skip
            task = [int(b) for b in torch.randint(0, 2, (10,), generator=g)] if tasks else None
            meta = {"kind": "checkpoint", "arch": "fake", "arch_kwargs": {}, "run": r, "seed": r, "step": s, "index": s,
                    "val_accuracy": 0.5, "task": task, "num_classes": 3, "state_dict_keys": keys}  # fmt: skip
            path = root / "zoo" / f"run{r}" / f"ckpt_{s:03d}.safetensors"
            save_safetensors(sd, path, meta)
            paths.append(path)
    write_token_store(paths, root / "tokens", token_size=token_size, shard_size=4)
    return root / "tokens"


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    return make_token_store(tmp_path_factory.mktemp("zoo"))


def test_schedule_and_batches():
    assert lr_factor(0, warmup=4, total=10) == pytest.approx(0.25)
    assert lr_factor(4, warmup=4, total=10) == pytest.approx(1.0)
    assert lr_factor(10, warmup=4, total=10, min_ratio=0.1) == pytest.approx(0.1)
    rows = [r for s in range(3) for r in batch_rows(s, batch_size=2, num_checkpoints=6, seed=0)]
    assert sorted(rows) == list(range(6))  # one epoch = every checkpoint once
    rows = batch_rows(5, batch_size=4, num_checkpoints=6, seed=1)  # crosses an epoch boundary
    assert len(rows) == 4 and rows == batch_rows(5, batch_size=4, num_checkpoints=6, seed=1)
    with pytest.raises(ValueError, match="unknown train config keys"):
        train_config({"stepz": 3})
    with pytest.raises(ValueError):
        train_config({"steps": 0})


def test_train_writes_outputs(tmp_path, token_dir):
    out = tmp_path / "gen"
    train_generator(token_dir=token_dir, out_dir=out, generator_cfg=GEN, train_cfg=TRAIN, device="cpu")
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
    assert (out / "resume" / "state.pt").is_file()


def test_killed_run_resumes_to_the_same_loss_curve(tmp_path, token_dir):
    full, killed = tmp_path / "full", tmp_path / "killed"
    train_generator(token_dir=token_dir, out_dir=full, generator_cfg=GEN, train_cfg=TRAIN, device="cpu")
    # killed after 3 steps: the last save was at step 2, no outputs yet
    train_generator(token_dir=token_dir, out_dir=killed, generator_cfg=GEN,
                    train_cfg={**TRAIN, "max_steps_this_call": 3}, device="cpu")  # fmt: skip
    assert not (killed / "model.safetensors").exists()
    state = torch.load(killed / "resume" / "state.pt", weights_only=True)
    assert state["step"] == 2
    train_generator(token_dir=token_dir, out_dir=killed, generator_cfg=GEN, train_cfg=TRAIN, device="cpu")
    a, b = pd.read_csv(full / "train_log.csv"), pd.read_csv(killed / "train_log.csv")
    assert a["step"].tolist() == b["step"].tolist()
    assert torch.allclose(torch.tensor(a["loss"].values), torch.tensor(b["loss"].values), rtol=0, atol=1e-6)
    wa, wb = load_safetensors(full / "model.safetensors")[0], load_safetensors(killed / "model.safetensors")[0]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    # a changed config does not resume from a foreign state
    train_generator(token_dir=token_dir, out_dir=killed, generator_cfg=GEN,
                    train_cfg={**TRAIN, "lr": 5e-4, "steps": 2}, device="cpu")  # fmt: skip
    assert pd.read_csv(killed / "train_log.csv")["step"].tolist() == [1, 2]


def test_ddp_two_processes_gloo(tmp_path, token_dir):
    out = tmp_path / "ddp"
    train_generator(token_dir=token_dir, out_dir=out, generator_cfg=GEN,
                    train_cfg={**TRAIN, "steps": 3, "nproc": 2, "threads": 1}, device="cpu")  # fmt: skip
    log = pd.read_csv(out / "train_log.csv")
    assert log["step"].tolist() == [1, 2, 3] and log["loss"].map(math.isfinite).all()
    assert (out / "model.safetensors").is_file() and read_json(out / "config.json")["train"]["nproc"] == 2
