"""Use a trained run: score images in batches, choose tags (tuned thresholds, caps,
categories, include/exclude lists), and write captions or one CSV/JSON for a folder."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import CATEGORY_NAMES, write_json_atomic
from .images import ImageError, load_array

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


@dataclass
class TagChoice:
    """How tags are chosen from scores."""

    threshold: float | None = None  # one global threshold; None: tuned thresholds when present, else 0.5
    max_tags: int | None = None
    categories: tuple[str, ...] = ()  # empty: every category the model predicts
    exclude_tags: tuple[str, ...] = ()
    underscores_to_spaces: bool = False


class Tagger:
    """A run loaded once: model.keras, tags.csv and (when present) thresholds.json."""

    def __init__(self, run: str | os.PathLike, batch_size: int = 32):
        import keras

        from . import losses  # noqa: F401  (registers the custom loss)

        self.run = Path(run)
        if not (self.run / "model.keras").exists():
            raise FileNotFoundError(f"no model.keras in {self.run}")
        self.model = keras.saving.load_model(self.run / "model.keras", compile=False)
        self.size = int(self.model.input_shape[1])
        self.tags = pd.read_csv(self.run / "tags.csv", keep_default_na=False)
        self.names = self.tags["name"].tolist()
        self.categories = [CATEGORY_NAMES.get(int(c), str(c)) for c in self.tags["category"]]
        th = self.run / "thresholds.json"
        self.thresholds = json.loads(th.read_text()) if th.exists() else None
        self.batch_size = batch_size

    def preprocess(self, items: Sequence[str | os.PathLike | np.ndarray]) -> np.ndarray:
        """Images (paths, bytes or uint8 arrays) as a float32 batch, prepared as for training."""
        def one(it):
            return load_array(it, self.size)

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            return np.stack(list(pool.map(one, items))).astype(np.float32)

    def load_readable(self, files: Sequence[str | os.PathLike]) -> tuple[list, np.ndarray, list[dict[str, str]]]:
        """Decode files in threads, skipping unreadable ones: (readable files, their float32
        batch, one {file, reason, detail} per skipped file)."""
        def one(f):
            try:
                return load_array(f, self.size), None
            except ImageError as e:
                return None, {"file": str(f), "reason": e.reason, "detail": str(e)}

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            results = list(pool.map(one, files))
        good = [f for f, (a, _) in zip(files, results) if a is not None]
        arrays = [a for a, _ in results if a is not None]
        x = np.stack(arrays).astype(np.float32) if arrays else np.zeros((0, self.size, self.size, 3), np.float32)
        return good, x, [e for _, e in results if e is not None]

    def predict(self, items: Sequence[str | os.PathLike | np.ndarray]) -> np.ndarray:
        """Scores (n_images x n_tags) for images or arrays, in batches."""
        out = []
        for i in range(0, len(items), self.batch_size):
            x = self.preprocess(items[i: i + self.batch_size])
            out.append(self.scores(x))
        return np.concatenate(out) if out else np.zeros((0, len(self.names)), np.float32)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Scores of a preprocessed float32 batch (Keras' compiled predict step)."""
        return np.asarray(self.model.predict_on_batch(x), dtype=np.float32)

    def threshold_vector(self, choice: TagChoice) -> np.ndarray:
        if choice.threshold is not None:
            return np.full(len(self.names), float(choice.threshold))
        if self.thresholds:
            per = self.thresholds.get("per_tag", {})
            g = float(self.thresholds.get("global", 0.5))
            return np.array([float(per.get(n, g)) for n in self.names])
        return np.full(len(self.names), 0.5)

    def choose(self, scores: np.ndarray, choice: TagChoice | None = None) -> list[list[tuple[str, float]]]:
        """Per image, the chosen (tag, score) pairs, highest score first."""
        choice = choice or TagChoice()
        t = self.threshold_vector(choice)
        allowed = np.ones(len(self.names), bool)
        if choice.categories:
            allowed &= np.isin(self.categories, list(choice.categories))
        if choice.exclude_tags:
            allowed &= ~np.isin(self.names, list(choice.exclude_tags))
        out = []
        for row in np.atleast_2d(scores):
            idx = np.flatnonzero((row >= t) & allowed)
            idx = idx[np.argsort(-row[idx], kind="stable")]
            if choice.max_tags is not None:
                idx = idx[: choice.max_tags]
            out.append([(display_name(self.names[j], choice.underscores_to_spaces), float(row[j])) for j in idx])
        return out


