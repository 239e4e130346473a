"""Atomic file output: write to a temporary file beside the target, then rename over it.

A crash, a full disk or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
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
        try:
            os.replace(temporary, target)
        except OSError as error:
            raise OutputError(f"output: cannot write {str(target)!r} ({error.strerror or error}); "
                              "choose a file path that is not a directory or busy") from None
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
    # a name of this call's own: processes probing one directory at once (the ranks of a launched run)
    # must not remove each other's probe
    name = directory / f".write-probe-{os.getpid()}-{os.urandom(4).hex()}"
    with atomic_path(name) as probe:
        probe.write_bytes(b"")
    name.unlink()
    return directory


STAGING_PREFIX = ".latentdirs-staging-"


class StagedDirectory:
    """All-or-nothing output of many files into one directory.

    Files are written under :attr:`path`, a hidden staging folder inside the target directory (same file
    system, so moving them in is a rename). :meth:`commit` moves them into place, removes the files an
    earlier run listed as its own that this run does not write again, and writes the index file (the
    manifest) last; :meth:`discard` (any failure) removes the staging folder, so a failed run leaves the
    directory as it was. Staging folders of killed runs (their process gone) are removed on the next run.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        remove_abandoned_staging(self.directory)
        try:
            self.path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.directory))
        except OSError as error:
            raise OutputError(f"output: cannot write into {str(self.directory)!r} ({error.strerror or error}); "
                              "choose a writable directory") from None

    def commit(self, files: list[str], index_name: str, index_text: str, stale: list[str]) -> None:
        """Move ``files`` (paths relative to :attr:`path`) into place, delete ``stale`` (relative paths an
        earlier index listed), then write ``index_text`` as ``index_name``."""
        try:
            for relative in stale:
                (self.directory / relative).unlink(missing_ok=True)
            for relative in files:
                target = self.directory / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.path / relative, target)
            write_text_atomic(self.directory / index_name, index_text)
        except OSError as error:
            raise OutputError(f"output: cannot finish writing into {str(self.directory)!r} "
                              f"({error.strerror or error})") from None
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def remove_abandoned_staging(directory: Path) -> list[Path]:
    """Remove staging folders and temporary files that killed runs left in ``directory``; return them.

    A staging folder is abandoned when the process id in its name is gone; a ``.NAME.XXXX.tmp`` file of
    :func:`atomic_path` is abandoned when it is older than an hour (a live writer renames it in seconds).
    """
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir() and not _alive(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    for folder in (directory, directory / "strips"):
        for entry in folder.glob(".*.tmp") if folder.is_dir() else ():
            try:
                if entry.is_file() and time.time() - entry.stat().st_mtime > 3600:
                    entry.unlink()
                    removed.append(entry)
            except OSError:
                continue
    return removed


def _alive(staging_name: str) -> bool:
    pid_text = staging_name[len(STAGING_PREFIX):].split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def exclusive_lock(target: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock for rewriting ``target`` (read-modify-write by several processes).

    The lock is a sidecar file ``.NAME.lock`` beside ``target`` (``flock``; released when the process
    ends, even if killed), so the rename of :func:`atomic_path` does not drop it mid-update.
    """
    import fcntl

    target = Path(target)
    lock_path = target.parent / f".{target.name}.lock"
    try:
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
    except OSError as error:
        raise OutputError(f"output: cannot lock {str(target)!r} ({error.strerror or error}); "
                          "choose a writable location") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def check_not_an_input(output: str | Path, inputs: list[str | Path], *, param: str = "--out") -> Path:
    """Refuse an output path that names one of the run's input files (it would be overwritten).

    Compares resolved paths, and existing files by identity (hard links, symlinks), so ``same.pkl`` and
    ``./dir/../same.pkl`` are caught alike.
    """
    output = Path(output)
    if not str(output).strip() or output.is_dir():
        raise OutputError(f"{param}: got {str(output)!r}, a directory; allowed: a file path. Give the file to "
                          "write, e.g. -o out.safetensors")
    for candidate in inputs:
        source = Path(candidate)
        same = output.resolve() == source.resolve()
        if not same and output.exists() and source.exists():
            try:
                same = output.samefile(source)
            except OSError:
                same = False
        if same:
            raise OutputError(f"{param}: got {str(output)!r}, which is an input of this run; allowed: a path "
                              "that is not an input. Write the result to another file")
    return output
