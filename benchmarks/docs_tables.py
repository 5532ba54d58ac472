"""Copy the benchmarks' Markdown tables into a document, verbatim.

    python benchmarks/docs_tables.py docs/throughput.md            # rewrite the included tables
    python benchmarks/docs_tables.py docs/throughput.md --check    # exit 1 when a table differs from its file

A table is included where the document has ``<!-- table: benchmarks/results/NAME.md -->`` followed (after any
lines) by ``<!-- /table -->``: everything between the two markers is replaced by the file's content, so the numbers
in the document are always those a benchmark script wrote.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- table: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)


def render(text: str, root: Path = ROOT) -> str:
    """``text`` with every table block filled from its file (relative to ``root``)."""

    def fill(m: re.Match) -> str:
        path = root / m.group("path")
        if not path.is_file():
            raise FileNotFoundError(f"{m.group('path')}: no such benchmark table (run its script first)")
        body = path.read_text()
        return m.group(1) + body + ("" if body.endswith("\n") else "\n") + m.group(4)

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("document", nargs="+")
    p.add_argument("--check", action="store_true", help="report stale tables, change nothing")
    args = p.parse_args(argv)
    stale = []
    for doc in map(Path, args.document):
        text = doc.read_text()
        new = render(text)
        if new != text:
            stale.append(str(doc))
            if not args.check:
                doc.write_text(new)
    if args.check and stale:
        print(f"tables out of date in {', '.join(stale)}: run python benchmarks/docs_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