def display_name(tag: str, underscores_to_spaces: bool) -> str:
    """`long_hair` -> `long hair` when asked; short tags (kaomoji such as `^_^`) stay as they are."""
    if underscores_to_spaces and len(tag) > 3:
        return tag.replace("_", " ")
    return tag


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files among `paths`, folders walked recursively, in a stable order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"not found: {p}")
    return out


@dataclass
class TagReport:
    tagged: int = 0
    skipped_existing: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def tag_paths(tagger: Tagger, paths: Iterable[str | os.PathLike], out: str | os.PathLike | None = None,
              fmt: str = "txt", choice: TagChoice | None = None, overwrite: bool = False,
              progress: bool = True) -> TagReport:
    """Tag every image under `paths`.

    txt: one caption per image (comma separated, highest score first), beside the image or
    under `out` mirroring the folders; csv/json: one file for all images in `out` (or the
    working directory). Existing outputs are never overwritten without `overwrite`; an
    unreadable image is reported with its reason and skipped.
    """
    from tqdm.auto import tqdm

    if fmt not in ("txt", "csv", "json"):
        raise ValueError(f"format: {fmt!r} is not one of txt, csv, json")
    choice = choice or TagChoice()
    paths = list(paths)
    files = find_images(paths)
    roots = [Path(p) for p in paths if Path(p).is_dir()]
    report = TagReport()
    out_dir = Path(out) if out else None

    def caption_path(f: Path) -> Path:
        if out_dir is None:
            return f.with_suffix(".txt")
        root = next((r for r in roots if f.is_relative_to(r)), f.parent)
        return out_dir / f.relative_to(root).with_suffix(".txt")

    table_path = (out_dir or Path.cwd()) / f"tags.{fmt}"
    if fmt != "txt" and table_path.exists() and not overwrite:
        raise FileExistsError(f"{table_path} exists; pass --overwrite to replace it")
    if fmt == "txt" and not overwrite:
        todo = [f for f in files if not caption_path(f).exists()]
        report.skipped_existing = len(files) - len(todo)
        files = todo
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(files), desc="tagging", unit="img", disable=not progress)
    for i in range(0, len(files), tagger.batch_size):
        batch = files[i: i + tagger.batch_size]
        good, x, errors = tagger.load_readable(batch)
        report.errors += errors
        if good:
            scores = tagger.scores(x)
            for f, chosen in zip(good, tagger.choose(scores, choice)):
                if fmt == "txt":
                    cp = caption_path(f)
                    cp.parent.mkdir(parents=True, exist_ok=True)
                    _write_text_atomic(cp, ", ".join(t for t, _ in chosen) + "\n")
                    report.outputs.append(str(cp))
                else:
                    rows.append({"file": str(f), "tags": [t for t, _ in chosen],
                                 "scores": [round(s, 4) for _, s in chosen]})
                report.tagged += 1
        bar.update(len(batch))
    bar.close()
    if fmt != "txt":
        table_path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "json":
            write_json_atomic(table_path, {"images": rows, "errors": report.errors})
        else:
            tmp = table_path.with_name(table_path.name + ".tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["file", "tags", "scores"])
                for r in rows:
                    w.writerow([r["file"], ", ".join(r["tags"]), " ".join(f"{s:.4f}" for s in r["scores"])])
            os.replace(tmp, table_path)
        report.outputs.append(str(table_path))
    return report
