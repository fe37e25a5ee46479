"""Atomic outputs: a file or folder appears at its path only when it is complete.

A temporary sibling ``.<name>.tmp-<host>-<pid>-XXXX`` is written and then moved onto the path.
A run that is killed cannot remove its temporary, so every later run on the same path removes
the temporaries of processes of this host that no longer exist.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: Path | str) -> list[Path]:
    """Remove the temporaries of ``path`` left by killed runs of this host; return them."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-{_host()}-(\d+)-")
    removed = []
    for candidate in path.parent.glob(f".{_glob_escape(path.name)}.tmp-*"):
        match = pattern.match(candidate.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _glob_escape(name: str) -> str:
    """``name`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _publish_no_replace(tmp: Path, path: Path) -> None:
    """Move ``tmp`` onto ``path`` unless ``path`` exists, atomically (a hard link, then unlink)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(
            f"{path} appeared while this run was writing it (another run wrote it first); "
            "pass --overwrite to replace it or choose another --out"
        ) from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # File systems without hard links: the existence check and rename are not atomic.
        if path.exists():
            raise FileExistsError(f"{path} appeared while this run was writing it") from None
        os.rename(tmp, path)
        return
    tmp.unlink()


@contextmanager
def atomic_path(path: Path | str, directory: bool = False, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; move it onto ``path`` when the block succeeds.

    The temporary lives in the same folder, so the final move is atomic on POSIX. On any
    exception the temporary is removed and ``path`` is left as it was.

    Args:
        path: the final location.
        directory: create a temporary folder instead of reserving a file name.
        replace: replace an existing ``path``. When false (files only) the final step fails
            with ``FileExistsError`` if ``path`` exists by then, so of two runs writing the same
            path one fails instead of both reporting success.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    prefix = f".{path.name}.tmp-{_host()}-{os.getpid()}-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and path.exists():
            # os.replace cannot replace a non-empty folder: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if not directory:
                os.chmod(tmp, 0o644)
            if replace or directory:
                os.replace(tmp, path)
            else:
                _publish_no_replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
