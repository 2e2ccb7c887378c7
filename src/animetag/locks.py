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
        pid = int(info.get("pid", -1))
        return "" if pid == os.getpid() or _alive(pid) else f"its process {pid} is gone"
    age = time.time() - lock.stat().st_mtime
    return f"not refreshed for {age:.0f} s" if age > STALE_AFTER else ""


@contextlib.contextmanager
def folder_lock(lock: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold the lock file `lock` for the `with` block (see the module's docstring)."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                held = json.loads(lock.read_text(encoding="utf-8") or "{}")
            except (OSError, ValueError):
                held = {}
            why = _stale(held, lock) if held else "it is unreadable"
            if not why:
                raise FolderLocked(
                    f"{lock.parent} is in use by process {held.get('pid')} on {held.get('host')} "
                    f"({held.get('command')}, since {held.get('since')}); wait for it to finish. "
                    f"If that process is gone, delete {lock}") from None
            warnings.warn(f"taking over the lock {lock} of process {held.get('pid')} on {held.get('host')} "
                          f"({why})", stacklevel=3)
            lock.unlink(missing_ok=True)
    else:
        raise FolderLocked(f"could not take the lock {lock}")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info, f)
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
        with contextlib.suppress(OSError):
            if json.loads(lock.read_text(encoding="utf-8")).get("pid") == os.getpid():
                lock.unlink()


def refuse_removing_inputs(out: str | os.PathLike, inputs: dict[str, str | os.PathLike | Iterable]) -> None:
    """Raise ValueError if removing the folder `out` would remove, or lies inside, an input
    (`inputs` maps a name such as 'images root' to a path or several)."""
    target = Path(out).resolve()
    for name, paths in inputs.items():
        for p in [paths] if isinstance(paths, (str, os.PathLike)) else list(paths):
            src = Path(p).resolve()
            if src == target or target in src.parents:
                raise ValueError(f"--overwrite would remove {out}, which holds the {name} {p}; "
                                 "choose another output folder")
            if src in target.parents:
                raise ValueError(f"--overwrite would remove {out}, which lies inside the {name} {p}; "
                                 "choose an output folder outside it")
