"""Stage 6: one self-contained HTML report over all experiments and zoos."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rpg.report import build_report


def report(*, evaluations: Mapping[str, Mapping[str, str | Path]], out_html: str | Path) -> Path:
    """``evaluations``: experiment -> zoo -> evaluation directory (holding summary.json and the plots)."""
    return build_report(experiments=evaluations, out_html=out_html)
