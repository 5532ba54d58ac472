"""Errors raised for bad input or a full disk: each names the file or folder (or config key) and the problem."""

from __future__ import annotations

import errno
from pathlib import Path


class RPGInputError(ValueError):
    """Bad input (file, dataset, config value). The message names the file and the problem."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class RPGDiskFullError(OSError):
    """A write failed for lack of space (ENOSPC or a quota). Names the folder, the file and the bytes it needed
    (``needed``; when the writer cannot know the size, more than the ``written`` bytes); nothing partial is kept."""

    def __init__(self, path: str | Path, *, needed: int | None, written: int, free: int) -> None:
        path = Path(path)
        self.folder, self.file, self.needed, self.written, self.free = path.parent, path, needed, written, free
        size = f"{needed:,} bytes ({_human(needed)})" if needed is not None else f"more than {written:,} bytes"
        self.message = (
            f"no space left on the device of {self.folder}: writing {path.name} needs {size}, {free:,} bytes are "
            "free there; no partial file was kept. Free space there (or move the results folder to a larger disk) "
            "and rerun the same command: finished files are kept, and training resumes from its last saved state"
        )
        super().__init__(errno.ENOSPC, self.message, str(self.folder))

    def __str__(self) -> str:
        return self.message


def _human(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
