"""Real disk faults for tests: a folder that refuses new files, and a nearly full file system."""

from __future__ import annotations

import errno
import gc
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest


def _refuses_new_files(folder: Path) -> bool:
    try:
        (folder / ".probe").touch()
    except OSError:
        return True
    (folder / ".probe").unlink()
    return False


@contextmanager
def read_only(folder: Path):
    """While inside, ``folder`` refuses new files and renames into it.

    A plain user gets ``chmod 555``; root ignores modes, so root gets the immutable attribute
    (``chattr +i``). Where neither works, creating a temporary file in ``folder`` fails the way a
    read-only mount does, so the code under test still meets the fault.
    """
    folder = Path(folder)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield "Permission denied"
        finally:
            folder.chmod(0o755)
        return
    immutable = shutil.which("chattr") is not None and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    if immutable and _refuses_new_files(folder):
        try:
            yield "Operation not permitted"
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    real = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "mkstemp", refuse)
        yield os.strerror(errno.EROFS)


@contextmanager
def small_disk(folder: Path, kib: int):
    """A ``kib``-KiB tmpfs mounted on ``folder`` (needs root with mount rights; skips otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount command here; the read-only tests cover the logic")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()}); the read-only tests cover the logic")
    try:
        yield folder
    finally:
        gc.collect()  # a writer that failed may hold its file until collected
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def fill(folder: Path) -> None:
    """Fill the file system holding ``folder`` to the last byte."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
