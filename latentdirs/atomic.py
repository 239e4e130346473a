"""Atomic file output: write to a temporary file beside the target, then rename over it.

A crash, a full disk or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from latentdirs.errors import OutputError

# mkstemp creates files readable by the owner only; finished outputs get the usual umask-derived mode.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it to ``target``.

    On any exception the temporary file is removed and the exception propagates; an OS error while
    preparing or renaming becomes :class:`~latentdirs.errors.OutputError` naming the path.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(handle)
    except OSError as error:
        raise OutputError(f"output: cannot write {str(target)!r} ({error.strerror or error}); "
                          "choose a writable location") from None
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, _FILE_MODE)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomic(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(target: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))


def check_writable_directory(directory: str | Path, *, param: str = "out") -> Path:
    """Create ``directory`` if needed and prove it writable (write and remove a probe file).

    Called before long work starts, so a bad output path fails in a second, not after the work.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{param}: {str(directory)!r} exists and is not a directory; choose a directory path")
    with atomic_path(directory / ".write-probe") as probe:
        probe.write_bytes(b"")
    (directory / ".write-probe").unlink()
    return directory
