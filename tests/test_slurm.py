"""Cluster execution: the Snakemake profiles, and the tiny pipeline end to end on a real (single-node) Slurm cluster.

The `slurm` test installs Slurm and munge with apt-get when missing, starts private daemons
(tests/slurm/start_cluster.sh), runs tests/configs/tiny.yaml through workflow/profiles/slurm and compares the
results with the session's local run of the same config (conftest.py, ``tiny_run``). It needs root; it skips when
Slurm cannot be installed.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
PROFILES = ROOT / "workflow" / "profiles"
SCRIPTS = ROOT / "tests" / "slurm"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--workflow-profile", "none"]
# every rule of the pipeline except `all` (rules with a configurable output count may carry a suffix: collect_run_3)
PIPELINE_RULES = ("collect_run", "zoo_table", "tokenize", "train_generator", "generate", "evaluate", "report")
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
FINISHED = re.compile(r"Finished jobid: (\d+) \(Rule: (\S+)\)")


def run(cmd: list[str], *, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command with captured text output (never raises on a non-zero exit)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def base_rule(name: str) -> str:
    """Rule name without the count suffix of per-count rules (collect_run_3 -> collect_run)."""
    return re.sub(r"_\d+$", "", name)


def uncommented_keys(path: Path) -> list[str]:
    """YAML key lines with neither a comment on the same line nor a comment line right above."""
    bad, previous = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if re.match(r"^[A-Za-z_][\w-]*:", stripped) and "#" not in stripped and not previous.startswith("#"):
            bad.append(stripped)
        if stripped:
            previous = stripped
    return bad


def result_files(workdir: Path) -> set[str]:
    """Paths (relative to workdir) of every file under workdir/results."""
    return {str(p.relative_to(workdir)) for p in (workdir / "results").rglob("*") if p.is_file()}


def require_slurm_plugin() -> None:
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.fail('snakemake-executor-plugin-slurm is not installed: pip install -e ".[test]"')


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_profile_entries_are_documented(profile):
    path = PROFILES / profile / "config.yaml"
    settings = yaml.safe_load(path.read_text())
    assert isinstance(settings, dict) and settings
    assert uncommented_keys(path) == []
    if profile == "slurm":
        assert settings["executor"] == "slurm"
        assert settings["retries"] >= 1 and settings["latency-wait"] >= 30
        assert set(settings["set-resources"]) <= set(PIPELINE_RULES)
    else:
        assert "executor" not in settings and settings["cores"] == "all"


def test_slurm_profile_dry_run(tmp_path):
    """The profile's keys are valid Snakemake / plugin options and its resources reach the GPU rules."""
    require_slurm_plugin()
    proc = run(
        [
            *SNAKEMAKE,
            "-n",
            "--profile",
            str(PROFILES / "slurm"),
            "--configfile",
            str(TINY),
            "--directory",
            str(tmp_path),
        ],
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    blocks = re.findall(r"rule (\w+):\n(.*?)\n\n", out, flags=re.S)
    resources = {base_rule(name): body for name, body in blocks}
    assert set(PIPELINE_RULES) <= set(resources), sorted(resources)
    assert "cpus_per_gpu=8" in resources["train_generator"]
    assert "mem_mb=2000" in resources["zoo_table"] and "runtime=30" in resources["zoo_table"]


# ---------------------------------------------------------------------------------------------------------------
# A real Slurm cluster


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A private single-node Slurm cluster (partition "debug"), stopped again at the end of the module."""
    if os.geteuid() != 0:
        pytest.skip("needs root: installs slurm/munge with apt-get and starts slurmctld/slurmd")
    have_slurm = all(shutil.which(c, path=os.environ["PATH"] + ":/usr/sbin:/sbin") for c in ("slurmctld", "munged"))
    if not have_slurm and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and apt-get is not available to install it")
    proc = run(["bash", str(SCRIPTS / "install_slurm.sh")], timeout=900)
    if proc.returncode != 0:
        pytest.skip(f"could not install slurm/munge with apt-get:\n{(proc.stdout + proc.stderr)[-2000:]}")
    state = tmp_path_factory.mktemp("slurm_cluster")
    try:
        proc = run(["bash", str(SCRIPTS / "start_cluster.sh"), str(state)], timeout=180)
        if proc.returncode == 5:  # another Slurm set-up owns /etc/slurm/slurm.conf
            pytest.skip(proc.stderr.strip())
        assert proc.returncode == 0, f"Slurm test cluster did not start:\n{proc.stdout}\n{proc.stderr}"
        yield state
    finally:
        run(["bash", str(SCRIPTS / "stop_cluster.sh"), str(state)], timeout=120)


def adapted_profile(tmp_path: Path) -> Path:
    """workflow/profiles/slurm adapted to the test cluster; returns its folder.

    Changed: partition "debug", no account, GPU partition/model removed (the node has no GPU), memory small
    enough for any CI machine (still a function of `attempt`), job states via squeue (no accounting
    database), fast status checks, Slurm logs kept for the assertions, no retries (a failure shows at once).
    """
    settings = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    settings.update(
        {
            "retries": 0,
            "keep-going": False,
            "slurm-status-command": "squeue",
            "slurm-init-seconds-before-status-checks": 2,
            "slurm-keep-successful-logs": True,
        }
    )
    defaults = {k: v for k, v in settings["default-resources"].items() if k != "slurm_account"}
    settings["default-resources"] = {**defaults, "slurm_partition": "debug", "mem_mb": "500 * attempt"}
    per_rule = {}
    for rule in PIPELINE_RULES:
        extra = {
            k: v
            for k, v in settings["set-resources"].get(rule, {}).items()
            if k not in ("slurm_partition", "slurm_account", "gpu_model", "mem_mb", "runtime")
        }
        per_rule[rule] = {**extra, "mem_mb": "1000 * attempt", "runtime": 30}
    settings["set-resources"] = per_rule
    folder = tmp_path / "profile"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return folder


def finished_rules(log: str) -> dict[str, str]:
    """Snakemake job id -> rule name of every finished job, `all` left out."""
    return {job: rule for job, rule in FINISHED.findall(log) if rule != "all"}


@pytest.mark.slow  # an end-to-end run (about 2.5 minutes on 2 cores): the full suite only
@pytest.mark.slurm
def test_tiny_pipeline_on_slurm(slurm_cluster, tmp_path, request):
    require_slurm_plugin()
    assert TINY.exists(), TINY
    cluster = tmp_path / "cluster"
    t0 = time.monotonic()
    proc = run(
        [
            *SNAKEMAKE,
            "--profile",
            str(adapted_profile(tmp_path)),
            "--configfile",
            str(TINY),
            "--directory",
            str(cluster),
        ]
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"run through the Slurm profile failed:\n{log[-6000:]}"
    print(f"Slurm run {time.monotonic() - t0:.0f} s")
    # the reference: the session's run of the same config on this machine (conftest.py; asked for here, not as an
    # argument, so that it is not built before the cluster fixture skips), its only Snakemake log
    tiny_run = request.getfixturevalue("tiny_run")
    (local_log,) = (tiny_run / ".snakemake" / "log").glob("*.snakemake.log")
    local_jobs = finished_rules(local_log.read_text())

    # every job of the pipeline was a Slurm job: submitted with sbatch, COMPLETED, with its own Slurm log
    submitted = {job: (slurm_id, Path(slurm_log)) for job, slurm_id, slurm_log in SUBMITTED.findall(log)}
    cluster_jobs = finished_rules(log)
    assert set(cluster_jobs) == set(submitted), "jobs that finished without a Slurm submission"
    assert sorted(cluster_jobs.values()) == sorted(local_jobs.values())
    assert {base_rule(r) for r in cluster_jobs.values()} == set(PIPELINE_RULES)
    states = run(["squeue", "--states=all", "--noheader", "--format=%i|%T|%k"], timeout=60)
    assert states.returncode == 0, states.stderr
    slurm_state = {
        i: (state, comment) for i, state, comment in (line.split("|", 2) for line in states.stdout.splitlines() if line)
    }
    for job, rule in cluster_jobs.items():
        slurm_id, slurm_log = submitted[job]
        state, comment = slurm_state[slurm_id]
        assert state == "COMPLETED" and comment.startswith(f"rule_{rule}"), (rule, slurm_id, state, comment)
        assert slurm_log.is_file() and slurm_log.stem == slurm_id, slurm_log
        assert slurm_log.relative_to(cluster / ".snakemake" / "slurm_logs").parts[0] == f"rule_{rule}"
        assert f"rule {rule}:" in slurm_log.read_text(), slurm_log

    # same results as the local run
    assert result_files(cluster) == result_files(tiny_run)
