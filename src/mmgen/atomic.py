"""Atomic outputs: a file or folder appears at its path only when it is complete.

A file is written into a hidden temporary sibling ``.<name>.tmp-<host>-<pid>-<random>``,
flushed to disk (``fsync``) and renamed onto its path (one ``os.replace``, atomic on POSIX), so
that after a power loss the path holds the previous file or the complete new one, never an empty
one.

A folder cannot be replaced by one rename when the old one is not empty, so it is swapped in
two renames, under a lock (``.<name>.lock``) held by the writer:

    1. write the new folder completely into ``.<name>.tmp-<host>-<pid>-<random>/`` and sync it;
    2. rename the old folder to ``.<name>.old-<host>-<pid>-<random>/``;
    3. rename the new folder onto ``<name>``;
    4. remove the ``.old-`` folder.

Invariant: at every instant, either ``<name>`` is a complete folder, or (a kill between steps 2
and 3) ``<name>`` is missing and the ``.old-`` sibling is the complete previous folder.
``recover`` restores that previous folder and removes every leftover temporary, so a kill at any
instant leaves either the previous or the next complete folder; every later write of the path
runs ``recover`` first. Temporaries carry the writer's host and process id, so that a file's
leftovers are removed only once their writer is dead; a writer on another host (a shared file
system, as torchrun across nodes uses) cannot be seen from here and is always judged alive.

The lock is a hand-written ``flock`` rather than the ``filelock`` library: ``filelock`` leaves
its lock file behind on release, while this one removes it (no ``.lock`` litter after a run,
which the reliability tests pin) and re-checks the file's inode to stay correct while doing so.

``signals_as_interrupts`` turns SIGTERM and SIGHUP into ``KeyboardInterrupt`` so that the
clean-up code above runs for them as it does for Ctrl-C (only SIGKILL cannot be caught; its
leftovers are what ``recover`` is for).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from mmgen.errors import UsageError

log = logging.getLogger(__name__)

# Locks this process holds, by lock path: (file descriptor, nesting depth). flock locks belong to
# an open file, so a nested acquisition by the same process must reuse it instead of reopening.
_HELD_LOCKS: dict[str, tuple[int, int]] = {}


def host_tag() -> str:
    """This machine's name as it appears in temporaries: letters, digits, ``_`` and ``.`` only."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "localhost"


def _sibling(path: Path, tag: str) -> Path:
    """A fresh hidden sibling name ``.<name>.<tag>-<host>-<pid>-<random>``."""
    return path.with_name(f".{path.name}.{tag}-{host_tag()}-{os.getpid()}-{secrets.token_hex(4)}")


# A writer: ``None`` when the name records no pid (an older mmgen's), else ``(host, pid)`` with
# host ``None`` for names of mmgen versions that recorded the pid only (written on this host).
Writer = tuple[str | None, int] | None


def _leftovers(path: Path, tag: str) -> list[tuple[Path, Writer]]:
    """Hidden ``tag`` siblings of ``path`` with their writer (see ``Writer``)."""
    pattern = re.compile(
        rf"\.{re.escape(path.name)}\.{tag}-(?:([A-Za-z0-9_.]+)-(?=\d+-))?(?:(\d+)-)?[0-9a-z_]+"
    )
    found: list[tuple[Path, Writer]] = []
    if not path.parent.is_dir():
        return found
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match:
            host, pid = match.groups()
            found.append((entry, (host, int(pid)) if pid else None))
    return found


def _alive(writer: Writer) -> bool:
    """Whether ``writer`` may still run: unknown and other hosts' writers count as alive."""
    if writer is None:
        return True
    host, pid = writer
    if host is not None and host != host_tag():
        return True  # another node's process: its pid means nothing here
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover(path: Path | str, locked: bool = False) -> None:
    """Bring ``path`` back to a complete state after a killed writer; remove its leftovers.

    Restores ``path`` from its ``.old-`` sibling when a kill landed between the two renames of a
    folder swap, then removes temporaries whose writer is dead (every temporary when ``locked``:
    the caller holds the path's lock, so no other writer can be at work).

    Args:
        path: the output path (file or folder).
        locked: the caller holds ``folder_lock(path)``.
    """
    path = Path(path)
    olds = sorted(
        (entry for entry, writer in _leftovers(path, "old") if locked or not _alive(writer)),
        key=lambda entry: entry.stat().st_mtime,
    )
    if olds and not path.exists():
        newest = olds.pop()
        # An older mmgen moved the folder *into* a fresh ``.old-`` folder.
        nested = newest / path.name
        os.replace(nested if nested.is_dir() else newest, path)
        log.warning("recovered %s from an interrupted save", path)
        _remove(newest)
    for entry in olds:
        _remove(entry)
    for entry, writer in _leftovers(path, "tmp"):
        if locked or not _alive(writer):
            _remove(entry)


