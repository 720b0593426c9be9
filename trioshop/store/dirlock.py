"""One server per SQLite data folder: an advisory lock on a file in it, held while it runs."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TextIO

LOCK_FILE = "trioshop.lock"


class DataDirInUse(Exception):
    """Another process holds the folder's lock; *pid* is the one it wrote, if readable."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        who = f"another trioshop (pid {pid})" if pid is not None else "another trioshop"
        super().__init__(
            f"{who} is using the data directory {folder}: stop it, or choose another --data-dir"
        )
        self.pid = pid


def lock_data_dir(folder: Path) -> TextIO:
    """Create *folder* if needed and lock its ``trioshop.lock``, writing this process's pid.

    The lock lasts as long as the returned file stays open (the process's life; the kernel
    drops it when the process ends, however it ends). Raises :class:`DataDirInUse` when another
    process holds it, :class:`OSError` when the folder or the file cannot be made.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lock = (folder / LOCK_FILE).open("a+", encoding="ascii")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        written = lock.read().strip()
        lock.close()
        raise DataDirInUse(folder, int(written) if written.isdigit() else None) from None
    except BaseException:
        lock.close()
        raise
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock
