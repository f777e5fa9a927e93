"""The mode a newly written file should get: 0666 under the user's umask (0644 under 022)."""

from __future__ import annotations

import os


def umask_mode() -> int:
    """Return ``0o666 & ~umask``, the mode ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def chmod_like_open(fd: int) -> None:
    """Give a ``mkstemp`` file (0600) the mode a plain ``open()`` would have given it."""
    os.fchmod(fd, umask_mode())
