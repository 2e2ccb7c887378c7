"""Build a training subset: filters, top-K tag vocabulary, unbiased selection, decoding in
parallel processes, a multi-label stratified split, and the folder of the data contract
(`tags.csv`, `manifest.csv`, `shards/`, `subset.json`).

The build works in `OUT.partial/` and renames it to `OUT` only when complete, so a folder
named OUT with a `subset.json` is always whole. Decoded images are kept in chunk files in
the partial folder: an interrupted build, run again with the same settings, resumes.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import math
import multiprocessing as mp
import os
import pickle
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from animetag.config import CATEGORIES, CATEGORY_IDS, RATING_NAMES, SubsetConfig, subset_config, to_dict
from animetag.data.archives import Member
from animetag.data.danbooru import comma_tags_warning, flat_tags_warning, load_posts, read_tag_table, tag_list
from animetag.data.families import HASH_SIZE, MAX_NEAR_FAMILY, family_labels, find_families, leaked, near_train
from animetag.data.image_index import ImageIndex
from animetag.data.images import prepare_for_shard
from animetag.data.shards import SPLITS, ShardWriter
from animetag.folders import SubsetFolder, atomic_path, refuse_overwriting_another_kind, write_json_atomic
from animetag.locks import folder_lock, refuse_removing_inputs
from animetag.vocab import RATING_CATEGORY, n_ratings, rating_index, rating_rows, wd_sorted

CHUNK = 512
LISTED_PER_REASON = 1000  # records listed in subset.json per reason; every one is counted


class LeftOut:
    """The records left out of a subset: every one counted by reason, the first
    `LISTED_PER_REASON` of each reason listed (id or file:line, and the detail), so that
    subset.json stays small when millions of posts have no image here."""

    def __init__(self, limit: int = LISTED_PER_REASON):
        self.limit = limit
        self.counts: Counter[str] = Counter()
        self.records: list[dict[str, Any]] = []
        self._listed: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1, examples: Iterable[dict[str, Any]] = ()) -> None:
        """Count `n` records left out for `reason`, listing (some of) `examples`."""
        if n <= 0:
            return
        self.counts[reason] += n
        for x in examples:
            if self._listed[reason] >= self.limit:
                break
            self.records.append({**x, "reason": reason})
            self._listed[reason] += 1

    def unlisted(self) -> dict[str, int]:
        """Per reason, how many records were counted but not listed."""
        return {r: n - self._listed[r] for r, n in self.counts.items() if n > self._listed[r]}


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, disable=not enabled, unit="img")


def tag_vocabulary(posts: pd.DataFrame, cfg: SubsetConfig) -> pd.DataFrame:
    """The output rows, in the WD taggers' order: the four ratings (when `cfg.rating_outputs`
    and any post has a rating), the top-K tags by count over the chosen categories, then the
    top characters (`cfg.top_k_character`); ties by name.

    Columns: tag_id, name, category (Danbooru id; 9 for ratings), count: the WD
    `selected_tags.csv` columns. Tags are numbered from 0 in row order; ratings carry WD's 9999999.
    """
    excluded = set(cfg.exclude_tags)

    def top(categories: Iterable[str], k: int, taken: set[str]) -> list[tuple[str, int, int]]:
        counts: Counter[str] = Counter()
        cat_of: dict[str, int] = {}
        for c in categories:
            col_counts = Counter(t for s in posts[f"tags_{c}"] for t in set(tag_list(s))
                                 if t not in excluded and t not in taken)
            for t in col_counts:
                cat_of.setdefault(t, CATEGORY_IDS[c])
            counts.update(col_counts)
        best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [(t, cat_of[t], n) for t, n in best]

    rows = top(cfg.categories, cfg.top_k, set()) if cfg.top_k else []
    if cfg.top_k_character and "character" not in cfg.categories:
        rows += top(("character",), cfg.top_k_character, {t for t, _, _ in rows})
    if cfg.tags:
        rows += named_tags(posts, cfg.tags, {t for t, _, _ in rows})
    tags = wd_sorted(pd.DataFrame(rows, columns=["name", "category", "count"]))
    tags.insert(0, "tag_id", range(len(tags)))
    rated = posts["rating"].isin(list(RATING_NAMES)) if len(posts) else pd.Series([], dtype=bool)
    if cfg.rating_outputs and rated.any():
        tags = pd.concat([rating_rows(posts.loc[rated, "rating"].value_counts().to_dict()), tags],
                         ignore_index=True)
    return tags


def named_tags(posts: pd.DataFrame, names: Iterable[str], taken: set[str]) -> list[tuple[str, int, int]]:
    """(name, category, count) of each tag named (`--tags`), in whichever category the
    metadata has it; a name no post has is an error that lists it with its closest known
    names, before anything is decoded."""
    wanted = [n for n in names if n not in taken]
    counts: dict[str, Counter[str]] = {}
    for c in CATEGORIES:
        if f"tags_{c}" in posts:
            counts[c] = Counter(t for s in posts[f"tags_{c}"] for t in set(tag_list(s)))
    out, unknown = [], []
    for n in wanted:
        found = [(counts[c][n], c) for c in counts if counts[c][n]]
        if not found:
            unknown.append(n)
            continue
        count, cat = max(found)
        out.append((n, CATEGORY_IDS[cat], count))
    if unknown:
        known = {t for cnt in counts.values() for t in cnt}
        hints = [f"{n} (closest: {', '.join(difflib.get_close_matches(n, known, n=3, cutoff=0.6)) or 'none'})"
                 for n in unknown[:20]]
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        raise ValueError(f"--tags: {len(unknown)} of the {len(wanted)} tags named are on no post with an image here: "
                         + "; ".join(hints) + more)
    return out


def label_categories(cfg: SubsetConfig) -> tuple[str, ...]:
    """The metadata tag categories a subset's labels come from (every one, when tags are
    named: a named tag may be of any category)."""
    if cfg.tags:
        return CATEGORIES
    extra = ("character",) if cfg.top_k_character and "character" not in cfg.categories else ()
    return tuple(cfg.categories) + extra


def rating_scheme(ratings: pd.Series, setting: str) -> tuple[str, dict[str, str]]:
    """(scheme, letter mapping). Danbooru's ratings were s(afe)/q/e until 2022 and are
    g(eneral)/s(ensitive)/q/e since; an old `s` is closest to today's `g` (some posts rated
    safe would now be sensitive). `auto`: metadata with `s` but no `g` is the older scheme."""
    letters = set(ratings[ratings != ""].unique())
    scheme = setting
    if setting == "auto":
        scheme = "legacy" if ("s" in letters and "g" not in letters) else "current"
    mapping = {"s": "g", "q": "q", "e": "e"} if scheme == "legacy" else {r: r for r in RATING_NAMES}
    return scheme, mapping


def kept_tags(posts: pd.DataFrame, categories: Iterable[str], vocab: dict[str, int]) -> list[list[int]]:
    """Per post, the row indices of its kept tags (sorted); `vocab` maps tag names to rows."""
    cols = [posts[f"tags_{c}"].tolist() for c in categories]
    out = []
    for row in zip(*cols):
        idx = {vocab[t] for s in row for t in tag_list(s) if t in vocab}
        out.append(sorted(idx))
    return out


def stratified_split(labels: np.ndarray, val: float, test: float, seed: int) -> np.ndarray:
    """Assign 'train'/'val'/'test' per row by multi-label iterative stratification
    (Sechidis et al. 2011, via iterative-stratification), so every tag keeps positives in
    every split where its count allows."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    n = len(labels)
    split = np.array(["train"] * n, dtype=object)
    if n < 10:
        raise ValueError(f"only {n} images are left: too few to split into train/val/test")
    rest_frac = val + test
    s1 = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=rest_frac, random_state=seed)
    _, rest = next(s1.split(np.zeros(n), labels))
    s2 = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test / rest_frac, random_state=seed + 1)
    v, t = next(s2.split(np.zeros(len(rest)), labels[rest]))
    split[rest[v]] = "val"
    split[rest[t]] = "test"
    return split


