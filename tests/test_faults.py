"""Fault injection: kill -9 in every stage, recover as the README says, and get the same outputs; stale or
corrupt resume states; SIGTERM/SIGINT in training (save, exit, resume to the same weights); a full disk in every
stage that writes large files; bad config values caught at start; temporary files and logs of failed attempts."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from snakemake_helpers import copy_run, snakemake

import rpg.generator.trainer
import rpg.io
from rpg.config import zoo_settings
from rpg.errors import RPGDiskFullError
from rpg.generator.trainer import STATE_FILE, train_generator
from rpg.io import DIGESTS_FILE, atomic_path, load_safetensors
from rpg.runtime import FAULT_ENV, attempts_log, stage_logging
from rpg.stages import collect, generate
from rpg.stages.job import snakemake_job
from rpg.tokens.store import write_token_store

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2"]
# (stage, unit of work after which the whole run is killed): a checkpoint, a token shard, a training step after the
# resumable save at step 100 (tests/configs/tiny.yaml: save_every 100), a generated model, an evaluated model
FAULTS = [("collect", 2), ("tokenize", 1), ("train", 150), ("generate", 1), ("evaluate", 3)]


def run(workdir: Path, *args: str, fault: str | None = None, config: Path = TINY) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run(
        [*SNAKEMAKE, "--configfile", str(config), "--directory", str(workdir), *args],
        env=env, capture_output=True, text=True, start_new_session=True,  # its own process group, as a shell's job
    )  # fmt: skip


def recover(workdir: Path, *targets: str, fault: str | None = None, config: Path = TINY) -> subprocess.CompletedProcess:
    """The README's recovery: unlock (no other run is active), then rerun with --rerun-incomplete."""
    unlocked = snakemake("--unlock", "--configfile", str(config), "--directory", str(workdir), check=False)
    assert unlocked.returncode == 0, unlocked.stdout[-2000:]
    return run(workdir, "--rerun-incomplete", *targets, fault=fault, config=config)


def artefacts(workdir: Path) -> dict[str, bytes]:
    """Every output of the pipeline (logs, benchmarks and Snakemake's own files aside) by relative path; the
    training log without its wall-clock column."""
    res = workdir / "results"
    out = {}
    for p in sorted(res.rglob("*")):
        if not p.is_file() or {"logs", "benchmarks"} & set(p.relative_to(res).parts):
            continue
        if p.name == "train_log.csv":
            out[str(p.relative_to(res))] = pd.read_csv(p).drop(columns=["time"]).to_csv(index=False).encode()
        elif p.name != ".snakemake_timestamp":
            out[str(p.relative_to(res))] = p.read_bytes()
    return out


