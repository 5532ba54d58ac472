"""Formatting and lint: ruff (check and format) over the Python code, snakefmt over the workflow; the generated
blocks of README.md and docs/ are what docs/make.py writes from the measured data.

(``snakemake --lint`` runs in tests/test_workflow.py.)"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ["rpg", "tests", "benchmarks", "workflow/scripts", "docs"]


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True)


def test_ruff_check():
    proc = run("ruff", "check", *PYTHON)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_ruff_format():
    proc = run("ruff", "format", "--check", *PYTHON)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_generated_documents_match_their_data():
    proc = subprocess.run([sys.executable, "docs/make.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt():
    proc = run("snakefmt", "--check", "Snakefile", "workflow/rules")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