FAMILIES = "families.csv"


def split_of(Y: np.ndarray, family: np.ndarray | None, cfg: SubsetConfig) -> np.ndarray:
    """A multi-label stratified split: of whole families (`cfg.split_by` family: each
    family's labels the union of its members', every member in its family's split) or of
    single images (random)."""
    if cfg.split_by == "family" and family is not None:
        F, inverse = family_labels(Y, family)
        if len(F) < min_images(cfg):
            raise ValueError(f"the {len(Y)} images form only {len(F)} families, too few to split by family; "
                             "split single images (--split-by random) or leave near-duplicates out "
                             "(--near-duplicate-bits -1)")
        return stratified_split(F, cfg.val_fraction, cfg.test_fraction, cfg.seed)[inverse]
    return stratified_split(Y, cfg.val_fraction, cfg.test_fraction, cfg.seed)


def assign_splits(Y: np.ndarray, ids: np.ndarray, cfg: SubsetConfig, family: np.ndarray | None = None
                  ) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Each kept post's split (`split_of`); with `cfg.splits_from`, a post that subset holds
    keeps the split it has there, a new post of the family of one follows it, and only the
    others are split here: a run fine-tuned from one trained on that subset is never tested
    on an image its parent trained on. Returns the splits and what `subset.json` records of
    the carried ones."""
    if not cfg.splits_from:
        return split_of(Y, family, cfg), None
    before = SubsetFolder.of(cfg.splits_from).manifest
    theirs = dict(zip(before["id"].astype(int), before["split"]))
    known = np.array([i in theirs for i in ids.tolist()], dtype=bool)
    split = np.array([theirs.get(i, "train") for i in ids.tolist()], dtype=object)
    followed = 0
    if family is not None:
        of_family = {f: s for f, s, k in zip(family.tolist(), split.tolist(), known.tolist()) if k}
        for r in np.flatnonzero(~known):
            if family[r] in of_family:
                split[r], known[r], followed = of_family[family[r]], True, followed + 1
    new = np.flatnonzero(~known)
    if len(new) >= 10:  # enough to split the newcomers as any subset is split
        split[new] = split_of(Y[new], None if family is None else family[new], cfg)
    record = {"subset": str(Path(cfg.splits_from).resolve()), "kept_their_split": int(known.sum()) - followed,
              "followed_their_family": followed, "split_here": int(len(new)) if len(new) >= 10 else 0,
              "new_to_train": 0 if len(new) >= 10 else int(len(new)),
              "note": "posts the other subset holds keep its split, and their families' new posts follow them; "
                      "the rest are split here (fewer than 10: all to train)"}
    return split, record


def family_audit(Y: np.ndarray, family: np.ndarray, links: dict[str, int], cfg: SubsetConfig,
                 refused: np.ndarray | None = None) -> dict[str, Any]:
    """What subset.json records of the families, and how a plain random split of these
    images would have leaked: test images with a family member in train (and, where the
    family cap refused near-duplicate links, test images near a training image by one)."""
    refused = np.zeros((0, 2), np.int64) if refused is None else refused
    sizes = np.bincount(np.unique(family, return_inverse=True)[1])
    plain = stratified_split(Y, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    return {
        "split_by": cfg.split_by, "families_of_two_or_more": int((sizes > 1).sum()),
        "images_in_them": int(sizes[sizes > 1].sum()), "largest": int(sizes.max()) if len(sizes) else 0,
        "links": links, "near_duplicates": {"hash": f"imagehash.phash, {HASH_SIZE}x{HASH_SIZE} bits",
                                            "max_distance": cfg.near_duplicate_bits},
        "random_split_would_leak": {"test_images_with_family_in_train": leaked(plain, family, "test"),
                                    "val_images_with_family_in_train": leaked(plain, family, "val"),
                                    "test_images_near_train_by_refused_link": near_train(plain, refused, "test"),
                                    "test_images": int((plain == "test").sum())},
        "file": FAMILIES,
    }


def write_families(path: Path, ids: np.ndarray, family: np.ndarray) -> None:
    """families.csv: each image of a family of two or more, and its family (the id of its
    first member)."""
    inverse = np.unique(family, return_inverse=True)[1]
    many = np.bincount(inverse)[inverse] > 1
    pd.DataFrame({"id": ids[many], "family": ids[family[many]]}).sort_values(["family", "id"]).to_csv(path, index=False)


def _signature(paths: list[Path], images_root: Path, cfg: SubsetConfig) -> str:
    h = hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode())
    h.update(str(images_root.resolve()).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _source_label(src: Path | Member, images_root: Path) -> str:
    """The manifest's `file`: a path relative to the images root, or `ARCHIVE.tar:MEMBER`."""
    if isinstance(src, Member):
        base = images_root if images_root.is_dir() else images_root.parent
        return f"{os.path.relpath(src.archive, base)}:{src.name}"
    return os.path.relpath(src, images_root)


def min_images(cfg: SubsetConfig) -> int:
    """The fewest images a subset can be split with: two for the smaller of val and test."""
    smallest = min(cfg.val_fraction, cfg.test_fraction)
    return max(10, math.ceil(2 / smallest)) if smallest > 0 else 10


def _too_few_message(n: int, n_min: int, cfg: SubsetConfig, left_out: LeftOut, images_root: Path) -> str:
    reasons = left_out.counts
    msg = (f"only {n} images could be used, fewer than the {n_min} needed for train/val/test splits "
           f"(val_fraction {cfg.val_fraction}, test_fraction {cfg.test_fraction}, max_images {cfg.max_images})")
    if reasons:
        msg += "; left out: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common())
    if reasons.get("missing_file"):
        msg += (f". Image files were looked for under {images_root} as files named ID.ext or MD5.ext in any "
                "folder there (512px/NNNN/ID.jpg, original/NNNN/ID.ext, MD5[:2]/MD5.ext, ...), the metadata's "
                "file column, and ID.ext or MD5.ext members of the .tar archives there: is --images-root right?")
    return msg


def _files_fingerprint(found: dict[int, Path | Member | None]) -> list[tuple]:
    """(row, path, size, modification time) of each post's image file (or archive member), as
    it is now."""
    out = []
    archive_stat: dict[str, os.stat_result] = {}  # one stat per archive, not per member
    for r, path in found.items():
        if path is None:
            out.append((r, "", -1, -1))
            continue
        try:
            if isinstance(path, Member):
                if path.archive not in archive_stat:
                    archive_stat[path.archive] = os.stat(path.archive)
                st = archive_stat[path.archive]
                out.append((r, str(path), path.offset, path.size, st.st_size, st.st_mtime_ns))
                continue
            st = path.stat()
            out.append((r, str(path), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((r, str(path), -1, -1))
    return out


def build_subset(metadata: str | os.PathLike | Iterable[str | os.PathLike], images_root: str | os.PathLike,
                 out: str | os.PathLike, cfg: SubsetConfig | None = None, overwrite: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    """Build the subset folder `out`; returns the summary written to `subset.json`.

    `overwrite` replaces an existing `out`, never one that holds or lies inside the metadata
    or the images root. The build holds the lock `OUT.lock` throughout."""

    paths = [Path(metadata)] if isinstance(metadata, (str, os.PathLike)) else [Path(p) for p in metadata]
    out = Path(out)
    if out.exists() and overwrite:
        refuse_removing_inputs(out, {"metadata file": paths, "images root": images_root})
        refuse_overwriting_another_kind(out, "subset")
    with folder_lock(out.with_name(out.name + ".lock"), "animetag subset"):
        return _build_subset(paths, images_root, out, cfg, overwrite, progress)


def _build_subset(paths: list[Path], images_root: str | os.PathLike, out: Path, cfg: SubsetConfig | None,
                  overwrite: bool, progress: bool) -> dict[str, Any]:
    cfg = cfg or SubsetConfig()
    t0 = time.time()
    images_root = Path(images_root)
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"metadata file not found: {p}")
    if not (images_root.is_dir() or (images_root.suffix == ".tar" and images_root.is_file())):
        raise FileNotFoundError(f"images root not found: {images_root} (a folder, or a .tar archive)")
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to rebuild it")
    partial = out.with_name(out.name + ".partial")
    sig = _signature(paths, images_root, cfg)
    sig_file = partial / "signature.txt"
    if partial.exists() and (not sig_file.exists() or sig_file.read_text() != sig):
        shutil.rmtree(partial)  # a different build was interrupted here: start again
    (partial / "decoded").mkdir(parents=True, exist_ok=True)
    sig_file.write_text(sig)

    index = ImageIndex.scan(images_root)  # which posts have an image here, before any metadata
    eligible = _eligible_posts(paths, cfg, index)
    decoded = _decode_selection(eligible, index, partial, cfg, progress)
    summary = _write_subset(eligible, decoded, partial, cfg, paths, images_root)
    summary["seconds"]["total"] = round(time.time() - t0, 2)
    shutil.rmtree(partial / "decoded")
    sig_file.unlink()
    write_json_atomic(partial / SubsetFolder.SUMMARY, summary)  # written last: marks the folder whole
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return summary


@dataclass
class _Eligible:
    """Phase 1's outcome: the posts that pass the filters, their output rows, what was left out."""

    posts: pd.DataFrame
    vocab_df: pd.DataFrame
    labels: list[list[int]]  # per post: indices into vocab_df (its rating row first, if any)
    left_out: LeftOut
    counts: dict[str, Any]
    rating_info: dict[str, Any]
    warnings: list[str]


@dataclass
class _Decoded:
    """Phase 2's outcome: the selected posts whose image decoded, in selection order."""

    kept: list[int]  # row indices into posts
    file_of: dict[int, str]  # row index -> image source relative to the images root
    chunk_files: list[Path]  # the decoded JPEGs, in chunks
    images: dict[str, Any]  # what the images root holds (ImageIndex.describe)
    shortfall: dict[str, Any] | None  # when fewer than max_images could be kept
    phash_of: dict[int, str]  # row index -> perceptual hash of its square ("" when unknown)


def _eligible_posts(paths: list[Path], cfg: SubsetConfig, index: ImageIndex) -> _Eligible:
    """1. metadata of the posts with an image here -> filters -> vocabulary (counted over
    those posts)."""
    tag_table = read_tag_table(cfg.tag_table) if cfg.tag_table else None
    posts, report = load_posts(paths, categories=label_categories(cfg), tag_table=tag_table, present=index,
                               required=label_categories(cfg))
    warnings_list = [w for w in (flat_tags_warning(report), comma_tags_warning(report), *_archive_warnings(index))
                     if w]
    for w in warnings_list:
        warnings.warn(w, stacklevel=3)
    left_out = LeftOut()
    left_out.add("malformed_record", len(report.malformed),
                 ({"record": f"{Path(m['source']).name}:{m['line']}", "detail": m["reason"]} for m in report.malformed))
    left_out.add("missing_file", report.absent,
                 ({"id": i, "detail": f"no image for post {i} under {index.root}"} for i in report.absent_examples))
    counts: dict[str, Any] = {"records_read": report.records + len(report.malformed) + report.absent,
                              "malformed": len(report.malformed), "with_image": report.records}

    def drop(mask: np.ndarray, reason: str, detail: str = "") -> None:
        nonlocal posts
        ids = posts.loc[mask, "id"].tolist()
        left_out.add(reason, len(ids), ({"id": int(pid), **({"detail": detail} if detail else {})} for pid in ids))
        posts = posts.loc[~mask].reset_index(drop=True)

    if not cfg.include_deleted:
        drop(posts["is_deleted"].to_numpy(), "deleted")
    scheme, mapping = rating_scheme(posts["rating"], cfg.rating_scheme)
    unknown = ~posts["rating"].isin(list(mapping))
    odd = posts.loc[unknown & (posts["rating"] != ""), "rating"].value_counts()
    if len(odd):
        w = (f"{int(odd.sum())} posts have a rating that is not g, s, q or e (nor general, sensitive, "
             f"questionable, explicit, safe): {', '.join(f'{k!r} {v}' for k, v in odd.head(8).items())}; "
             "they are kept without a rating")
        warnings_list.append(w)
        warnings.warn(w, stacklevel=3)
    posts["rating"] = posts["rating"].map(mapping).fillna("")  # an unknown rating counts as none
    rating_info = {"scheme": scheme, "mapping": mapping, "unrated_posts": int(unknown.sum()),
                   "note": ("ratings before 2022 were s(afe)/q/e: safe is kept as general"
                            if scheme == "legacy" else "ratings g(eneral)/s(ensitive)/q/e as given")}
    if cfg.ratings:
        drop(~posts["rating"].isin(cfg.ratings).to_numpy(), "rating", f"not in {list(cfg.ratings)}")
    posts = posts.sort_values("id", kind="stable").reset_index(drop=True)
    drop(posts["id"].duplicated().to_numpy(), "duplicate_id")
    dup = (posts["md5"] != "") & posts["md5"].duplicated()
    drop(dup.to_numpy(), "duplicate_md5", "the same md5 as a post with a lower id")
    counts["vocabulary_posts"] = len(posts)
    vocab_df = tag_vocabulary(posts, cfg)
    n_rat = n_ratings(vocab_df)
    vocab = {t: i for i, (t, c) in enumerate(zip(vocab_df["name"], vocab_df["category"])) if c != RATING_CATEGORY}
    labels = kept_tags(posts, label_categories(cfg), vocab)
    n_kept = np.array([len(x) for x in labels])  # tags only: a rating is not a tag
    if n_rat:
        ri = [rating_index(r) for r in posts["rating"]]
        labels = [([i] if i is not None else []) + lab for i, lab in zip(ri, labels)]
    few = n_kept < cfg.min_tags
    reason = "no_kept_tag" if cfg.min_tags <= 1 else "too_few_kept_tags"
    keep_idx = np.flatnonzero(~few)
    labels = [labels[i] for i in keep_idx]
    drop(few, reason, f"fewer than {cfg.min_tags} of the {len(vocab)} kept tags")
    counts["eligible"] = len(posts)

    return _Eligible(posts, vocab_df, labels, left_out, counts, rating_info, warnings_list)


def _archive_warnings(index: ImageIndex) -> list[str]:
    """What the archives' headers showed: downloads cut off, posts packed twice."""
    tars = index.tars
    if tars is None:
        return []
    out = [f"{a} ends inside a member header (a download cut off?): the images after the cut are missing; "
           "download it again" for a in tars.truncated]
    if tars.duplicates:
        out.append(f"{tars.duplicates} images are in the archives twice (the same id or md5 in two archives, or a "
                   "member appended twice): the last one is used, in archive name order, as tar does")
    return out


def _decode_selection(e: _Eligible, index: ImageIndex, partial: Path, cfg: SubsetConfig,
                      progress: bool) -> _Decoded:
    """2. an unbiased selection among the eligible posts (all of which have an image here),
    decoded in parallel until max_images are usable; each chunk is kept in `partial` so an
    interrupted build resumes."""
    posts, left_out = e.posts, e.left_out
    images_root = index.root

    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(posts))
    workers = cfg.workers or os.cpu_count() or 1
    kept: list[int] = []  # row indices into posts, in decoded order
    file_of: dict[int, str] = {}  # row index -> image path relative to images_root
    phash_of: dict[int, str] = {}
    chunk_files: list[Path] = []
    pos = 0
    bar = _progress(min(cfg.max_images, len(posts)), "decoding", progress)
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        ci = 0
        while len(kept) < cfg.max_images and pos < len(order):
            need = cfg.max_images - len(kept)
            rows = order[pos: pos + min(CHUNK, max(need, 1))]
            pos += len(rows)
            cf = partial / "decoded" / f"chunk-{ci:05d}.pkl"
            ci += 1
            found = {}  # row -> resolved image path (or None), as the files are now
            for r in rows.tolist():
                found[r] = index.locate(int(posts.at[r, "id"]), posts.at[r, "md5"], posts.at[r, "file_ext"],
                                        posts.at[r, "file"])
            fingerprint = _files_fingerprint(found)
            saved = None
            if cf.exists():
                with open(cf, "rb") as f:
                    saved = pickle.load(f)
            # a chunk is reused only if its image files are the ones it was decoded from (a file
            # that was missing may have been copied in since, another may have changed)
            if saved is not None and len(saved) == 3 and saved[2] == fingerprint:
                results, rel_paths, _ = saved
            else:
                jobs, results, rel_paths = [], [], {}
                for r, path in found.items():
                    if path is None:
                        results.append((r, None, "missing_file",
                                        f"no image for post {posts.at[r, 'id']} under {images_root}"))
                    else:
                        src = path if isinstance(path, Member) else str(path)
                        jobs.append((r, src, cfg.image_size, cfg.max_pixels, cfg.jpeg_quality))
                        rel_paths[r] = _source_label(path, images_root)
                # archive members in archive and byte order (one forward pass through each
                # archive per chunk); the results go back to the random selection order
                jobs.sort(key=lambda j: (j[1].archive, j[1].offset) if isinstance(j[1], Member) else ("", 0))
                done = {res[0]: res for res in pool.map(prepare_for_shard, jobs, chunksize=16)}
                results += [done[r] for r in found if r in done]
                with atomic_path(cf) as tmp, open(tmp, "wb") as f:
                    pickle.dump((results, rel_paths, fingerprint), f, protocol=pickle.HIGHEST_PROTOCOL)
            chunk_files.append(cf)
            file_of.update(rel_paths)
            for r, jpeg, why, detail, *rest in results:
                if jpeg is None:
                    left_out.add(why, 1, ({"id": int(posts.at[r, "id"]), "detail": detail},))
                else:
                    kept.append(r)
                    phash_of[r] = rest[0] if rest else ""
            bar.update(len([x for x in results if x[1] is not None]))
    bar.close()
    e.counts["not_selected"] = int(len(order) - pos)
    shortfall = _shortfall(len(kept), pos, len(order), index, cfg, e.counts)
    if shortfall:  # in subset.json's warnings; the CLI and notebook 01 print it
        e.warnings.append(shortfall["message"])
    return _Decoded(kept, file_of, chunk_files, index.describe(), shortfall, phash_of)


def _shortfall(n_kept: int, n_tried: int, n_eligible: int, index: ImageIndex, cfg: SubsetConfig,
               counts: dict[str, Any]) -> dict[str, Any] | None:
    """When fewer than `max_images` could be kept: the numbers, and how many more archives
    (at the rate the ones here gave) would close the gap."""
    if n_kept >= cfg.max_images:
        return None
    gap = cfg.max_images - n_kept
    out: dict[str, Any] = {"asked": cfg.max_images, "kept": n_kept, "posts_with_image": counts["with_image"],
                           "eligible": n_eligible}
    msg = (f"only {n_kept:,} of the {cfg.max_images:,} images asked for (max_images) could be kept: "
           f"{counts['with_image']:,} posts have an image under {index.root}, {n_eligible:,} of them pass the "
           f"filters and have a kept tag, and {n_eligible - n_kept:,} of those could not be used")
    per_archive = index.posts_per_archive()
    used = [a for a, n in per_archive.items() if n]
    if used and n_tried >= n_eligible and n_kept:
        rate = n_kept / len(used)  # usable images per archive here
        more = math.ceil(gap / rate)
        out.update({"archives": len(used), "usable_per_archive": round(rate, 1), "more_archives_needed": more})
        msg += (f". The {len(used)} archive(s) here gave about {rate:,.0f} usable images each: about {more} more "
                f"archive(s) of the same mirror would close the gap of {gap:,}")
    else:
        msg += f". Add images for about {gap:,} more posts, or lower max_images"
    out["message"] = msg
    return out


@dataclass
class SubsetRow:
    """One kept post as a subset folder stores it."""

    id: int
    md5: str
    split: str
    file: str  # where its image came from
    rating: str
    jpeg: bytes  # the square image, as the shards hold it
    labels: list[int]  # its rows of tags.csv (rating row included)


def write_subset_files(folder: Path, rows: Iterable[SubsetRow], vocab: pd.DataFrame, n_split: dict[str, int],
                       images_per_shard: int) -> None:
    """The shards, manifest.csv and tags.csv of a subset folder, from its rows in order: the
    one writer of the format (`n_split`: how many rows each split has)."""
    folder = Path(folder)
    shard_dir = folder / SubsetFolder.SHARDS
    if shard_dir.exists():
        shutil.rmtree(shard_dir)
    shard_dir.mkdir(parents=True)
    writers = {s: ShardWriter(shard_dir, s, n_split[s], images_per_shard) for s in SPLITS if n_split.get(s)}
    names, n_rat = vocab["name"].tolist(), n_ratings(vocab)
    with open(folder / SubsetFolder.MANIFEST, "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        wr.writerow(["id", "md5", "split", "file", "rating", "tags"])
        for r in rows:
            writers[r.split].write(r.id, r.jpeg, r.labels)
            wr.writerow([r.id, r.md5, r.split, r.file, r.rating, " ".join(names[i] for i in r.labels if i >= n_rat)])
    for w in writers.values():
        w.close()
    vocab.to_csv(folder / SubsetFolder.TAGS, index=False)


def _write_subset(e: _Eligible, d: _Decoded, partial: Path, cfg: SubsetConfig, paths: list[Path],
                  images_root: Path) -> dict[str, Any]:
    """3. split, shards, tables; returns the summary (subset.json is the caller's to write)."""
    posts, vocab_df, labels, left_out, counts = e.posts, e.vocab_df, e.labels, e.left_out, e.counts
    kept, file_of = d.kept, d.file_of
    n_rat = n_ratings(vocab_df)
    lab_of = {int(r): labels[r] for r in range(len(labels))}
    Y = np.zeros((len(kept), len(vocab_df)), dtype=np.uint8)
    for i, r in enumerate(kept):
        Y[i, lab_of[r]] = 1
    n_min = min_images(cfg)
    if len(kept) < n_min:
        raise ValueError(_too_few_message(len(kept), n_min, cfg, left_out, images_root))
    ids = posts.loc[kept, "id"].astype(int).to_numpy()
    parents = (posts.loc[kept, "parent_id"].fillna(0).astype(int).to_numpy() if "parent_id" in posts
               else np.zeros(len(kept), int))
    family, links, refused = find_families(ids, posts.loc[kept, "md5"].astype(str).tolist(), parents,
                                           [d.phash_of.get(r, "") for r in kept], cfg.near_duplicate_bits)
    split, kept_splits = assign_splits(Y, ids, cfg, family)
    family_record = family_audit(Y, family, links, cfg, refused)
    family_record["leaked_here"] = {"test_images_with_family_in_train": leaked(split, family, "test"),
                                    "val_images_with_family_in_train": leaked(split, family, "val"),
                                    "test_images_near_train_by_refused_link": near_train(split, refused, "test"),
                                    "val_images_near_train_by_refused_link": near_train(split, refused, "val")}
    near = family_record["leaked_here"]["test_images_near_train_by_refused_link"]
    if near:
        w = (f"{near} test images are near-duplicates of training images (within {cfg.near_duplicate_bits} bits) "
             f"by links the family cap refused: {links['phash_refused']} links would have gathered more than "
             f"{MAX_NEAR_FAMILY} images into one family (flat pictures, or one picture uploaded many times). Test F1 "
             "is flattered by those images; subset.json's families.leaked_here counts them")
        e.warnings.append(w)
        warnings.warn(w, stacklevel=3)
    wanted = {"train": 1.0, "val": cfg.val_fraction, "test": cfg.test_fraction}
    empty = [s for s in SPLITS if wanted[s] > 0 and not (split == s).any()]
    if empty:
        raise ValueError(f"the {' and '.join(empty)} split of {len(kept)} images came out empty; "
                         "use more images (--max-images) or larger val/test fractions")
    split_of = dict(zip(kept, split))
    n_split = Counter(split.tolist())
    t_write = time.time()

    def rows() -> Iterator[SubsetRow]:
        for cf in d.chunk_files:
            with open(cf, "rb") as f:
                for r, jpeg, *_ in pickle.load(f)[0]:
                    if jpeg is not None and r in split_of:
                        p = posts.loc[r]
                        yield SubsetRow(int(p["id"]), p["md5"], split_of[r], file_of[r], p["rating"], jpeg, lab_of[r])

    # `count`: the kept posts with each row, the subset's own images (the tags were chosen by
    # their count over every post with an image here, which max_images and failed decodes cut)
    vocab_df = vocab_df.assign(count=Y.sum(0).astype(int))
    write_subset_files(partial, rows(), vocab_df, n_split, cfg.images_per_shard)
    write_families(partial / FAMILIES, ids, family)
    names = vocab_df["name"].tolist()
    per_split_pos = {s: Y[split == s].sum(0).astype(int).tolist() for s in SPLITS}
    counts.update({"kept": len(kept), **{s: int(n_split[s]) for s in SPLITS},
                   "left_out": dict(left_out.counts)})
    summary = {
        "settings": to_dict(cfg),
        "metadata": [str(p) for p in paths], "images_root": str(images_root),
        "images": d.images,
        "archives": {"count": d.images["archives"], "images_indexed": d.images["archive_members"]},
        "counts": counts,
        "vocabulary": {"counted_over": "posts_with_image",
                       "posts": counts["vocabulary_posts"],
                       "note": "the tags were chosen by their count over the posts with an image here that "
                               "pass the filters (deleted, rating, duplicates), not over all the metadata; "
                               "tags.csv's count is over the kept posts (the subset's images)"},
        "shortfall": d.shortfall,
        "splits_from": kept_splits,
        "families": family_record,
        "warnings": e.warnings,
        "n_tags": len(vocab_df) - n_rat,
        "n_ratings": n_rat,
        "ratings": {**e.rating_info, "kept": dict(Counter(posts.loc[kept, "rating"].replace("", "none")))},
        "positives_per_split": {"tags": names, **per_split_pos},
        "seconds": {"total": None, "write_shards": round(time.time() - t_write, 2)},
        "left_out": left_out.records,
        "left_out_unlisted": left_out.unlisted(),
    }
    return summary


def twin_subset(base: str | os.PathLike, out: str | os.PathLike, profile: str, instead: str = "",
                **changes: Any) -> Path:
    """`base`'s twin with some settings changed (`changes`), built from the metadata and
    images its subset.json records, with its other settings (size, seed, image count); built
    once: a twin already there with these settings is returned as it is. `instead`: what the
    user can do when base's inputs are gone."""
    base, out = SubsetFolder.of(base), Path(out)
    summary = base.summary
    cfg = subset_config(profile, **{**summary["settings"], **changes})
    if (out / SubsetFolder.SUMMARY).exists() and SubsetFolder(out).summary["settings"] == to_dict(cfg):
        return out
    metadata = [Path(p) for p in summary["metadata"]]
    missing = [str(p) for p in [*metadata, Path(summary["images_root"])] if not p.exists()]
    if missing:
        raise FileNotFoundError(f"the base subset {base} was built from {', '.join(missing)}, which is not here "
                                f"now: mount or copy it back{', or ' + instead if instead else ''}")
    build_subset(metadata, summary["images_root"], out, cfg, overwrite=True)
    return out


def read_subset(subset_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(tags, manifest, summary) of a built subset; a clear error if it is not one. Given a
    `SubsetFolder`, what it has read already."""
    return SubsetFolder.of(subset_dir).read()


def label_matrix(manifest: pd.DataFrame, tags: pd.DataFrame) -> np.ndarray:
    """Labels (n_images x rows of tags.csv) from the manifest: the rating one-hot in the rating
    rows (all zero for a post without a rating), multi-hot tags in the tag rows."""
    n_rat = n_ratings(tags)
    idx = {t: n_rat + i for i, t in enumerate(tags["name"].iloc[n_rat:])}
    Y = np.zeros((len(manifest), len(tags)), dtype=np.uint8)
    for i, s in enumerate(manifest["tags"]):
        for t in tag_list(s):
            Y[i, idx[t]] = 1
    if n_rat:
        for i, r in enumerate(manifest["rating"]):
            j = rating_index(r)
            if j is not None:
                Y[i, j] = 1
    return Y
