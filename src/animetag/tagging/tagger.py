"""Use a trained run: score images in batches, choose tags (tuned thresholds, caps,
categories, include/exclude lists), and write captions or one CSV/JSON for a folder."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from animetag.data.images import ImageError, load_array
from animetag.folders import RunFolder, animetag_folder, atomic_path, walk, write_json_atomic
from animetag.model import policies
from animetag.vocab import category_name, n_ratings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


@dataclass
class TagChoice:
    """How tags are chosen from scores."""

    threshold: float | None = None  # one threshold for every tag (overrides `policy`)
    policy: str | None = None  # a name in policies.POLICIES; None: per-tag when the run has tuned thresholds, else 0.5
    max_tags: int | None = None
    categories: tuple[str, ...] = ()  # empty: every category the model predicts
    exclude_tags: tuple[str, ...] = ()
    underscores_to_spaces: bool = False
    rating: bool = False  # captions start with the rating (`general`, ...), as kohya's --use_rating_tags
    # per category a fixed threshold, over the policy's for the tags of that category
    category_thresholds: tuple[tuple[str, float], ...] = ()
    mcut: bool = False  # per image and category, cut at the largest gap between the sorted scores (MCut)
    escape_parentheses: bool = False  # `(` and `)` as `\(` and `\)`: a caption ready to paste into a prompt


class Tagger:
    """A run loaded once: model.keras, tags.csv and (when present) thresholds.json.

    The model's outputs are the rows of tags.csv: the rating rows first when it has a rating
    head (one rating per image: the highest), then the tags (each against its threshold)."""

    def __init__(self, run: str | os.PathLike, batch_size: int = 32):
        folder = RunFolder.of(run)
        self.run = folder.path
        self.model = folder.model
        self.size = int(self.model.input_shape[1])
        rows = folder.tags
        self.n_ratings = n_ratings(rows)
        self.rating_names = rows["name"].iloc[: self.n_ratings].tolist()
        self.tags = rows.iloc[self.n_ratings:].reset_index(drop=True)
        self.names = self.tags["name"].tolist()
        self.categories = [category_name(c) for c in self.tags["category"]]
        self.thresholds = folder.thresholds()
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
        """All scores (ratings, then tags) of a preprocessed float32 batch (Keras' compiled
        predict step)."""
        return np.asarray(self.model.predict_on_batch(x), dtype=np.float32)

    def rating(self, scores: np.ndarray) -> list[tuple[str, float]]:
        """Per image, the rating with the highest score and that score (empty without a rating head)."""
        r = np.atleast_2d(scores)[:, : self.n_ratings]
        if not self.n_ratings:
            return [("", float("nan"))] * len(r)
        best = r.argmax(1)
        return [(self.rating_names[b], float(row[b])) for b, row in zip(best, r)]

    def threshold_vector(self, choice: TagChoice) -> np.ndarray:
        """One threshold per tag: the fixed one if given, else the policy's (see `policies`);
        then a category's own threshold where `choice.category_thresholds` gives one."""

        if choice.threshold is not None:
            t = np.full(len(self.names), float(choice.threshold))
        else:
            t = policies.get(self.policy_name(choice)).for_tags(self.thresholds, self.names).astype(np.float64)
        cats = np.array(self.categories)
        for cat, value in choice.category_thresholds:
            if cat not in cats:
                raise ValueError(f"category threshold: this run has no {cat!r} tags (it has "
                                 f"{', '.join(dict.fromkeys(self.categories))})")
            t[cats == cat] = float(value)
        return t

    def policy_name(self, choice: TagChoice) -> str:
        """The policy `choice` applies: its own, else per-tag when the run has tuned thresholds, else 0.5."""
        return choice.policy or (policies.DEFAULT_TAGGING if self.thresholds else "0.5")

    def choose(self, scores: np.ndarray, choice: TagChoice | None = None) -> list[list[tuple[str, float]]]:
        """Per image, the chosen (tag, score) pairs, highest score first (`scores`: every
        output, ratings included, as `scores()` gives them)."""
        choice = choice or TagChoice()
        t = self.threshold_vector(choice)
        allowed = np.ones(len(self.names), bool)
        if choice.categories:
            allowed &= np.isin(self.categories, list(choice.categories))
        if choice.exclude_tags:
            allowed &= ~np.isin(self.names, list(choice.exclude_tags))
        cats = np.array(self.categories)
        out = []
        for row in np.atleast_2d(scores)[:, self.n_ratings:]:
            cut = t
            if choice.mcut:
                cut = t.copy()
                for cat in dict.fromkeys(self.categories):
                    m = cats == cat
                    cut[m] = mcut_threshold(row[m])
            idx = np.flatnonzero((row >= cut) & allowed)
            idx = idx[np.argsort(-row[idx], kind="stable")]
            if choice.max_tags is not None:
                idx = idx[: choice.max_tags]
            out.append([(display_name(self.names[j], choice.underscores_to_spaces, choice.escape_parentheses),
                         float(row[j])) for j in idx])
        return out

    def caption(self, scores: np.ndarray, choice: TagChoice | None = None) -> str:
        """The caption `animetag tag` writes for one image (its scores, ratings included):
        the rating first when asked, then the chosen tags, highest score first, comma separated."""
        choice = choice or TagChoice()
        rating = self.rating(scores)[0][0]
        words = ([rating] if choice.rating and rating else []) + [t for t, _ in self.choose(scores, choice)[0]]
        return ", ".join(words)


