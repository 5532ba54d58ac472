"""configs/imagenet.yaml: every model of the paper's ImageNet preset through collect -> tokenize -> train -> generate
on a tiny image tree on a CPU (pretrained=False, a few steps each).

The target architectures, token sizes, normalisation, permutation states and generator structure (widening,
denoiser depth) are the preset's; only what cannot fit a CPU test is shrunk: the dataset (4 images; 64 pixels for the
convolutional nets, which take any size, 224 for the ViTs, whose patch grid is part of their parameters), the number
of checkpoints, the generator's widths and the numbers of steps (one DDIM step: the sampling of ConvNeXt-L's 12k
tokens of 16384 is most of the test's time). The generated file must load into the architecture with strict=True and
run a forward pass at 224 pixels.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rpg.config import resolve_config
from rpg.stages.collect import collect_run
from rpg.stages.generate import generate, model_name
from rpg.stages.tokenize import tokenize
from rpg.stages.train import train
from rpg.zoo.checkpoint import load_checkpoint
from rpg.zoo.models import build_model

PRESET = Path(__file__).resolve().parent.parent / "configs" / "imagenet.yaml"
RAW = yaml.safe_load(PRESET.read_text())
ZOOS = list(RAW["experiments"]["imagenet"]["zoos"])
PAPER_MODELS = {"resnet18", "resnet50_gn", "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
                "convnext_atto", "convnext_large"}  # fmt: skip


def test_the_preset_covers_the_paper_models_and_recipes():
    settings = resolve_config(RAW)["imagenet"]
    assert {s.arch for s in settings.values()} == PAPER_MODELS
    lrs = {s.arch: s.collect.finetune_lr for s in settings.values()}
    assert lrs == {"resnet18": 1e-5, "resnet50_gn": 1e-6, "vit_tiny_patch16_224": 1e-5, "vit_small_patch16_224": 1e-6,
                   "vit_base_patch16_224": 3e-6, "convnext_atto": 1e-6, "convnext_large": 3e-5}  # fmt: skip
    for s in settings.values():
        assert (s.collect.epochs, s.collect.finetune_epochs, s.collect.checkpoints) == (0, 1.0, 50)
        assert s.tokens.state == "checkpoint" and s.init.endswith(".safetensors")
        large = s.arch in ("vit_base_patch16_224", "convnext_large")
        assert s.tokens.token_size == (16384 if large else 8192)
        if large:
            assert (s.generator.dim, s.generator.widen_to) == (12288, 16384)
            assert s.generator.denoiser_channels == [1, 64, 96, 64, 1] and s.train.adamw_8bit
        else:
            assert s.generator.dim == 8192 and s.generator.widen_to is None


def _tree(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 1)):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")


def _cpu_config(root: Path, image_size: int = 224) -> dict:
    cfg = copy.deepcopy(RAW)
    exp = cfg["experiments"]["imagenet"]
    exp["device"] = "cpu"
    exp["data"] = {**exp["data"], "root": str(root), "image_size": image_size, "batch_size": 2, "workers": 0}
    for zoo in exp["zoos"].values():
        zoo["init"] = "random"
        zoo["collect"] = {**zoo["collect"], "checkpoints": 2, "batch_size": 2, "eval_batch_size": 2}
        gen = zoo.setdefault("generator", {})
        if gen.get("widen_to"):  # keep the widening, shrink the widths
            gen.update(dim=32, widen_to=48)
    exp["generator"] = {**exp["generator"], "dim": 32, "d_state": 8, "headdim": 16, "chunk_size": 64, "time_dim": 16,
                        "denoiser_channels": [1, 2, 4, 8, 4, 2, 1]}  # the base preset's depth, narrow  # fmt: skip
    for zoo in exp["zoos"].values():
        if "denoiser_channels" in zoo.get("generator", {}):
            zoo["generator"]["denoiser_channels"] = [1, 2, 4, 2, 1]
    exp["train"] = {**exp["train"], "steps": 2, "batch_size": 2, "diffusion_batch": 4, "warmup_steps": 1,
                    "threads": 1, "save_every": 100}  # fmt: skip
    # float32 sampling: without native bf16 instructions a CPU emulates bf16 convs (about 10x slower); the bf16 path
    # is checked in tests/test_throughput_options.py
    exp["generate"] = {**exp["generate"], "num_models": 1, "steps": 1, "chunk_tokens": 64, "bf16": False}
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("zoo", ZOOS)
def test_every_preset_model_runs_on_a_cpu(tmp_path, zoo):
    _tree(tmp_path / "images")
    image_size = 224 if RAW["experiments"]["imagenet"]["zoos"][zoo]["arch"].startswith("vit") else 64
    s = resolve_config(_cpu_config(tmp_path / "images", image_size))["imagenet"][zoo]
    collect_run(s, run=0, out_dir=tmp_path / "zoo" / "run0")
    tokenize(s, run_dirs=[tmp_path / "zoo" / "run0"], out_dir=tmp_path / "tokens")
    for p in (tmp_path / "zoo" / "run0").glob("*.safetensors"):
        p.unlink()  # the tokens hold them now: keep the disk use of the large models down
    train(s, tokens_dir=tmp_path / "tokens", out_dir=tmp_path / "generator")
    generate(s, generator_dir=tmp_path / "generator", tokens_dir=tmp_path / "tokens", out_dir=tmp_path / "gen",
             indices=[0])  # fmt: skip
    state, meta = load_checkpoint(tmp_path / "gen" / model_name(0))
    with torch.device("meta"):  # no random init (seconds for ConvNeXt-L): the generated tensors are assigned
        model = build_model(meta["arch"], meta["arch_kwargs"])
    model.load_state_dict(state, strict=True, assign=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 2)
    for folder in ("tokens", "gen"):  # up to 0.8 GB each for ConvNeXt-L: not left for the rest of the session
        shutil.rmtree(tmp_path / folder)