def fault_chain(workdir: Path, faults: list[tuple[str, int]], *targets: str) -> None:
    """kill -9 at each fault in turn: the run dies at the first, the README's recovery dies at the next, and so on;
    the last recovery runs to ``targets`` (all: the whole pipeline)."""
    proc = run(workdir, *targets, fault=f"{faults[0][0]}:{faults[0][1]}")
    for i, (stage, _) in enumerate(faults):
        assert proc.returncode != 0, f"the run survived the fault in {stage}"
        assert (workdir / ".snakemake" / "locks").exists() and any((workdir / ".snakemake" / "locks").iterdir())
        nxt = faults[i + 1] if i + 1 < len(faults) else None
        proc = recover(workdir, *targets, fault=None if nxt is None else f"{nxt[0]}:{nxt[1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(workdir.rglob("*.tmp")), list(workdir.rglob("*.tmp"))  # no temporary file left


TOKENS = "results/tiny/tokens/cnn_s"


@pytest.mark.slow
def test_kill_9_in_collection_and_tokenization_then_recovery_gives_identical_outputs(tmp_path, request):
    """The first two stages from nothing, killed in each (FAULTS[:2]); the reference is asked for only at the end, so
    that another worker can build it meanwhile."""
    faulty = tmp_path / "faulty"
    fault_chain(faulty, FAULTS[:2], TOKENS)
    reference = request.getfixturevalue("tiny_run")  # the session's uninterrupted run (conftest.py)
    mine = artefacts(faulty)
    assert mine and {k.split("/")[1] for k in mine} == {"zoo", "tokens"}, sorted(mine)
    assert mine == {k: v for k, v in artefacts(reference).items() if k in mine}  # bit-identical, both stages


@pytest.mark.slow
def test_kill_9_in_training_generation_and_evaluation_then_recovery_gives_identical_outputs(tiny_run, tmp_path):
    """The later stages (FAULTS[2:]) of a copy of the reference whose zoo and tokens are kept: killed in each,
    recovered, bit-identical to the uninterrupted run."""
    reference, faulty = tiny_run, copy_run(tiny_run, tmp_path / "faulty")
    for later in ("generator", "generated", "evaluation"):
        shutil.rmtree(faulty / "results/tiny" / later)
    (faulty / "results/report.html").unlink()
    (faulty / "results/tiny/logs/train/cnn_s.attempts.log").unlink()  # the reference's attempt
    fault_chain(faulty, FAULTS[2:])
    assert artefacts(faulty) == artefacts(reference)  # bit-identical, every stage
    assert not (faulty / "results/tiny/generator/cnn_s" / STATE_FILE).exists()  # resume state gone once done
    train_log = (faulty / "results/tiny/logs/train/cnn_s.attempts.log").read_text()
    assert train_log.count("===== attempt started") == 2  # the killed attempt's log is kept
    assert "resuming from" in train_log and "at step 100" in train_log


@pytest.mark.slow
def test_sigterm_under_snakemake_retries_from_the_saved_state(tiny_run, tmp_path):
    reference, faulty = tiny_run, copy_run(tiny_run, tmp_path / "faulty")
    (faulty / "results/tiny/logs/train/cnn_s.attempts.log").unlink()  # the reference's attempt
    # preemption under Snakemake: SIGTERM at the end of step 150 of the training job, --retries 1: the retry resumes
    # from the state saved on the signal and ends with the same generator
    proc = run(faulty, "-f", "results/tiny/generator/cnn_s/model.safetensors", "--retries", "1",
               fault="train:150:TERM")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    train_log = (faulty / "results/tiny/logs/train/cnn_s.attempts.log").read_text()
    # the signal comes at the end of step 150; the step after it finishes, then the state is saved
    assert "SIGTERM received: saved the resumable state" in train_log and "at step 151; exiting" in train_log
    assert train_log.split("SIGTERM received")[-1].count("resuming from") == 1 and "at step 151" in train_log
    assert "exit status 143" in train_log and train_log.count("===== attempt started") == 2
    model = "results/tiny/generator/cnn_s/model.safetensors"
    assert (faulty / model).read_bytes() == (reference / model).read_bytes()


@pytest.mark.slow
def test_a_new_zoo_seed_trains_afresh_after_a_kill(tiny_run, tmp_path):
    """A new zoo seed rebuilds checkpoints and tokens, and the generator is trained afresh on them: the resume state
    of a killed training on the new tokens is used, the old generator is not."""
    reference, faulty = tiny_run, copy_run(tiny_run, tmp_path / "faulty")
    model = "results/tiny/generator/cnn_s/model.safetensors"
    cfg = yaml.safe_load(TINY.read_text())
    cfg["experiments"]["tiny"]["zoos"]["cnn_s"]["collect"]["seed"] = 1
    reseeded = tmp_path / "reseeded.yaml"
    reseeded.write_text(yaml.safe_dump(cfg))
    proc = run(faulty, model, fault="train:150", config=reseeded)  # killed after the save at step 100
    assert proc.returncode != 0
    proc = recover(faulty, model, config=reseeded)
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = load_safetensors(faulty / "results/tiny/generator/cnn_s/model.safetensors")[0]
    old = load_safetensors(reference / "results/tiny/generator/cnn_s/model.safetensors")[0]
    assert any(not torch.equal(new[k], old[k]) for k in old)
    last_attempt = (faulty / "results/tiny/logs/train/cnn_s.log").read_text()
    assert "resuming from" in last_attempt and "at step 100" in last_attempt  # its own state, same inputs


def test_stale_resume_state_of_other_tokens_is_not_used(tmp_path, make_token_store, tiny_gen, tiny_train, caplog):
    a = make_token_store(tmp_path / "a", runs=2)
    b = make_token_store(tmp_path / "b", runs=2, per_run=4)  # another zoo, same layout
    out = tmp_path / "gen"
    train_generator(token_dir=a, out_dir=out, generator_cfg=tiny_gen, train_cfg=tiny_train, device="cpu", stop_after=3)
    assert torch.load(out / STATE_FILE, weights_only=True)["step"] == 2
    with caplog.at_level(logging.INFO, logger="rpg"):
        train_generator(token_dir=b, out_dir=out, generator_cfg=tiny_gen, train_cfg=tiny_train, device="cpu")
    assert "saved for other inputs" in caplog.text and "resuming" not in caplog.text
    assert pd.read_csv(out / "train_log.csv")["step"].tolist() == list(range(1, 7))  # from step 0
    fresh = tmp_path / "fresh"
    train_generator(token_dir=b, out_dir=fresh, generator_cfg=tiny_gen, train_cfg=tiny_train, device="cpu")
    x, y = load_safetensors(out / "model.safetensors")[0], load_safetensors(fresh / "model.safetensors")[0]
    assert all(torch.equal(x[k], y[k]) for k in x)  # exactly what a fresh run on b gives
    assert not (out / STATE_FILE).exists()


def test_corrupt_resume_state_is_set_aside(tmp_path, token_dir, tiny_gen, tiny_train, caplog):
    out = tmp_path / "gen"
    train_generator(token_dir=token_dir, out_dir=out, generator_cfg=tiny_gen, train_cfg=tiny_train, device="cpu",
                    stop_after=3)  # fmt: skip
    state = out / STATE_FILE
    state.write_bytes(state.read_bytes()[:100])  # truncated by a kill
    with caplog.at_level(logging.INFO, logger="rpg"):
        train_generator(token_dir=token_dir, out_dir=out, generator_cfg=tiny_gen, train_cfg=tiny_train, device="cpu")
    assert "unreadable" in caplog.text and str(state) in caplog.text
    assert (out / "resume" / "state.pt.corrupt-0").is_file()  # kept for inspection, out of the way
    assert pd.read_csv(out / "train_log.csv")["step"].tolist() == list(range(1, 7))


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda e: e["train"].update(steps="20"), "experiments.tiny.train.steps"),
        (lambda e: e["train"].update(lr="fast"), "experiments.tiny.train.lr"),
        (lambda e: e["generator"].update(dim="32"), "experiments.tiny.generator.dim"),
        (lambda e: e["zoos"]["cnn_s"].update(arch="no_such_net"), "experiments.tiny.zoos.cnn_s.arch"),
        (lambda e: e.update(data={"name": "imagefolder", "root": "/no/such/folder"}), "experiments.tiny.data.root"),
        (lambda e: e["evaluate"].update(noise_models_per_level=0), "experiments.tiny.evaluate.noise_models_per_level"),
    ],
)
def test_bad_config_fails_at_start_naming_the_key(tmp_path, edit, key):
    cfg = yaml.safe_load(TINY.read_text())
    edit(cfg["experiments"]["tiny"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(path), "--directory", str(tmp_path), check=False)  # nothing has run yet
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and key in out, out[-2000:]
    assert not (tmp_path / "results").exists()


def test_a_job_removes_stale_temporary_files_of_its_outputs(tmp_path):
    out = tmp_path / "generated" / "batch000"
    out.mkdir(parents=True)
    stale = out / ".model_001.safetensors.abc123.tmp"
    stale.write_bytes(b"\0" * 100)
    target = tmp_path / "x" / "model.safetensors"
    target.parent.mkdir()
    beside = target.parent / ".model.safetensors.q1w2e3.tmp"
    beside.write_bytes(b"x")
    smk = types.SimpleNamespace(log=[str(tmp_path / "job.log")], threads=1, output=[str(out), str(target)],
                                wildcards=types.SimpleNamespace(items=lambda: []), params=None)  # fmt: skip
    with snakemake_job(smk) as settings:
        assert settings is None
    assert not stale.exists() and not beside.exists()
    assert "removed a temporary file" in (tmp_path / "job.log").read_text()


def test_writers_remove_their_temporary_file_on_errors(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_stage_logs_append_one_header_per_attempt(tmp_path):
    log_file = tmp_path / "stage.log"
    for attempt in range(2):
        with pytest.raises(RuntimeError), stage_logging(log_file) as log:
            log.info("working on attempt %d", attempt)
            raise RuntimeError(f"attempt {attempt} failed")
    for text in (log_file.read_text(), attempts_log(log_file).read_text()):
        assert text.count("===== attempt started") == 2
        assert "attempt 0 failed" in text and "attempt 1 failed" in text  # the first attempt's log is kept
    log_file.unlink()  # as Snakemake does before it reruns a job
    with stage_logging(log_file) as log:
        log.info("third attempt")
    assert log_file.read_text().count("===== attempt started") == 1
    assert attempts_log(log_file).read_text().count("===== attempt started") == 3


@pytest.mark.slow  # six Python processes
def test_fault_hook_kills_its_process_group_only_at_the_named_unit():
    code = "from rpg.runtime import fault_point; fault_point('train', 1); print('alive')"
    for spec, rc in (("train:1", -signal.SIGKILL), ("train:1:TERM", -signal.SIGTERM), ("train:2", 0),
                     ("train:2:TERM", 0), ("tokenize:1", 0), (None, 0)):  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
        env.update({FAULT_ENV: spec} if spec else {})
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              start_new_session=True)  # fmt: skip
        assert ("alive" in proc.stdout) == (rc == 0), spec
        assert proc.returncode == rc, spec


# --- preemption: SIGTERM / SIGINT in training ----------------------------------------------------------------------


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_safetensors(a)[0], load_safetensors(b)[0]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow  # a training process, killed and requeued, and a reference run
def test_sigterm_saves_the_training_state_and_the_requeued_job_resumes_to_the_same_weights(
    tmp_path, token_dir, tiny_gen, tiny_train
):
    """A real training process gets SIGTERM part way (as a cluster preempting it): it saves its state at the step it
    reached and exits 143; the same command again (a requeued job) resumes there and ends with the weights of an
    uninterrupted run."""
    train = {**tiny_train, "steps": 200, "save_every": 1000, "log_every": 1}  # no periodic save before the end
    config = tmp_path / "launch.json"
    config.write_text(json.dumps({"generator": tiny_gen, "train": train}))
    out, log_file = tmp_path / "gen", tmp_path / "train.log"
    cmd = [sys.executable, "-m", "rpg.generator.trainer", "--token-dir", str(token_dir), "--out-dir", str(out),
           "--config-json", str(config), "--device", "cpu", "--log-file", str(log_file)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and "step 10/200" not in _text(log_file):
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    assert rc == 128 + signal.SIGTERM, (rc, _text(tmp_path / "stderr.txt")[-2000:])
    step = torch.load(out / STATE_FILE, weights_only=True)["step"]
    assert 10 <= step < 200 and not (out / "model.safetensors").exists()
    assert f"SIGTERM received: saved the resumable state {out / STATE_FILE} at step {step}" in _text(log_file)

    requeued = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    assert f"resuming from {out / STATE_FILE} at step {step}" in _text(log_file)
    train_generator(token_dir=token_dir, out_dir=tmp_path / "ref", generator_cfg=tiny_gen, train_cfg=train,
                    device="cpu")  # fmt: skip
    assert same_weights(out / "model.safetensors", tmp_path / "ref" / "model.safetensors")  # bit-identical
    losses = [pd.read_csv(d / "train_log.csv")["loss"].tolist() for d in (out, tmp_path / "ref")]
    assert losses[0] == losses[1] and not (out / STATE_FILE).exists()


def _text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def test_sigint_in_training_saves_and_exits_130_then_resumes(tmp_path, token_dir, tiny_gen, tiny_train, monkeypatch):
    """Ctrl-C during step 3 (delivered by a hook at the end of the step, so the test is exact): the step after it is
    the last, its state is saved, the call ends with SystemExit(130); the rerun gives the uninterrupted weights."""
    real = rpg.generator.trainer.fault_point

    def interrupt(stage: str, unit: int) -> None:
        if unit == 3:
            os.kill(os.getpid(), signal.SIGINT)
        real(stage, unit)

    monkeypatch.setattr(rpg.generator.trainer, "fault_point", interrupt)
    kw = {"token_dir": token_dir, "generator_cfg": tiny_gen, "train_cfg": tiny_train, "device": "cpu"}
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a background job or xdist worker
    with pytest.raises(SystemExit) as exc:
        train_generator(out_dir=tmp_path / "gen", **kw)
    assert exc.value.code == 128 + signal.SIGINT
    assert torch.load(tmp_path / "gen" / STATE_FILE, weights_only=True)["step"] == 4
    assert signal.getsignal(signal.SIGINT) is before  # the handler is given back
    monkeypatch.setattr(rpg.generator.trainer, "fault_point", real)
    train_generator(out_dir=tmp_path / "gen", **kw)
    train_generator(out_dir=tmp_path / "ref", **kw)
    assert same_weights(tmp_path / "gen" / "model.safetensors", tmp_path / "ref" / "model.safetensors")


# --- a full disk ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def full_disk(name: str, free: int = 0):
    """Inside the block, writes of files whose name contains ``name`` fail with ENOSPC once ``free`` bytes of them
    are written (what fits is written first, as on a real disk); the space is free again after it. It replaces
    :func:`rpg.io._write`, the one low-level write of artefact data."""
    real, left = rpg.io._write, [free]

    def write(f, data) -> None:
        view = memoryview(data).cast("B")
        if name in os.path.basename(f.name):
            if view.nbytes > left[0]:
                real(f, view[: left[0]])
                left[0] = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            left[0] -= view.nbytes
        real(f, view)

    rpg.io._write = write
    try:
        yield
    finally:
        rpg.io._write = real


def check_disk_full(exc: pytest.ExceptionInfo, folder: Path, name: str) -> int:
    """The error names the folder, the file and the bytes it needed; no temporary file is left. Returns the bytes."""
    err = exc.value
    assert isinstance(err, RPGDiskFullError) and err.errno == errno.ENOSPC
    assert err.folder == folder and err.file.name == name and err.needed
    assert str(folder) in str(err) and f"needs {err.needed:,} bytes" in str(err), str(err)
    assert not list(folder.parent.rglob("*.tmp")), list(folder.parent.rglob("*.tmp"))
    return err.needed


def tiny_settings():
    """The tiny config's zoo, its collection cut to 2 checkpoints without the main epochs (a second)."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["experiments"]["tiny"]["zoos"]["cnn_s"]["collect"].update(epochs=0, checkpoints=2)
    return zoo_settings(cfg, "tiny", "cnn_s")


def test_disk_full_in_collection(tmp_path):
    run0 = tmp_path / "run0"
    with full_disk("ckpt_001", free=1000), pytest.raises(RPGDiskFullError) as exc:
        collect.collect_run(tiny_settings(), run=0, out_dir=run0)
    needed = check_disk_full(exc, run0, "ckpt_001.safetensors")
    assert sorted(p.name for p in run0.iterdir()) == ["ckpt_000.safetensors"]  # complete files only
    collect.collect_run(tiny_settings(), run=0, out_dir=run0)  # the rerun once space is freed
    assert (run0 / "ckpt_001.safetensors").stat().st_size == needed and (run0 / DIGESTS_FILE).is_file()


def test_disk_full_in_tokenization(tmp_path, make_token_store):
    paths = sorted((make_token_store(tmp_path).parent / "zoo").rglob("*.safetensors"))
    out = tmp_path / "tokens2"
    with full_disk("shard_00001", free=100), pytest.raises(RPGDiskFullError) as exc:
        write_token_store(paths, out, token_size=16, shard_size=4)
    needed = check_disk_full(exc, out, "shard_00001.safetensors")
    assert not out.exists()  # the store's finished shard is removed too: no partial store
    write_token_store(paths, out, token_size=16, shard_size=4)
    assert (out / "shard_00001.safetensors").stat().st_size == needed


def test_disk_full_in_training_state_and_weights(tmp_path, token_dir, tiny_gen, tiny_train, caplog):
    out = tmp_path / "gen"
    kw = {"token_dir": token_dir, "out_dir": out, "generator_cfg": tiny_gen, "train_cfg": tiny_train, "device": "cpu"}
    with full_disk("state.pt"), pytest.raises(RPGDiskFullError) as exc:  # the first resumable save (step 2)
        train_generator(**kw)
    check_disk_full(exc, out / "resume", "state.pt")
    assert not (out / STATE_FILE).exists()
    with full_disk("model.safetensors", free=4096), pytest.raises(RPGDiskFullError) as exc:  # no room for weights
        train_generator(**kw)
    needed = check_disk_full(exc, out, "model.safetensors")
    assert torch.load(out / STATE_FILE, weights_only=True)["step"] == 6  # the last state is kept, whole
    assert not (out / "model.safetensors").exists()
    with caplog.at_level(logging.INFO, logger="rpg"):
        train_generator(**kw)
    assert "at step 6" in caplog.text and (out / "model.safetensors").stat().st_size == needed


def test_disk_full_in_generation(tmp_path, trained_generator):
    _, tokens, gen_dir = trained_generator
    batch = tmp_path / "batch000"
    kw = {"generator_dir": gen_dir, "tokens_dir": tokens, "out_dir": batch, "indices": [0, 1]}
    with full_disk("model_001", free=500), pytest.raises(RPGDiskFullError) as exc:
        generate.generate(tiny_settings(), **kw)
    needed = check_disk_full(exc, batch, "model_001.safetensors")
    assert list(batch.iterdir()) == []  # sampled together (generate.batch_size): neither model is kept
    generate.generate(tiny_settings(), **kw)
    assert (batch / "model_001.safetensors").stat().st_size == needed and (batch / DIGESTS_FILE).is_file()