def display_name(tag: str, underscores_to_spaces: bool, escape_parentheses: bool = False) -> str:
    r"""`long_hair` -> `long hair` when asked; short tags (kaomoji such as `^_^`) stay as they
    are. With `escape_parentheses`, `(` and `)` become `\(` and `\)`, as prompt syntaxes
    that weight a phrase in parentheses need (`lumine_\(genshin_impact\)`)."""
    if underscores_to_spaces and len(tag) > 3:
        tag = tag.replace("_", " ")
    if escape_parentheses:
        tag = tag.replace("(", "\\(").replace(")", "\\)")
    return tag


def mcut_threshold(scores: np.ndarray) -> float:
    """MCut (Largeron, Moulin and Géry, 2012): the midpoint of the largest gap between
    consecutive scores sorted from the highest; what is above it is kept. One score: 0.5."""
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    if len(s) < 2:
        return 0.5
    i = int(np.argmax(s[:-1] - s[1:]))
    return float((s[i] + s[i + 1]) / 2)


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files among `paths`, folders walked recursively, in a stable order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():  # linked folders followed, each once
            out += sorted(Path(d) / f for d, _, files in walk(p) for f in files
                          if Path(f).suffix.lower() in IMAGE_SUFFIXES and (Path(d) / f).is_file())
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"not found: {p}")
    return out


