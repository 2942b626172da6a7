"""One writer per run (and per sweep): an ``fcntl`` lock on a file in the directory.

The lock is held for the writer's life and released by the operating system
when the process ends, however it ends, so a lock file left by a dead process
is not a lock. A second writer gets a ``ConfigError`` naming the holder's pid
and host (the CLI prints it as one line, exit 2) and changes nothing.

    with RunLock(workdir, "run"):
        ...  # the only process writing workdir
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from lowrank_jax.config import ConfigError

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive, non-blocking lock on ``directory/.lock`` (the directory is created).

    Example:
      >>> import tempfile
      >>> folder = tempfile.mkdtemp()
      >>> with RunLock(folder, "run"):
      ...     try:
      ...         RunLock(folder, "run").__enter__()
      ...     except ConfigError as error:
      ...         print(str(error).split(" (")[0].endswith("in use by another lowrank-jax run"))
      True
    """

    def __init__(self, directory: str | Path, what: str):
        self.directory, self.what = Path(directory), what
        self.file = None

    def __enter__(self) -> RunLock:
        try:  # a file in the directory's place is an OSError here (the trainer names it first)
            self.directory.mkdir(parents=True, exist_ok=True)
            self.file = open(self.directory / LOCK_FILE, "a+")
        except OSError as error:
            raise ConfigError(
                f"workdir: cannot write {self.directory} ({error.strerror})"
            ) from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise ConfigError(
                f"workdir: {self.directory} is in use by another lowrank-jax {self.what} "
                f"({holder}); wait for it to end, or use another directory"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}, host {socket.gethostname()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
