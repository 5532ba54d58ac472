"""The fault table: inject a fault in each stage of the tiny pipeline, recover as README says, compare with a clean run.

One uninterrupted run of ``tests/configs/tiny.yaml`` is the reference. A second run is killed (the whole process
group, SIGKILL, through the ``RPG_FAULT=<stage>:<unit>`` hook) in collection, then recovered with
``snakemake --unlock`` and ``--rerun-incomplete``, which is killed in tokenization, and so on through evaluation.
Then, on the same results: SIGTERM in training under ``--retries 1`` (a preempted job), and one flipped byte in a
token shard, a checkpoint and a generated model, each followed by the rerun of the stage that reads it and the
recovery its error names. Last, a full disk (ENOSPC injected at the write, ``tests/test_faults.py::full_disk``)
part way through a large file of each stage that writes one, run on the stage functions. Each row says what was
injected, what the user sees, how to recover and whether the outputs are then bit-identical to the reference (the
disk rows: whether the rerun succeeded and wrote exactly the bytes the error named); tests/test_faults.py and
tests/test_integrity.py assert the same.

    python benchmarks/faults.py     # about 3 x the tiny pipeline (4-6 minutes on 2 shared cores)

Writes ``benchmarks/results/faults.md``, the fault table of docs/benchmarks.md (generated block ``bench.faults``).

Writes benchmarks/results/faults.md (docs/benchmarks.md shows it).
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_faults import FAULTS, STATE_FILE, artefacts, full_disk, recover, run, tiny_settings  # noqa: E402

from rpg.errors import RPGDiskFullError  # noqa: E402
from rpg.generator.trainer import train_generator  # noqa: E402
from rpg.stages import collect, generate, tokenize  # noqa: E402

RULE = re.compile(r"^(?:local)?rule (\w+):", re.M)
OUT = ROOT / "benchmarks" / "results" / "faults.md"


def rules_run(stderr: str) -> str:
    names = RULE.findall(stderr)
    return ", ".join(f"{n} x{names.count(n)}" if names.count(n) > 1 else n for n in dict.fromkeys(names)) or "-"


def markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def row(fault: str, sees: str, recovery: str, jobs: str, result: str) -> dict[str, str]:
    return {"fault injected": fault, "what the user sees": sees, "recovery": recovery,
            "jobs of the recovery": jobs, "result": result}  # fmt: skip


def error_line(text: str, pattern: str, base: Path) -> str:
    """The first log line matching ``pattern``, the work folder shown as ``.``, shortened."""
    line = next((ln for ln in text.splitlines() if re.search(pattern, ln)), "-")
    line = re.sub(r"^.*?(ERROR|WARNING) [\w.]+: ", "", line).replace(f"{base}/", "").replace(str(base), ".")
    return line if len(line) <= 330 else line[:327] + "..."


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def kill_rows(reference: Path, faulty: Path) -> list[dict[str, str]]:
    rows, proc = [], run(faulty, fault="{}:{}".format(*FAULTS[0]))
    for i, (stage, unit) in enumerate(FAULTS):
        killed_rc = proc.returncode
        locked = any((faulty / ".snakemake" / "locks").glob("*"))
        nxt = FAULTS[i + 1] if i + 1 < len(FAULTS) else None
        proc = recover(faulty, fault=None if nxt is None else "{}:{}".format(*nxt))
        log = (faulty / "results/tiny/logs/train/cnn_s.log").read_text() if stage == "train" else ""
        resumed = ", resumed from step 100" if "resuming from" in log and "at step 100" in log else ""
        rows.append(row(f"kill -9 (whole process group) in {stage}, after unit {unit}",
                        f"snakemake dies (exit {killed_rc}), lock left: {'yes' if locked else 'no'}",
                        "`snakemake --unlock`, then the same command with `--rerun-incomplete`",
                        rules_run(proc.stderr) + resumed, ""))  # fmt: skip
    same = proc.returncode == 0 and artefacts(faulty) == artefacts(reference)
    temps = len(list(faulty.rglob("*.tmp")))
    for r in rows:
        r["result"] = f"outputs bit-identical: {'yes' if same else 'NO'}; temporary files left: {temps}"
    return rows


def sigterm_row(reference: Path, faulty: Path) -> dict[str, str]:
    model = "results/tiny/generator/cnn_s/model.safetensors"
    proc = run(faulty, "-f", model, "--retries", "1", fault="train:150:TERM")
    log = (faulty / "results/tiny/logs/train/cnn_s.attempts.log").read_text()
    # the signal arrives at the end of step 150; the step after it is the last (all DDP ranks stop together)
    resumed = "at step 151" in log.split("SIGTERM received")[-1] and "resuming from" in log.split("SIGTERM")[-1]
    same = proc.returncode == 0 and (faulty / model).read_bytes() == (reference / model).read_bytes()
    return row("SIGTERM to the training job at step 150 (preemption, time limit), run with `--retries 1`",
               error_line(log, "SIGTERM received", faulty),
               "none: Snakemake resubmits the job (Slurm: `slurm-requeue`, `retries`)",
               rules_run(proc.stderr) + (", resumed from step 151" if resumed else ", NOT resumed"),
               f"generator bit-identical: {'yes' if same else 'NO'}")  # fmt: skip


def corrupt_row(reference: Path, faulty: Path, kind: str, file: str, reader: str, log: str) -> dict[str, str]:
    """Flip a byte of ``file``, rerun the stage that reads it (``reader``: its target), then the recovery the error
    names and a plain run; compare every output with the reference."""
    flip_byte(faulty / file)
    failed = run(faulty, "-f", reader)
    text = (faulty / log).read_text()
    command = re.search(r"`snakemake --cores all (\S+) --force`", text)
    jobs = "-"
    if command:
        rebuilt = run(faulty, "-f", command.group(1))
        finished = run(faulty)
        jobs = rules_run(rebuilt.stderr + finished.stderr)
        same = rebuilt.returncode == finished.returncode == 0 and artefacts(faulty) == artefacts(reference)
    else:
        same = False
    return row(f"one flipped byte in {kind} ({file.split('/')[-1]}); its reader rerun",
               f"the reader fails (exit {failed.returncode}): " + error_line(text, "corrupt or replaced", faulty),
               "the command the error names, then the same command as before",
               jobs, f"outputs bit-identical: {'yes' if same else 'NO'}")  # fmt: skip


def disk_rows(reference: Path, base: Path) -> list[dict[str, str]]:
    """ENOSPC part way through one large file of each stage, on the stage functions (tiny settings, a collection of
    2 checkpoints without main epochs; tokens and generator of the reference run)."""
    res, s = reference / "results/tiny", tiny_settings()
    runs = [res / "zoo/cnn_s/run0", res / "zoo/cnn_s/run1"]
    cases = [
        ("collection", "ckpt_001", 1000, base / "run0", "ckpt_001.safetensors",
         lambda out: collect.collect_run(s, run=0, out_dir=out)),
        ("tokenization", "shard_00001", 100, base / "tokens", "shard_00001.safetensors",
         lambda out: tokenize.tokenize(s, run_dirs=runs, out_dir=out)),
        ("training (resumable state)", "state.pt", 0, base / "gen_state", "resume/state.pt",
         lambda out: train_generator(token_dir=res / "tokens/cnn_s", out_dir=out, generator_cfg=s.generator,
                                     train_cfg=s.train, device="cpu")),
        ("training (generator weights)", "model.safetensors", 1000, base / "gen_model", "model.safetensors",
         lambda out: train_generator(token_dir=res / "tokens/cnn_s", out_dir=out, generator_cfg=s.generator,
                                     train_cfg=s.train, device="cpu")),
        ("generation", "model_001", 500, base / "batch000", "model_001.safetensors",
         lambda out: generate.generate(s, generator_dir=res / "generator/cnn_s", tokens_dir=res / "tokens/cnn_s",
                                       out_dir=out, indices=[0, 1])),
    ]  # fmt: skip
    rows = []
    for stage, name, free, out, file, call in cases:
        try:
            with full_disk(name, free):
                call(out)
            sees, needed = "no error: NOT detected", None
        except RPGDiskFullError as exc:
            sees, needed = str(exc).replace(f"{base}/", "").replace(str(base), "."), exc.needed
            sees = sees.split("; no partial file")[0] + "; no partial file was kept ..."
        temps = len(list(base.rglob("*.tmp")))
        call(out)  # space freed: the same call again
        exact = "-" if not (out / file).is_file() else "yes" if (out / file).stat().st_size == needed else "NO"
        resumed = " (resumed from the last state)" if "weights" in stage else ""
        rows.append(row(f"disk full (ENOSPC) part way through {file} in {stage}", sees,
                        "free space, the same command", f"the stage again{resumed}",
                        f"rerun succeeded; wrote the bytes named: {exact}; temporary files left "
                        f"after the fault: {temps}"))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=None, help="default: a temporary folder")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    base = Path(args.workdir or tempfile.mkdtemp(prefix="rpg-faults-"))
    reference, faulty = base / "reference", base / "faulty"
    done = run(reference)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    rows = kill_rows(reference, faulty)
    state_left = (faulty / "results/tiny/generator/cnn_s" / STATE_FILE).exists()
    rows.append(sigterm_row(reference, faulty))
    res = "results/tiny"
    for kind, file, reader, stage in (
        ("a token shard", "tokens/cnn_s/shard_00000.safetensors", "generator/cnn_s/model.safetensors", "train"),
        ("a checkpoint", "zoo/cnn_s/run0/ckpt_001.safetensors", "tokens/cnn_s", "tokenize"),
        ("a generated model", "generated/cnn_s/batch000/model_000.safetensors", "evaluation/cnn_s/summary.json",
         "evaluate"),
    ):  # fmt: skip
        rows.append(corrupt_row(reference, faulty, kind, f"{res}/{file}", f"{res}/{reader}",
                                f"{res}/logs/{stage}/cnn_s.attempts.log"))  # fmt: skip
    rows += disk_rows(reference, base / "disk")
    table = markdown(pd.DataFrame(rows))
    notes = (
        f"\n\n- `tests/configs/tiny.yaml`; kill rows: one run killed in each stage in turn and recovered (columns: "
        f"that recovery's jobs, up to the next fault); resume state left after the last recovery: "
        f"{'yes' if state_left else 'no'}. Corruption rows: the stage that reads the file is forced (`-f`), as a "
        "later run would read it. Disk rows: ENOSPC injected at `rpg.io._write` once the named bytes of the file are "
        "written, on the stage functions.\n"
        f"- Machine: {platform.machine()}, torch {torch.__version__}; `python benchmarks/faults.py`.\n"
    )
    OUT.write_text(table + notes)
    print(table + notes)
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
