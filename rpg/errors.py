"""Errors raised for bad input: each names the file (or config key) and the problem."""

from __future__ import annotations

from pathlib import Path


class RPGInputError(ValueError):
    """Bad input (file, dataset, config value). The message names the file and the problem."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")