def _sync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` and the folder itself to disk (so a crash keeps them)."""
    for entry in folder.rglob("*"):
        if entry.is_file():
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())
    _sync_dir(folder)


def _sync_file(path: Path) -> None:
    """Flush ``path``'s data to disk (before it is renamed into place)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _named(error: OSError, path: Path) -> OSError:
    """The same OS error, naming the output ``path`` instead of a hidden temporary."""
    return type(error)(error.errno, f"cannot write {path}: {error.strerror}")


def _output_error(error: OSError, tmp: Path, path: Path) -> OSError:
    """``error``, raised while a block wrote ``tmp``, as the user should read it.

    Errors about the output (naming the temporary, or no file at all, like a full disk inside
    a library's writer) are renamed after ``path``, the name the user gave; errors naming
    another file (an input that could not be read) or already naming ``path`` are kept.
    """
    if error.filename is not None and tmp.name not in str(error.filename):
        return error
    text = error.strerror or ""
    if str(tmp) in text:  # a writer inside the block already named a file under the temporary
        return type(error)(error.errno, text.replace(str(tmp), str(path)))
    if not text or str(path) in text:
        return error
    return _named(error, path)


@contextlib.contextmanager
def atomic_path(path: Path | str, directory: bool = False, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; move it onto ``path`` when the block succeeds.

    On any exception (Ctrl-C, SIGTERM and SIGHUP under ``signals_as_interrupts`` included) the
    temporary is removed and ``path`` is left as it was. Leftovers of killed writers of ``path``
    are removed first.

    Args:
        path: the final location.
        directory: write a folder: it is swapped in as a whole under ``folder_lock(path)``
            (see the module docstring for the invariant).
        replace: replace an existing file at ``path``. When false the final step fails with
            ``FileExistsError`` if ``path`` exists by then (a hard link, which never replaces),
            so of two runs writing the same path one fails instead of both reporting success.

    Raises:
        OSError: the path is not writable; the message names ``path``, not the temporary.
    """
    path = Path(path)
    if directory:
        with atomic_folder(path) as tmp:
            yield tmp
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        recover(path)
        tmp = _sibling(path, "tmp")
        tmp.touch(mode=0o644, exist_ok=False)
    except OSError as error:
        raise _named(error, path) from None
    try:
        yield tmp
        _sync_file(tmp)
        if replace:
            os.replace(tmp, path)
        else:
            _publish_no_replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        renamed = _output_error(error, tmp, path)
        if renamed is error:
            raise
        raise renamed from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        # File systems without hard links: the existence check and the rename are not atomic.
        if path.exists():
            raise FileExistsError(f"{path} appeared while this run was writing it") from None
        os.rename(tmp, path)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary folder; swap it in as ``path`` when the block succeeds.

    Holds ``folder_lock(path)`` (waiting for another writer) from the recovery of earlier
    leftovers to the end of the swap.
    """
    path = Path(path)
    with folder_lock(path, wait=True):
        recover(path, locked=True)
        tmp = _sibling(path, "tmp")
        try:
            tmp.mkdir()
        except OSError as error:
            raise _named(error, path) from None
        try:
            yield tmp
        except OSError as error:
            recover(path, locked=True)
            renamed = _output_error(error, tmp, path)
            if renamed is error:
                raise
            raise renamed from None
        except BaseException:
            recover(path, locked=True)
            raise
        try:
            _sync_tree(tmp)
            if path.exists():
                old = _sibling(path, "old")
                os.replace(path, old)
                os.replace(tmp, path)
                _sync_dir(path.parent)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
                _sync_dir(path.parent)
        except OSError as error:
            recover(path, locked=True)
            raise _named(error, path) from None
        except BaseException:
            recover(path, locked=True)  # puts the previous folder back if it was moved aside
            raise


def lock_path(path: Path | str) -> Path:
    """The lock file of output ``path``: a hidden sibling ``.<name>.lock``."""
    path = Path(path)
    if path.name in ("", ".."):  # "", ".", "/", "..": no name of its own to write under
        raise UsageError(f"output path {str(path)!r} names no file or folder; give one: runs/x")
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def folder_lock(path: Path | str, wait: bool = False) -> Iterator[None]:
    """Hold the write lock of ``path`` for the block; re-entrant within one process.

    The lock is an ``flock`` on ``.<name>.lock``, which the kernel releases when its holder
    dies, even by SIGKILL; the file is removed on release. Creating it also tells, before any
    work, whether the folder's parent is writable.

    Args:
        path: the folder to write.
        wait: wait for another process's lock instead of failing.

    Raises:
        UsageError: another process holds the lock (and ``wait`` is false).
        OSError: the lock cannot be created (parent missing or not writable); names ``path``.
    """
    path = Path(path)
    lock = lock_path(path)
    key = str(lock.absolute())
    if key in _HELD_LOCKS:
        fd, depth = _HELD_LOCKS[key]
        _HELD_LOCKS[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _HELD_LOCKS[key]
            _HELD_LOCKS[key] = (fd, depth - 1)
        return
    fd = _acquire(lock, path, wait)
    _HELD_LOCKS[key] = (fd, 1)
    try:
        yield
    finally:
        del _HELD_LOCKS[key]
        # Unlink before unlocking: a waiter that opened this file re-checks its inode (_acquire).
        lock.unlink(missing_ok=True)
        os.close(fd)


def _acquire(lock: Path, path: Path, wait: bool) -> int:
    """Open and ``flock`` ``lock``; retry when the file was replaced while waiting."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _named(error, path) from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise _named(error, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UsageError(
                    f"another process is writing {path} (it holds {lock}); wait for it to "
                    "finish or choose another output folder"
                ) from None
            raise
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the holder removed this file on release: lock the new one


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program was so that clean-up code runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# An interrupt raised inside an import can leave a library half-initialised (numpy, scipy),
# which then fails with an error of its own (a RecursionError, "cannot load module more than
# once") and a traceback instead of the interrupt. Signals that arrive while an import runs are
# delivered again after this delay, until no import is running (issue 20, item 9).
IMPORT_RETRY_SECONDS = 0.05
_IMPORT_FILES = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")


def importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller of it is inside the import machinery."""
    while frame is not None:
        if frame.f_code.co_filename in _IMPORT_FILES:
            return True
        frame = frame.f_back
    return False


def redeliver_later(signum: int) -> None:
    """Send ``signum`` to this process again after ``IMPORT_RETRY_SECONDS``."""
    timer = threading.Timer(IMPORT_RETRY_SECONDS, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Raise ``Terminated`` (a ``KeyboardInterrupt``) on SIGTERM and SIGHUP inside the block.

    For command-line entry points: temporaries are removed and locks released by the usual
    ``except``/``finally`` code instead of being left behind by the default handlers, which end
    the process at once. SIGINT raises ``KeyboardInterrupt`` as usual. A signal that arrives
    while a module is being imported (the lazy imports of torch, matplotlib, sympy inside a
    command) is raised once the import is over, never inside it. Does nothing outside the main
    thread (signals go to the main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if importing(frame):
            redeliver_later(signum)
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    # An interrupt raised while Python runs a finalizer (a weakref callback, a __del__ during
    # garbage collection) is swallowed ("Exception ignored in ...") and the command would go on
    # to exit 0: deliver such a signal again, once the finalizer is over.
    previous_hook = sys.unraisablehook

    def unraisable(report: Any) -> None:
        if isinstance(report.exc_value, Terminated):
            redeliver_later(report.exc_value.signum)
        elif isinstance(report.exc_value, KeyboardInterrupt):
            redeliver_later(signal.SIGINT)
        else:
            previous_hook(report)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for sig, old in previous.items():
            signal.signal(sig, old)
