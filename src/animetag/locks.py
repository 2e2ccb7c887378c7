"""Folders that one command writes at a time, and `--overwrite` that never removes an input.

A lock is a small JSON file (`pid`, `host`, `command`, `since`) created atomically beside or
inside the folder and removed when the command ends. A second command on the same folder
refuses at once, naming the first. A lock whose process is gone is taken over with a
warning: on the same machine when its process id no longer runs; from another machine (two
Colab sessions on one Drive folder) when it has not been refreshed for `STALE_AFTER` seconds,
since its holder touches it every `HEARTBEAT` seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

HEARTBEAT = 30.0
STALE_AFTER = 300.0


class FolderLocked(RuntimeError):
    """Another command is writing the folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _stale(info: dict, lock: Path) -> str:
    """Why a lock can be taken over ('' if it cannot)."""
    if info.get("host") == socket.gethostname():
        try:
            pid = int(info.get("pid", -1))
        except (TypeError, ValueError):
            return f"its process id {info.get('pid')!r} is not a number"
        return "" if pid == os.getpid() or _alive(pid) else f"its process {pid} is gone"
    age = time.time() - lock.stat().st_mtime
    return f"not refreshed for {age:.0f} s" if age > STALE_AFTER else ""


def _read_lock(lock: Path) -> dict | None:
    """A lock file's content; None when it is not a readable lock (empty, cut, not an object)."""
    try:
        held = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) and "pid" in held else None


def _create(lock: Path, info: dict) -> bool:
    """Create the lock file with its content in one step: written to a temporary file, then
    linked to the lock's name (which fails if the lock exists), so that no other command ever
    reads an empty or half-written lock. On a file system without hard links, created
    exclusively and written at once. False if the lock exists."""
    tmp = lock.with_name(f".{lock.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(info))
        return True
    finally:
        tmp.unlink(missing_ok=True)


YOUNG = 60.0  # an unreadable lock younger than this may still be being written: it holds


@contextlib.contextmanager
def folder_lock(lock: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold the lock file `lock` (`FOLDER.lock`) for the `with` block (see the module's
    docstring)."""
    lock = Path(lock)
    folder = lock.with_name(lock.name.removesuffix(".lock"))
    lock.parent.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        if _create(lock, info):
            break
        held = _read_lock(lock)
        if held is None:
            try:
                age = time.time() - lock.stat().st_mtime
            except FileNotFoundError:
                continue  # removed meanwhile: try again
            why = f"it is unreadable and {age:.0f} s old" if age > YOUNG else ""
            if not why:
                raise FolderLocked(f"{folder} is in use: its lock {lock} is being created by another command; "
                                   f"wait for it to finish. If no other command runs, delete {lock}")
        else:
            why = _stale(held, lock)
            if not why:
                raise FolderLocked(
                    f"{folder} is in use by process {held.get('pid')} on {held.get('host')} "
                    f"({held.get('command')}, since {held.get('since')}); wait for it to finish. "
                    f"If that process is gone, delete {lock}")
        warnings.warn(f"taking over the lock {lock} of {folder} "
                      + (f"from process {held.get('pid')} on {held.get('host')} " if held else "") + f"({why})",
                      stacklevel=3)
        lock.unlink(missing_ok=True)
    else:
        raise FolderLocked(f"could not take the lock {lock} of {folder}")
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT):
            with contextlib.suppress(OSError):
                os.utime(lock)

    thread = threading.Thread(target=beat, name=f"lock-heartbeat {lock.name}", daemon=True)
    thread.start()
    try:
        yield lock
    finally:
        stop.set()
        held = _read_lock(lock)
        if held is not None and held.get("pid") == os.getpid():
            lock.unlink(missing_ok=True)


def refuse_removing_inputs(out: str | os.PathLike, inputs: dict[str, str | os.PathLike | Iterable],
                           inside_ok: bool = False) -> None:
    """Raise ValueError if removing the folder `out` would remove, or lies inside, an input
    (`inputs` maps a name such as 'images root' to a path or several); `inside_ok`: a folder
    inside an input may go (an export inside its run folder)."""
    target = Path(out).resolve()
    for name, paths in inputs.items():
        for p in [paths] if isinstance(paths, (str, os.PathLike)) else list(paths):
            src = Path(p).resolve()
            if src == target or target in src.parents:
                raise ValueError(f"--overwrite would remove {out}, which holds the {name} {p}; "
                                 "choose another output folder")
            if src in target.parents and not inside_ok:
                raise ValueError(f"--overwrite would remove {out}, which lies inside the {name} {p}; "
                                 "choose an output folder outside it")
