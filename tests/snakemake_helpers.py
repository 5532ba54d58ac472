"""Helpers shared by the workflow tests: run Snakemake on this repository's Snakefile, read its job counts, copy a
finished run."""

import contextlib
import io
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]


INSPECTING = {"-n", "--dry-run", "--dryrun", "--lint", "--list-rules", "-l", "--unlock"}


def snakemake(*args, cwd=ROOT, check=True, env=None):
    """Snakemake's command line on this repository's Snakefile, as a ``CompletedProcess``. A run that runs no job (a
    dry run, ``--lint``, ``--unlock``; no ``env``) goes through the same entry point in this process: the same
    parse of the Snakefile and the same DAG, without a new interpreter importing torch and Snakemake again (6 s a
    call on 2 cores against 0.2 s). Runs that execute jobs are subprocesses, as a user's are."""
    if env is None and INSPECTING & set(args):
        proc = _in_process(list(args), cwd)
    else:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def _in_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``snakemake.cli.main`` called here, its exit code and everything it printed (stdout and stderr, interleaved,
    as ``stdout``) captured; the working directory is restored afterwards."""
    from snakemake.cli import main

    out, code, here = io.StringIO(), 0, os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main(["-s", str(ROOT / "Snakefile"), *args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:  # noqa: BLE001 - a crash of the command line is a failed run, as in a subprocess
        out.write(traceback.format_exc())
        code = 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["snakemake", *args], code, stdout=out.getvalue(), stderr="")


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a snakemake (dry) run."""
    counts, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0].startswith("-"):
                continue
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a finished run's working directory (results and .snakemake, file times kept): up to date as the
    original, so a test can rerun or change part of it without running the whole pipeline again."""
    shutil.copytree(src, dst)
    return dst
