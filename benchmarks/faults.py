"""The fault table: kill -9 the tiny pipeline in each stage, recover as README says, compare with a clean run.

One uninterrupted run of ``tests/configs/tiny.yaml`` is the reference. A second run is killed (the whole process
group, SIGKILL, through the ``RPG_FAULT=<stage>:<unit>`` hook) in collection, then recovered with
``snakemake --unlock`` and ``--rerun-incomplete``, which is killed in tokenization, and so on through evaluation.
Then a corrupt resume state and a resume state of other tokens. Each row says what the user sees and whether the
final outputs are bit-identical to the reference; tests/test_faults.py asserts the same.

    python benchmarks/faults.py            # about 2 x the tiny pipeline (a few minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_faults import FAULTS, STATE_FILE, artefacts, recover, run  # noqa: E402

RULE = re.compile(r"^(?:local)?rule (\w+):", re.M)


def rules_run(stderr: str) -> str:
    names = RULE.findall(stderr)
    return ", ".join(f"{n} x{names.count(n)}" if names.count(n) > 1 else n for n in dict.fromkeys(names)) or "-"


def markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=None, help="default: a temporary folder")
    args = p.parse_args(argv)
    base = Path(args.workdir or tempfile.mkdtemp(prefix="rpg-faults-"))
    reference, faulty = base / "reference", base / "faulty"
    done = run(reference)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    rows = []
    proc = run(faulty, fault="{}:{}".format(*FAULTS[0]))
    for i, (stage, unit) in enumerate(FAULTS):
        killed_rc = proc.returncode
        locked = any((faulty / ".snakemake" / "locks").glob("*"))
        nxt = FAULTS[i + 1] if i + 1 < len(FAULTS) else None
        proc = recover(faulty, fault=None if nxt is None else "{}:{}".format(*nxt))
        log = (faulty / "results/tiny/logs/train/cnn_s.log").read_text() if stage == "train" else ""
        rows.append({
            "case": f"kill -9 in {stage}, after unit {unit}",
            "exit": killed_rc,
            "lock left": "yes" if locked else "no",
            "recovery": "--unlock, then --rerun-incomplete",
            "jobs of the recovery (until the next fault)": rules_run(proc.stderr),
            "resumed": "from step 100" if "resuming from" in log and "at step 100" in log else "-",
        })  # fmt: skip
    ok = proc.returncode == 0 and artefacts(faulty) == artefacts(reference)
    temps = len(list(faulty.rglob("*.tmp")))
    state_left = (faulty / "results/tiny/generator/cnn_s" / STATE_FILE).exists()
    for row in rows:
        row["final outputs identical"] = "yes" if ok else "NO"
        row["temps left"] = temps
    df = pd.DataFrame(rows)
    print(markdown(df))
    print(f"\nresume state left after the last recovery: {'yes' if state_left else 'no'}; workdir {base}")


if __name__ == "__main__":
    main()
