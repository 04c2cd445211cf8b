"""Atomic writes: a reader (or a crash) never sees a half-written file, and a failed write says why."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import OutputError

TEMPORARY_SUFFIX = ".tmp"
# below this many free bytes, a failed write is reported as a full disk whatever the writer said
# (torch.save reports a full disk as "unexpected pos ...")
FULL_DISK_BYTES = 1 << 20


def _write_failure(path: Path, exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    try:
        if shutil.disk_usage(path.parent).free < FULL_DISK_BYTES:
            return "no space left on device"
    except OSError:
        pass
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk, then rename it.

    The rename is atomic on POSIX file systems, so ``path`` holds either its old content or the
    complete new one. On failure the temporary file is removed and :class:`OutputError` names
    ``path`` and the reason (a full disk, a read-only folder); the old content of ``path`` is kept.
    The new file keeps the old one's permissions, or gets those the umask allows.
    A process killed mid-write leaves only a hidden ``.<name>.*.tmp`` file, which
    :func:`remove_stale_temporaries` clears.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); give it the mode any other tool would: the old
        # file's, or what the umask allows, so colleagues can read a shared cache or run folder
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except Exception as exc:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        raise OutputError(path, _write_failure(path, exc)) from exc
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: object) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json_object(path: str | Path, what: str, error: type[Exception] = ValueError) -> dict:
    """The JSON object in ``path``; a missing, unreadable or malformed file, or JSON that is not an
    object, raises ``error`` with one line naming the file and ``what`` it should be."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: unreadable {what} ({exc})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(content, dict):
        raise error(f"{path}: a {what} holds a JSON object, got {type(content).__name__}")
    return content


def remove_stale_temporaries(folder: str | Path, older_than_s: float = 0.0) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left in ``folder`` (and below) when its
    process was killed mid-write; returns them. With ``older_than_s`` = 0, call it only on a folder no
    other process writes to; in a shared folder, only files unmodified for that long are deleted."""
    if older_than_s < 0:
        raise ValueError(f"older_than_s must be >= 0, got {older_than_s}")
    cutoff = time.time() - older_than_s
    stale = []
    for p in Path(folder).rglob(f".*{TEMPORARY_SUFFIX}"):
        try:
            if p.is_file() and (older_than_s == 0 or p.stat().st_mtime < cutoff):
                p.unlink(missing_ok=True)
                stale.append(p)
        except FileNotFoundError:  # another process renamed or removed it meanwhile
            continue
    return stale
