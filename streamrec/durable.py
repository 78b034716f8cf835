"""Making file system changes survive a power cut (POSIX): the model checkpoints and the
broker's jar cache both rename files into place and then sync the directory."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that files created or renamed in it are durable (POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
