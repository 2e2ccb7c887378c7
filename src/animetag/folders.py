"""The two folders a study passes along, as objects that know their file names and read each
file once: a built subset (`SubsetFolder`) and a training run (`RunFolder`). Both are
`os.PathLike`, so they go wherever a path goes; a function given one reuses what it has read.

And one way to write a file atomically (`atomic_path`): whatever writes it writes a temporary
sibling, renamed over the target only when complete, so a reader never meets half a file and
an interrupted write leaves the old one whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from animetag.config import diff
from animetag.vocab import n_ratings

if TYPE_CHECKING:
    import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` (same extension, so writers that go by it still work)
    for the caller to write a file or folder to; renamed over `path` on success, removed on
    failure. The temporary name is unique to this writer (process and call)."""
    path = Path(path)
    # a name of its own per writer, so that two writers of one file never share a temporary
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """JSON, indented, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


def write_csv_atomic(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """A table as CSV (no index), written atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def fingerprint(paths: Iterable[str | os.PathLike | Any]) -> str:
    """What a result computed from these files depends on, cheaply: each one's resolved path,
    size and modification time (a missing one as missing). Anything with `archive`, `name`,
    `offset` and `size` (an image inside a tar archive) counts as that archive's fingerprint
    and its place in it. A changed, added or removed file changes it."""
    h = hashlib.sha1()
    stats: dict[str, str] = {}

    def stat(p: str | os.PathLike) -> str:
        key = os.fspath(p)
        if key not in stats:
            try:
                st = os.stat(key)
                stats[key] = f"{os.path.realpath(key)}|{st.st_size}|{st.st_mtime_ns}"
            except OSError:
                stats[key] = f"{key}|missing"
        return stats[key]

    for p in paths:
        if hasattr(p, "archive") and hasattr(p, "offset"):
            h.update(f"{stat(p.archive)}|{p.name}|{p.offset}|{p.size}\n".encode())
        elif p is None:
            h.update(b"none\n")
        else:
            h.update(f"{stat(p)}\n".encode())
    return h.hexdigest()


def cached_arrays(path: str | os.PathLike, key: str, compute: Callable[[], dict[str, np.ndarray]]
                  ) -> dict[str, np.ndarray]:
    """Arrays computed once and kept in `path` (.npz) under `key`: read back while the key is
    the same, computed again when it differs; a cache file that cannot be read is named in a
    warning and rebuilt. Written atomically."""
    path = Path(path)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                if "key" in z.files and str(z["key"]) == key:
                    return {k: z[k] for k in z.files if k != "key"}
        except Exception as e:  # BadZipFile, EOFError, ValueError, OSError, KeyError: all mean "not usable"
            warnings.warn(f"{path}: the saved scores cannot be read ({type(e).__name__}: {str(e)[:120]}); "
                          "computing them again", stacklevel=2)
    arrays = compute()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, key=np.array(key), **arrays)
    return arrays


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file; one error naming the file when it is not valid JSON (cut off, edited)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): it was cut off or edited; restore it, or "
                         "run the command that writes it again") from None


