"""The p-diff baseline: autoencoder, latent diffusion, its pipeline stages, config, evaluation and workflow rules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from snakemake_helpers import snakemake

from rpg.config import ConfigError, PDiffConfig, resolve_config
from rpg.errors import RPGInputError
from rpg.evaluate.evaluate import TABLE_COLUMNS
from rpg.evaluate.summary import summarize
from rpg.io import load_safetensors, read_json, save_safetensors
from rpg.pdiff.model import ParamAutoencoder, PDiffModel
from rpg.pdiff.trainer import flat_parameters, generate_pdiff, load_pdiff, train_pdiff
from rpg.report import summary_rows
from rpg.stages import pdiff as pdiff_stage
from rpg.tokens.store import TokenStore, write_token_store

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
FAST = {"channels": [2, 4], "latent_dim": 8, "kernel_size": 3, "ae_steps": 30, "ae_batch_size": 4, "steps": 30,
        "batch_size": 4, "denoiser_channels": [1, 4, 1], "time_dim": 8, "warmup_steps": 2,
        "sampling_steps": 10}  # fmt: skip


def test_autoencoder_shapes_latent_and_noise():
    torch.manual_seed(0)
    ae = ParamAutoencoder(num_params=37, channels=[2, 4, 4], latent_dim=6, kernel_size=3, latent_noise=0.5)
    x = torch.randn(5, 37)
    assert ae.padded == 40 and ae.last_length == 5  # padded to a multiple of 2^stages
    ae.eval()
    z = ae.encode(x).detach()
    assert z.shape == (5, 6) and torch.allclose(z.mean(1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(z.square().mean(1), torch.ones(5), atol=1e-2)  # standardised per vector
    assert torch.equal(ae.encode(x), z)  # no noise outside training
    assert ae.decode(z).shape == (5, 37)
    g = [torch.Generator().manual_seed(s) for s in (1, 1, 2)]
    losses = [float(ae(x, generator=gen).detach()) for gen in g]
    assert losses[0] == losses[1] != losses[2]  # noise drawn from the given generator
    with pytest.raises(ValueError, match=r"\[B, 37\]"):
        ae.encode(torch.randn(2, 36))


def test_autoencoder_learns_to_reconstruct():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(2, 64, generator=g)
    data = centres[torch.arange(16) % 2] + 0.01 * torch.randn(16, 64, generator=g)
    ae = ParamAutoencoder(num_params=64, channels=[4, 8], latent_dim=8, kernel_size=3, latent_noise=0.1)
    opt = torch.optim.AdamW(ae.parameters(), lr=3e-3)
    ae.eval()
    with torch.no_grad():
        before = float((ae.decode(ae.encode(data)) - data).square().mean())
    ae.train()
    for _ in range(200):
        loss = ae(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ae.eval()
    with torch.no_grad():
        after = float((ae.decode(ae.encode(data)) - data).square().mean())
    assert after < 0.1 * before


def test_config_checks_and_merging(tmp_path):
    assert not PDiffConfig.parse({}).enabled and PDiffConfig.parse({}).sampler == "ddpm"
    with pytest.raises(ValueError, match="unknown key"):
        PDiffConfig.parse({"chanels": [4]})
    for bad in ({"kernel_size": 4}, {"latent_noise": -1}, {"sampler": "euler"}, {"channels": []}):
        with pytest.raises(ValueError):
            PDiffConfig.parse(bad)
    cfg = {"experiments": {"e": {"data": {"name": "digits"}, "pdiff": {"latent_dim": 16},
                                 "zoos": {"a": {"arch": "cnn_s", "pdiff": {"enabled": True}},
                                          "b": {"arch": "cnn_s"}}}}}  # fmt: skip
    settings = resolve_config(cfg)["e"]
    assert settings["a"].pdiff.enabled and settings["a"].pdiff.latent_dim == 16
    assert not settings["b"].pdiff.enabled and settings["b"].pdiff.channels == [4, 8, 16, 32, 32]
    cfg["experiments"]["e"]["zoos"]["a"]["pdiff"]["latent"] = 3
    with pytest.raises(ConfigError, match=r"zoos\.a\.pdiff"):
        resolve_config(cfg)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_token_store):
    root = tmp_path_factory.mktemp("pdiff")
    tokens = make_token_store(root)
    info = train_pdiff(token_dir=tokens, out_dir=root / "pdiff", pdiff_cfg=FAST, device="cpu")
    return root, tokens, info


def test_train_pdiff_outputs(trained):
    root, tokens, info = trained
    store = TokenStore(tokens)
    assert info["num_params"] == store.layout.num_parameters == flat_parameters(store).shape[1]
    assert read_json(root / "pdiff" / "config.json")["reconstruction_rms"] == info["reconstruction_rms"]
    log = pd.read_csv(root / "pdiff" / "train_log.csv")
    assert log.groupby("stage").size().to_dict() == {"autoencoder": 30, "diffusion": 30}
    assert log["loss"].notna().all() and (log["time"].diff().dropna() >= 0).all()
    model, _ = load_pdiff(root / "pdiff")
    assert isinstance(model, PDiffModel) and not model.training
    assert float(model.latent_std) > 0 and model.latent_mean.abs().sum() > 0  # statistics of the latents


def test_flat_parameters_match_the_checkpoints(trained):
    root, tokens, _ = trained
    store = TokenStore(tokens)
    flat = flat_parameters(store, [1])
    ckpt = store.checkpoint_state_dict(1)
    spec = store.layout.generated[0]
    expected = (ckpt[spec.name].double().reshape(-1) - spec.mean) / spec.std
    assert torch.allclose(flat[0, : spec.numel].double(), expected, atol=1e-6)


def test_generate_pdiff_models_load_like_checkpoints(trained, tmp_path):
    root, tokens, _ = trained
    paths = [tmp_path / f"model_{i:03d}.safetensors" for i in range(2)]
    generate_pdiff(pdiff_dir=root / "pdiff", token_dir=tokens, out_paths=paths,
                   generate_cfg={"seed": 3, "sampler": "ddim", "steps": 4}, device="cpu")  # fmt: skip
    ref, _ = load_safetensors(root / "zoo" / "run0" / "ckpt_000.safetensors")
    first, meta = load_safetensors(paths[0])
    assert sorted(first) == sorted(ref)
    assert all(first[k].shape == ref[k].shape and first[k].dtype == ref[k].dtype for k in ref)
    assert torch.equal(first["bn.num_batches_tracked"], ref["bn.num_batches_tracked"])
    assert (first["bn.running_var"] > 0).all()
    assert meta["method"] == "pdiff" and meta["sampler"] == "ddpm" and meta["sampling_steps"] == 10
    assert meta["sample_seed"] == 3 and meta["kind"] == "generated" and meta["arch"] == "fake"
    second, _ = load_safetensors(paths[1])
    assert not torch.equal(first["fc.weight"], second["fc.weight"])
    again = tmp_path / "again.safetensors"  # same seed -> same model
    generate_pdiff(pdiff_dir=root / "pdiff", token_dir=tokens, out_paths=[again], generate_cfg={"seed": 3})
    assert again.read_bytes() == paths[0].read_bytes()
    # sampler null: the generate block decides (as for RPG)
    generate_pdiff(pdiff_dir=root / "pdiff", token_dir=tokens, out_paths=[again],
                   generate_cfg={"seed": 3, "sampler": "ddim", "steps": 4},
                   pdiff_cfg={**FAST, "sampler": None}, device="cpu")  # fmt: skip
    meta = load_safetensors(again)[1]
    assert meta["sampler"] == "ddim" and meta["sampling_steps"] == 4


def test_generate_stage_names_and_seeds_the_models_from_the_settings(trained, tmp_path):
    root, tokens, _ = trained
    cfg = {"experiments": {"e": {"data": {"name": "digits"}, "device": "cpu", "pdiff": FAST, "generate": {"seed": 3},
                                 "zoos": {"a": {"arch": "cnn_s", "pdiff": {"enabled": True}}}}}}  # fmt: skip
    settings = resolve_config(cfg)["e"]["a"]
    pdiff_stage.generate(settings, pdiff_dir=root / "pdiff", tokens_dir=tokens, out_dir=tmp_path / "s", indices=[1])
    (path,) = (tmp_path / "s").glob("model_*.safetensors")  # model 1: seed 3 + 1
    assert (tmp_path / "s" / "SHA256SUMS").is_file()  # the batch's digests, checked when evaluation reads it
    direct = tmp_path / "direct.safetensors"
    generate_pdiff(pdiff_dir=root / "pdiff", token_dir=tokens, out_paths=[direct], indices=[1],
                   generate_cfg={"seed": 3}, pdiff_cfg=FAST, device="cpu")  # fmt: skip
    assert path.read_bytes() == direct.read_bytes() and load_safetensors(path)[1]["sample_seed"] == 4


def test_generate_pdiff_rejects_another_store(trained, tmp_path):
    root, _, _ = trained
    paths = []
    for i in range(2):  # a zoo of another size
        meta = {"kind": "checkpoint", "arch": "fake", "arch_kwargs": {}, "run": 0, "step": i}
        save_safetensors({"w": torch.randn(7, 3)}, tmp_path / f"c{i}.safetensors", meta)
        paths.append(tmp_path / f"c{i}.safetensors")
    write_token_store(paths, tmp_path / "tokens", token_size=4, shard_size=2)
    with pytest.raises(RPGInputError, match="21"):
        generate_pdiff(pdiff_dir=root / "pdiff", token_dir=tmp_path / "tokens", out_paths=[tmp_path / "x.safetensors"])
    assert not (tmp_path / "x.safetensors").exists()


def _rows(kind: str, accs: list[float], sims: list[float]) -> list[dict]:
    rows = [
        {"kind": kind, "group": kind, "name": f"{kind}{i}", "score": a, "max_iou": s, "nearest_distance": 1.0,
         "failures_probe": 60, "copy": False, "in_summary": True}
        for i, (a, s) in enumerate(zip(accs, sims))
    ]  # fmt: skip
    return [{c: r.get(c) for c in TABLE_COLUMNS} for r in rows]


def test_summary_and_report_show_pdiff_beside_rpg():
    table = pd.DataFrame(_rows("original", [0.9, 0.92], [0.6, 0.6]) + _rows("generated", [0.91], [0.4])
                         + _rows("pdiff", [0.8, 0.7], [0.5, 0.3]))  # fmt: skip
    summary = summarize(table)
    assert summary["num_models"]["pdiff"] == 2
    p = summary["pdiff"]["score"]
    assert (p["best"], p["mean"], p["min"]) == pytest.approx((0.8, 0.75, 0.7))
    assert summary["pdiff"]["similarity"]["mean"] == pytest.approx(0.4) and summary["pdiff"]["n"] == 2
    assert summary["generated"]["score"]["mean"] == pytest.approx(0.91)  # p-diff rows are not RPG's
    groups = [r["group"] for r in summary_rows(summary)]
    assert groups[:3] == ["original", "generated", "p-diff"]
    no_pdiff = summarize(table[table["kind"] != "pdiff"])
    assert "pdiff" not in no_pdiff and "pdiff" not in no_pdiff["num_models"]


def test_workflow_adds_pdiff_rules_only_when_enabled(tmp_path):
    tiny = TINY.read_text()
    enabled = tmp_path / "pdiff.yaml"
    enabled.write_text(tiny.replace("collect: {epochs: 2, checkpoints: 3, batch_size: 128}",
                                    "collect: {epochs: 2, checkpoints: 3, batch_size: 128}\n"
                                    "        pdiff: {enabled: true, ae_steps: 5}"))  # fmt: skip
    assert "pdiff: {enabled: true" in enabled.read_text()
    out = snakemake("-n", "--cores", "1", "--directory", str(tmp_path), "--configfile", str(enabled)).stdout
    assert "rule train_pdiff:" in out and "rule generate_pdiff:" in out
    assert "results/tiny/generated_pdiff/cnn_s/batch000" in out  # an input of the evaluation
    plain = snakemake("-n", "--cores", "1", "--directory", str(tmp_path), "--configfile", str(TINY)).stdout
    assert "rule train_pdiff:" not in plain and "generated_pdiff" not in plain and "rule evaluate:" in plain
