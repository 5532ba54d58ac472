"""Safe artefact I/O and stage logging."""

import logging
import os
import sys

import pandas as pd
import pytest
import torch

from rpg.errors import RPGInputError
from rpg.io import atomic_path, load_safetensors, read_json, read_table, save_safetensors, write_json, write_table
from rpg.runtime import stage_logging


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) == "0o644"


def test_safetensors_metadata_round_trip_and_corruption(tmp_path):
    path = tmp_path / "a.safetensors"
    save_safetensors({"w": torch.arange(6.0).reshape(2, 3)}, path, {"arch": "cnn_s", "step": 3, "task": [0, 1]})
    tensors, meta = load_safetensors(path)
    assert torch.equal(tensors["w"], torch.arange(6.0).reshape(2, 3)) and meta == {
        "arch": "cnn_s",
        "step": 3,
        "task": [0, 1],
    }
    assert oct(path.stat().st_mode & 0o777) == "0o644"  # readable by others, like every artefact
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(RPGInputError, match="a.safetensors"):
        load_safetensors(path)
    with pytest.raises(RPGInputError, match="does not exist"):
        load_safetensors(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RPGInputError, match="junk.safetensors"):
        load_safetensors(tmp_path / "junk.safetensors")


def test_tables_and_json(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    for name in ("t.parquet", "t.csv"):
        write_table(df, tmp_path / name)
        assert read_table(tmp_path / name).equals(df)
    write_json({"x": torch.tensor([1.5])}, tmp_path / "s.json")
    assert read_json(tmp_path / "s.json") == {"x": [1.5]}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RPGInputError, match="bad.json"):
        read_json(tmp_path / "bad.json")


def test_stage_logging_captures_log_and_errors(tmp_path):
    log = tmp_path / "logs" / "stage.log"
    with pytest.raises(ValueError):
        with stage_logging(log, threads=1) as logger:
            logger.info("hello from the stage")
            print("progress", file=sys.stderr)
            raise ValueError("bad input")
    text = log.read_text()
    assert "hello from the stage" in text and "progress" in text and "bad input" in text and "Traceback" in text
    assert sys.stderr is sys.__stderr__ or not sys.stderr.closed
    assert not logging.getLogger().handlers