def walk(root: str | os.PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk below `root`, following linked folders (a folder may hold only a link to the
    images), each real folder once: a link back to a folder already listed is skipped. Hidden
    folders and `*.partial` work folders are not entered."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not d.endswith(".partial"))
        yield dirpath, dirnames, sorted(filenames)


def read_csv(path: str | os.PathLike, **kwargs: Any) -> pd.DataFrame:
    """pandas' read_csv, with one error naming the file when it is no readable CSV (empty,
    binary, a quote left open, another encoding); a missing file stays FileNotFoundError."""
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a readable CSV ({type(e).__name__}: {str(e)[:200]})") from None


def read_tags_csv(path: str | os.PathLike) -> pd.DataFrame:
    """tags.csv as written (a tag named "null" or "nan" stays a string)."""

    return read_csv(path, keep_default_na=False)


class _Folder(os.PathLike):
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def of(cls, folder: str | os.PathLike):
        """`folder` itself if it is one already (with what it has read), else a new one."""
        return folder if isinstance(folder, cls) else cls(folder)

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class SubsetFolder(_Folder):
    """A built subset: subset.json (the summary, written last), tags.csv (the output rows),
    manifest.csv (one row per image, with its split) and the shards."""

    SUMMARY = "subset.json"
    TAGS = "tags.csv"
    MANIFEST = "manifest.csv"
    SHARDS = "shards"

    @cached_property
    def summary(self) -> dict[str, Any]:
        p = self.path / self.SUMMARY
        if not p.exists():
            partial = self.path.with_name(self.path.name + ".partial").exists()
            hint = " (an interrupted build: run it again)" if partial else ""
            raise FileNotFoundError(f"{self.path} is not a built subset: no {self.SUMMARY}{hint}")
        return read_json(p)

    @cached_property
    def tags(self) -> pd.DataFrame:
        self.summary  # noqa: B018  (a clear error for a folder that is not a subset)
        return read_tags_csv(self.path / self.TAGS)

    @cached_property
    def manifest(self) -> pd.DataFrame:
        self.summary  # noqa: B018
        return pd.read_csv(self.path / self.MANIFEST, keep_default_na=False, dtype={"md5": str, "tags": str})

    @property
    def image_size(self) -> int:
        """The size the shards hold."""
        return int(self.summary["settings"]["image_size"])

    @property
    def n_outputs(self) -> int:
        """Rows of tags.csv: the model's outputs (ratings first, if any, then tags)."""
        return len(self.tags)

    @property
    def n_ratings(self) -> int:
        """The rating rows tags.csv starts with (4, or 0 without a rating head)."""
        return n_ratings(self.tags)

    @property
    def n_tags(self) -> int:
        """The tag rows: the outputs less the ratings (subset.json's and metrics.json's n_tags)."""
        return self.n_outputs - self.n_ratings

    def split_size(self, split: str) -> int:
        return int((self.manifest["split"] == split).sum())

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
        """(tags, manifest, summary)."""
        return self.tags, self.manifest, self.summary


class RunFolder(_Folder):
    """A training run: config.json (the one record of its settings and data), tags.csv (its
    outputs), model.keras (the best epoch, float32, loadable with Keras alone), the
    checkpoints, history.csv, and after evaluation thresholds.json, metrics.json and
    per_tag.csv."""

    CONFIG = "config.json"
    TAGS = "tags.csv"
    MODEL = "model.keras"
    HISTORY = "history.csv"
    THRESHOLDS = "thresholds.json"
    METRICS = "metrics.json"
    PER_TAG = "per_tag.csv"
    CHECKPOINT = "checkpoints/last.keras"
    STATE = "checkpoints/state.json"
    LOGS = "logs"

    @property
    def model_path(self) -> Path:
        return self.path / self.MODEL

    def require_model(self) -> Path:
        if not self.model_path.exists():
            raise FileNotFoundError(f"no {self.MODEL} in {self.path}: train first (notebook 03 or `animetag train`)")
        return self.model_path

    @cached_property
    def model(self):
        """model.keras, loaded once (uncompiled: for inference)."""
        import keras

        path = self.require_model()
        try:
            return keras.saving.load_model(path, compile=False)
        except (OSError, ValueError, EOFError) as e:  # zipfile.BadZipFile is an OSError
            raise ValueError(f"{path} cannot be read ({type(e).__name__}: {str(e)[:200]}): the file is cut off "
                             "or damaged; train again, or restore it from the checkpoint") from None

    @property
    def config(self) -> dict[str, Any] | None:
        """config.json, or None before the run has started (read each time: training updates it)."""
        p = self.path / self.CONFIG
        return read_json(p) if p.exists() else None

    @property
    def state(self) -> dict[str, Any]:
        """The checkpoint state (epochs done, the best value): read each time, it changes per epoch."""
        p = self.path / self.STATE
        return read_json(p) if p.exists() else {}

    @cached_property
    def tags(self) -> pd.DataFrame:
        return read_tags_csv(self.path / self.TAGS)

    def thresholds(self) -> dict[str, Any] | None:
        """thresholds.json (tuned on validation by `evaluate`), or None before evaluation."""
        p = self.path / self.THRESHOLDS
        return read_json(p) if p.exists() else None

    def metrics(self) -> dict[str, Any]:
        p = self.path / self.METRICS
        if not p.exists():
            raise FileNotFoundError(f"no {self.METRICS} in {self.path}: evaluate the run first")
        return read_json(p)


EXPORT_INFO = "export.json"


def animetag_folder(folder: str | os.PathLike) -> str:
    """'training run', 'subset' or 'export' when `folder` is one (its own files would be
    replaced by another command's outputs written there), else ''."""
    folder = Path(folder)
    if (folder / RunFolder.CONFIG).is_file() or (folder / RunFolder.MODEL).is_file():
        return "training run"
    if (folder / SubsetFolder.SUMMARY).is_file() or (folder / SubsetFolder.MANIFEST).is_file():
        return "subset"
    if (folder / EXPORT_INFO).is_file():
        return "export"
    return ""


def refuse_overwriting_another_kind(out: str | os.PathLike, kind: str) -> None:
    """`--overwrite` removes `out` only when it is an earlier output of the same command (a
    `kind` folder) or empty: never a run, a subset or a folder of other files."""
    out = Path(out)
    if not out.is_dir():
        return
    found = animetag_folder(out)
    if found == kind:
        return
    if found:
        raise ValueError(f"--overwrite would remove {out}, a {found} folder; the {kind} goes to another --out folder")
    if any(out.iterdir()):
        raise ValueError(f"--overwrite would remove {out}, which is not an earlier {kind} (it holds other files); "
                         "choose another --out folder")


def data_signature(subset_dir: str | os.PathLike | SubsetFolder) -> dict[str, Any]:
    """What a run is bound to: the output rows in order (`n_outputs` of them: `n_ratings`
    rating rows, then `n_tags` tags), the image size, and which image lies in which split."""
    subset = SubsetFolder.of(subset_dir)
    tags, manifest = subset.tags, subset.manifest
    names = "\n".join(tags["name"]).encode()
    splits = "\n".join(f"{i}:{s}" for i, s in sorted(zip(manifest["id"].astype(int), manifest["split"]))).encode()
    return {"n_outputs": len(tags), "n_tags": subset.n_tags, "n_ratings": subset.n_ratings, "tags_sha1": hashlib.sha1(names).hexdigest()[:12],
            "image_size": subset.image_size,
            "split_sizes": {s: subset.split_size(s) for s in ("train", "val", "test")},
            "split_sha1": hashlib.sha1(splits).hexdigest()[:12]}


def data_differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """How `now` differs from a run's recorded data signature (keys a run recorded only;
    runs from older versions lack some; theirs named every output row `n_tags`)."""
    if "n_tags" in recorded and "n_outputs" not in recorded:
        recorded = {**recorded, "n_outputs": recorded["n_tags"], "n_tags": recorded["n_tags"] - recorded.get("n_ratings", 0)}
    return diff(recorded, {k: v for k, v in now.items() if k in recorded})


def trained_on(run: RunFolder, data: SubsetFolder, split: str = "test") -> dict[str, Any]:
    """How many of `data`'s `split` images `run` trained on, read from the subset its
    config.json records (a parent scored on its child's test images must not have trained on
    them: build the child's subset with `--splits-from` the parent's)."""
    where = (run.config or {}).get("subset")
    if not where or not (Path(where) / SubsetFolder.MANIFEST).exists():
        return {"checked": False, "why": f"the subset {run} trained on is not recorded or not here ({where or 'none'})"}
    theirs = SubsetFolder(where).manifest
    seen = set(theirs.loc[theirs["split"] == "train", "id"].astype(int))
    ours = data.manifest
    ids = ours.loc[ours["split"] == split, "id"].astype(int)
    return {"checked": True, "subset": where, "images": int(len(ids)), "trained_on": int(ids.isin(seen).sum())}


def run_lock(run: str | os.PathLike) -> Path:
    """The lock file of a run folder, beside it (`RUN.lock`): held by train and evaluate."""
    run = Path(run)
    return run.with_name(run.name + ".lock")