@dataclass
class TagReport:
    found: int = 0
    tagged: int = 0
    skipped_existing: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: what was tagged, skipped and unreadable."""
        return (f"{self.found} images found: {self.tagged} tagged, {self.skipped_existing} skipped (output exists; "
                f"--overwrite to redo), {len(self.errors)} unreadable")

    @property
    def exit_status(self) -> int:
        """0: every image tagged (or already captioned); 1: some unreadable, the rest tagged;
        2: nothing could be tagged."""
        if self.tagged == 0 and (self.errors or self.found == 0):
            return 2
        return 1 if self.errors else 0


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _check_writable(folder: Path, what: str) -> None:
    """Fail now, not after the tagging, if `folder` cannot take files: a missing folder whose
    parent exists is created; a missing parent or a read-only folder is an error."""

    if not folder.exists():
        if not folder.parent.exists():
            raise FileNotFoundError(f"{what} {folder}: its parent folder {folder.parent} does not exist")
        folder.mkdir()
    if not folder.is_dir():
        raise NotADirectoryError(f"{what} {folder} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".animetag-probe-"):
            pass
    except OSError as e:
        raise PermissionError(f"{what} {folder} is not writable ({e.strerror or e})") from None


def caption_collisions(targets: dict[Path, Path]) -> list[tuple[Path, Path, Path]]:
    """(first image, second image, caption) for images whose captions would be one file."""
    seen: dict[Path, Path] = {}
    out = []
    for f, cp in targets.items():
        key = Path(os.path.normcase(os.path.abspath(cp)))
        if key in seen:
            out.append((seen[key], f, cp))
        else:
            seen[key] = f
    return out


def tag_paths(tagger: Tagger, paths: Iterable[str | os.PathLike], out: str | os.PathLike | None = None,
              fmt: str = "txt", choice: TagChoice | None = None, overwrite: bool = False,
              progress: bool = True) -> TagReport:
    """Tag every image under `paths`.

    txt: one caption per image (comma separated, highest score first; with `choice.rating`
    the rating first), beside the image or under `out` mirroring the folders; csv/json: one
    file for all images in `out` (or the working directory), with the rating of each image.
    Before any image is tagged: two images whose captions would be one file (`a.jpg` and
    `a.png`, or `A/x.jpg` and `B/x.jpg` under `out`) are refused, naming both, and every
    output folder is checked to be writable. Existing outputs are never overwritten without
    `overwrite`; an unreadable image is reported with its reason and skipped.
    """

    if fmt not in ("txt", "csv", "json"):
        raise ValueError(f"format: {fmt!r} is not one of txt, csv, json")
    choice = choice or TagChoice()
    paths = list(paths)
    files = find_images(paths)
    roots = [Path(p) for p in paths if Path(p).is_dir()]
    report = TagReport(found=len(files))
    out_dir = Path(out) if out else None

    def caption_path(f: Path) -> Path:
        if out_dir is None:
            return f.with_suffix(".txt")
        root = next((r for r in roots if f.is_relative_to(r)), f.parent)
        return out_dir / f.relative_to(root).with_suffix(".txt")

    table_path = (out_dir or Path.cwd()) / f"tags.{fmt}"
    if fmt == "txt":
        _check_captions({f: caption_path(f) for f in files}, out_dir)
        if not overwrite:
            todo = [f for f in files if not caption_path(f).exists()]
            report.skipped_existing = len(files) - len(todo)
            files = todo
    else:
        _check_table(table_path, overwrite)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(files), desc="tagging", unit="img", disable=not progress)
    for i in range(0, len(files), tagger.batch_size):
        batch = files[i: i + tagger.batch_size]
        good, x, errors = tagger.load_readable(batch)
        report.errors += errors
        if good:
            scores = tagger.scores(x)
            for f, row, chosen, (rating, r_score) in zip(good, scores, tagger.choose(scores, choice),
                                                         tagger.rating(scores)):
                if fmt == "txt":
                    cp = caption_path(f)
                    cp.parent.mkdir(parents=True, exist_ok=True)
                    _write_text_atomic(cp, tagger.caption(row[None], choice) + "\n")
                    report.outputs.append(str(cp))
                else:
                    rows.append({"file": str(f), "rating": rating,
                                 "rating_score": round(r_score, 4) if rating else None,
                                 "tags": [t for t, _ in chosen], "scores": [round(s, 4) for _, s in chosen]})
                report.tagged += 1
        bar.update(len(batch))
    bar.close()
    if fmt != "txt":
        _write_table(table_path, fmt, rows, report.errors)
        report.outputs.append(str(table_path))
    return report


def _check_captions(captions: dict[Path, Path], out_dir: Path | None) -> None:
    """Before any image is tagged: no two images share a caption file, and every folder a
    caption goes to takes files."""
    clashes = caption_collisions(captions)
    if clashes:
        listed = "; ".join(f"{a} and {b} -> {c}" for a, b, c in clashes[:5])
        more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
        raise ValueError(f"{len(clashes)} pairs of images would share one caption file: {listed}{more}. "
                         "Rename one of each pair, or tag them into different --out folders")
    if out_dir is not None:
        _check_writable(out_dir, "output folder")
    else:  # captions beside the images: every image folder must take files
        for folder in sorted({f.parent for f in captions}):
            _check_writable(folder, "image folder (captions are written beside the images; or give --out)")


def _check_table(table_path: Path, overwrite: bool) -> None:
    """Before any image is tagged: the table's folder takes files, is no subset or run folder
    (whose tags.csv is its output list), and an existing table is replaced only when asked."""
    _check_writable(table_path.parent, "output folder")
    kind = animetag_folder(table_path.parent)
    if kind:
        raise ValueError(f"{table_path.parent} is a {kind} folder: {table_path.name} there is its own; "
                         "write the table to another folder (--out)")
    if table_path.exists() and not overwrite:
        raise FileExistsError(f"{table_path} exists; pass --overwrite to replace it")


def _write_table(table_path: Path, fmt: str, rows: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
    """One table for all images, written whole (csv, or json with the unreadable images)."""
    if fmt == "json":
        write_json_atomic(table_path, {"images": rows, "errors": errors})
        return
    with atomic_path(table_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "rating", "rating_score", "tags", "scores"])
        for r in rows:
            w.writerow([r["file"], r["rating"], "" if r["rating_score"] is None else f"{r['rating_score']:.4f}",
                        ", ".join(r["tags"]), " ".join(f"{s:.4f}" for s in r["scores"])])
