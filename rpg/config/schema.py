"""The JSON schema of the configuration, generated from the typed blocks and shipped inside the package.

``python -m rpg.config.schema`` rewrites ``rpg/config/config.schema.json``; a test checks that the shipped file is
what the blocks generate, so the schema (for editors and readers) and the checks cannot drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rpg.config.pipeline import PipelineConfig
from rpg.config.typed import json_schema

SCHEMA_FILE = Path(__file__).with_name("config.schema.json")


def generate_schema() -> dict[str, Any]:
    """The schema of a whole config file (experiments -> zoos -> blocks)."""
    return json_schema(PipelineConfig, title="RPG pipeline configuration")


def schema_text() -> str:
    return json.dumps(generate_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the schema file (``--check``: exit 1 if the shipped file differs)."""
    argv = sys.argv[1:] if argv is None else argv
    text = schema_text()
    if "--check" in argv:
        same = SCHEMA_FILE.is_file() and SCHEMA_FILE.read_text() == text
        print(f"{SCHEMA_FILE}: {'up to date' if same else 'differs from the blocks; run python -m rpg.config.schema'}")
        return 0 if same else 1
    SCHEMA_FILE.write_text(text)
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
