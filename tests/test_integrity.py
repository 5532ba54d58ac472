"""Integrity of the files between stages: each stage records the SHA-256 of what it writes, the next stage checks a
file before it uses it, and one flipped byte (or a file replaced by another of the same shape) stops it with an
error naming the file, both digests and the command that rebuilds it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_faults import tiny_settings

import rpg.io
from rpg.errors import RPGInputError
from rpg.generator.sampling import load_generator
from rpg.generator.trainer import train_generator
from rpg.io import DIGESTS_FILE, file_digest, read_digests, verify_file, write_digests
from rpg.stages import collect, generate, tokenize
from rpg.tokens.store import TokenStore
from rpg.zoo.checkpoint import load_checkpoint


def flip_byte(path: Path, offset: int = -1) -> tuple[str, str]:
    """Flip one bit of one byte (default: the last, in the data); returns (digest before, digest after)."""
    before = file_digest(path)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    rpg.io._VERIFIED.clear()  # forget what this process checked (keyed by size and time: a flip may keep both)
    return before, file_digest(path)


def assert_names(exc: pytest.ExceptionInfo, path: Path, expected: str, found: str, target: Path) -> None:
    msg = str(exc.value)
    assert str(path) in msg and expected in msg and found in msg, msg
    assert f"snakemake --cores all {target} --force" in msg, msg


def test_flipped_byte_in_a_checkpoint_stops_tokenization(tmp_path):
    settings = tiny_settings()
    run0 = tmp_path / "zoo" / "run0"
    collect.collect_run(settings, run=0, out_dir=run0)
    digests, target = read_digests(run0)
    assert set(digests) == {"ckpt_000.safetensors", "ckpt_001.safetensors", "run.csv"} and target == str(run0)
    ckpt = run0 / "ckpt_001.safetensors"
    expected, found = flip_byte(ckpt)
    assert digests[ckpt.name] == expected
    with pytest.raises(RPGInputError, match="corrupt or replaced") as exc:
        tokenize.tokenize(settings, run_dirs=[run0], out_dir=tmp_path / "tokens")
    assert_names(exc, ckpt, expected, found, run0)
    assert not (tmp_path / "tokens").exists()  # nothing left of the store
    with pytest.raises(RPGInputError, match="corrupt or replaced"):  # evaluation reads originals the same way
        load_checkpoint(ckpt)
    # a file the stage did not write in its folder (a checkpoint copied in by hand) is refused too
    shutil.copy(run0 / "ckpt_000.safetensors", run0 / "ckpt_002.safetensors")
    with pytest.raises(RPGInputError, match="not listed in"):
        load_checkpoint(run0 / "ckpt_002.safetensors")


def test_flipped_byte_in_a_token_shard_stops_training(tmp_path, make_token_store, tiny_gen, tiny_train):
    tokens = make_token_store(tmp_path)
    digests, _ = read_digests(tokens)
    assert {"reference.safetensors", "layout.parquet", "index.parquet", "shard_00000.safetensors"} <= set(digests)
    assert TokenStore(tokens).tokens([0]).shape[0] == 1  # checked and read
    shard = tokens / "shard_00001.safetensors"
    expected, found = flip_byte(shard)
    with pytest.raises(RPGInputError, match="corrupt or replaced") as exc:
        train_generator(token_dir=tokens, out_dir=tmp_path / "gen", generator_cfg=tiny_gen, train_cfg=tiny_train,
                        device="cpu")  # fmt: skip
    assert_names(exc, shard, expected, found, tokens)
    assert not (tmp_path / "gen" / "model.safetensors").exists()


def test_flipped_byte_in_the_token_reference_stops_the_store(tmp_path, make_token_store):
    tokens = make_token_store(tmp_path)
    reference = tokens / "reference.safetensors"
    expected, found = flip_byte(reference)
    with pytest.raises(RPGInputError, match="corrupt or replaced") as exc:
        TokenStore(tokens).meta  # noqa: B018 (generation and training read it first)
    assert_names(exc, reference, expected, found, tokens)


def test_flipped_byte_in_a_generated_model_stops_evaluation(tmp_path, trained_generator):
    _, tokens, gen_dir = trained_generator
    batch = tmp_path / "generated" / "batch000"
    generate.generate(tiny_settings(), generator_dir=gen_dir, tokens_dir=tokens, out_dir=batch, indices=[0, 1])
    model0, model1 = batch / "model_000.safetensors", batch / "model_001.safetensors"
    assert verify_file(model0) and load_checkpoint(model0)[0]
    expected, found = flip_byte(model0)
    with pytest.raises(RPGInputError, match="corrupt or replaced") as exc:
        load_checkpoint(model0)  # what evaluation reads each generated model with
    assert_names(exc, model0, expected, found, batch)
    shutil.copy(model1, model0)  # another valid model of the same shape in its place
    with pytest.raises(RPGInputError, match="corrupt or replaced"):
        load_checkpoint(model0)


def test_flipped_byte_in_the_generator_stops_generation(tmp_path, trained_generator):
    gen_dir = tmp_path / "generator"
    shutil.copytree(trained_generator[2], gen_dir)
    load_generator(gen_dir)
    weights = gen_dir / "model.safetensors"
    expected, found = flip_byte(weights)
    with pytest.raises(RPGInputError, match="corrupt or replaced") as exc:
        load_generator(gen_dir)
    assert_names(exc, weights, expected, found, weights)


def test_digests_file_is_checked_by_sha256sum_and_unrecorded_folders_are_read(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / ".hidden").write_bytes(b"x")
    assert not verify_file(tmp_path / "a.bin")  # no SHA256SUMS: a folder written before digests existed
    write_digests(tmp_path, rebuild="results/x/run0")
    assert read_digests(tmp_path) == ({"a.bin": file_digest(tmp_path / "a.bin")}, "results/x/run0")
    assert verify_file(tmp_path / "a.bin")
    if shutil.which("sha256sum"):
        done = subprocess.run(["sha256sum", "-c", DIGESTS_FILE], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0 and "a.bin: OK" in done.stdout, done.stderr
