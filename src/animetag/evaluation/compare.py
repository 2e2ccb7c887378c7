"""Like for like with the published taggers (`animetag compare`): the run and each other
tagger score the *same* images, each reading the original image files and preparing them its
own way (the run as `animetag tag` does), over the tags both know (matched by name), under
each threshold policy; each tagger's F1 minus the run's gets a paired bootstrap interval
(the images resampled together).

Thresholds: an animetag run (the one compared, or another beside it) is scored with its own
thresholds.json, the thresholds `animetag tag --policy NAME` applies, so a folder captioned
by `animetag tag` scores F1 1 under its default policy; a foreign tagger's are tuned on the
*same* validation images (the run's own validation split, which its thresholds.json was
tuned on); a run not evaluated yet is tuned there too.

The images are a subset's test split (`--data`), or a folder of images with caption files
beside them (`--labels`): then the folder is the test set and its captions the truth.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from animetag.data.archives import Member, TarIndex
from animetag.data.images import ImageError, load_array
from animetag.data.subset import label_matrix
from animetag.evaluation.evaluate import check_run_data
from animetag.folders import RunFolder, SubsetFolder, cached_arrays, fingerprint, write_csv_atomic, write_json_atomic
from animetag.metrics import bootstrap_f1_ci, f1_at, paired_bootstrap_diff
from animetag.model import policies
from animetag.tagging.foreign import ForeignTagger, canonical, cut_tagger, load_tagger
from animetag.tagging.tagger import find_images
from animetag.vocab import category_name, n_ratings, split_outputs, tag_rows

RESULT = "compare.json"
TABLE = "compare.csv"


@dataclass
class ImageSet:
    """Images to score and their truth over the run's tags (columns in its tag order)."""

    label: str
    keys: list[str]  # a post id, or a file
    sources: list[Any]  # what each is read from: a path or an archive member
    y: np.ndarray
    skipped: list[dict[str, str]] = field(default_factory=list)

    def keep(self, mask: np.ndarray) -> ImageSet:
        idx = np.flatnonzero(mask)
        return ImageSet(self.label, [self.keys[i] for i in idx], [self.sources[i] for i in idx], self.y[idx],
                        self.skipped)


def subset_images(data: SubsetFolder, split: str, names: list[str]) -> ImageSet:
    """A subset's split as its original image files (those the subset was built from: its
    images root must still be there), with its labels over `names`."""
    summary = data.summary
    root = Path(summary["images_root"])
    if not root.exists():
        raise FileNotFoundError(f"{data}: its images ({root}) are not here; the taggers read the original images: "
                                "mount or copy them back")
    base = root if root.is_dir() else root.parent
    m = data.manifest[data.manifest["split"] == split].reset_index(drop=True)
    tags = data.tags
    y_all = split_outputs(label_matrix(m, tags), data.n_ratings)[1]
    col = {n: j for j, n in enumerate(tag_rows(tags)["name"])}
    y = np.zeros((len(m), len(names)), np.uint8)
    for j, n in enumerate(names):
        y[:, j] = y_all[:, col[n]]
    archives: dict[str, TarIndex] = {}
    sources: list[Any] = []
    for pid, md5, file in zip(m["id"].astype(int), m["md5"], m["file"]):
        archive, sep, _member = file.rpartition(":")
        if sep and archive.endswith(".tar"):  # ARCHIVE.tar:MEMBER: found by id in that archive's index
            path = str(base / archive)
            if path not in archives:
                archives[path] = TarIndex.scan([path])
            sources.append(archives[path].find(int(pid), md5))
        else:
            sources.append(base / file)
    return ImageSet(f"the {split} split of {data.path}", [str(i) for i in m["id"]], sources, y)


def read_caption(text: str) -> list[str]:
    """Tags of a caption: comma separated when it has a comma (each tag may hold spaces),
    else separated by spaces; spaces or underscores alike."""
    parts = text.split(",") if "," in text else text.split()
    return [t for t in (canonical(p) for p in parts) if t]


def labelled_folder(folder: str | os.PathLike, names: list[str], aliases: dict[str, str] | None = None
                    ) -> tuple[ImageSet, dict[str, int]]:
    """Images with caption `.txt` files beside them (`a.png` + `a.txt`): the truth over
    `names`, and how many images carry each caption tag outside them (reported, not dropped
    silently). An image without a caption is skipped with its reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--labels {folder}: no such folder")
    index = {canonical(n, aliases): j for j, n in enumerate(names)}
    keys, sources, rows, skipped, unknown = [], [], [], [], {}
    for img in find_images([folder]):
        cap = img.with_suffix(".txt")
        if not cap.is_file():
            skipped.append({"file": str(img), "reason": "no_caption", "detail": f"no {cap.name} beside it"})
            continue
        row = np.zeros(len(names), np.uint8)
        for t in read_caption(cap.read_text(encoding="utf-8", errors="replace")):
            t = canonical(t, aliases)
            if t in index:
                row[index[t]] = 1
            else:
                unknown[t] = unknown.get(t, 0) + 1
        keys.append(str(img.relative_to(folder)))
        sources.append(img)
        rows.append(row)
    if not rows:
        raise ValueError(f"--labels {folder}: no image with a caption .txt beside it")
    y = np.stack(rows)
    return ImageSet(f"the labelled folder {folder}", keys, sources, y, skipped), dict(
        sorted(unknown.items(), key=lambda kv: -kv[1]))


def _read(src: Any) -> Any:
    if src is None:
        raise ImageError("missing_file", "not found in its archive")
    return src.read() if isinstance(src, Member) else src


def score_images(images: ImageSet, prepare: Callable[[Any], np.ndarray], predict: Callable[[np.ndarray], np.ndarray],
                 batch_size: int = 32, desc: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(scores, readable) of every image: prepared in threads and predicted in batches, an
    unreadable one a row of NaN and False in `readable`."""
    def one(src):
        try:
            return prepare(_read(src))
        except ImageError:
            return None

    out, ok = [], []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in tqdm(range(0, len(images.sources), batch_size), desc=desc, unit="batch", leave=False):
            arrays = list(pool.map(one, images.sources[start: start + batch_size]))
            good = [a for a in arrays if a is not None]
            s = predict(np.stack(good)) if good else None
            it = iter(s) if s is not None else iter(())
            for a in arrays:
                ok.append(a is not None)
                out.append(next(it) if a is not None else None)
    width = next((len(r) for r in out if r is not None), 0)
    scores = np.stack([r if r is not None else np.full(width, np.nan, np.float32) for r in out]) if out else \
        np.zeros((0, 0), np.float32)
    return scores, np.array(ok, bool)


def _skips(images: ImageSet, ok: np.ndarray, who: str) -> list[dict[str, str]]:
    out = []
    for key, src, good in zip(images.keys, images.sources, ok):
        if not good:
            try:
                load_array(_read(src), 8)
                why = {"reason": "unreadable_for_" + who, "detail": f"{who} could not prepare it"}
            except ImageError as e:
                why = {"reason": e.reason, "detail": str(e)}
            out.append({"image": key, **why})
    return out


class RunTagger:
    """A run folder as one of the taggers (the run compared, or another run beside it):
    `animetag tag`'s preprocessing, its tag outputs, its thresholds.json as published."""

    layout = "animetag run"

    def __init__(self, run: RunFolder, name: str = ""):
        self.folder = run
        self.name, self.path = name or run.path.name, run.path
        self.model_file = run.model_path
        self.model = run.model
        self.size = int(self.model.input_shape[1])
        rows = run.tags
        self.n_ratings = n_ratings(rows)
        tags = tag_rows(rows)
        self.names = tags["name"].tolist()
        self.categories = [category_name(c) for c in tags["category"]]
        saved = run.thresholds()
        self.published = policies.get(policies.DEFAULT_TAGGING).for_tags(saved, self.names) if saved else None
        self.published_source = f"its thresholds.json ({policies.DEFAULT_TAGGING}, tuned on its validation split)"
        self.own = self._own_thresholds(saved)

    def _own_thresholds(self, saved: dict[str, Any] | None) -> dict[str, Any]:
        """By policy key, the threshold `animetag tag --policy NAME` applies (a number, or one
        per tag in `names` order): from thresholds.json, and fixed ones as they are."""
        own: dict[str, Any] = {}
        for p in policies.table():
            if p.fixed:
                own[p.key] = p.threshold({})
            elif saved and p.saved in saved:
                value = saved[p.saved]
                own[p.key] = p.for_tags(saved, self.names) if isinstance(value, dict) else float(value)
        return own

    def own_for(self, columns: list[int] | None = None) -> dict[str, Any]:
        """`own`, per-tag thresholds cut to the tag columns `columns`."""
        if columns is None:
            return self.own
        return {k: (v[columns] if np.ndim(v) else v) for k, v in self.own.items()}

    def prepare(self, src) -> np.ndarray:
        return load_array(src, self.size).astype(np.float32)

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(x), np.float32)[:, self.n_ratings:]


def load_any(spec: str) -> ForeignTagger | RunTagger:
    """A run folder (model.keras + tags.csv) as a `RunTagger`, anything else by `load_tagger`."""
    name, _, where = spec.rpartition("=") if "=" in spec else ("", "", spec)
    folder = Path(where)
    if (folder / RunFolder.MODEL).is_file() and (folder / RunFolder.TAGS).is_file():
        return RunTagger(RunFolder(folder), name)
    return load_tagger(spec)


def refuse_merging_aliases(run_names: list[str], aliases: dict[str, str] | None) -> None:
    """An alias table that maps one of the run's tags onto another would merge their truth
    and their scores: refused, naming the pairs."""
    if not aliases:
        return
    first: dict[str, str] = {}
    merged = []
    for n in run_names:
        target = canonical(n, aliases)
        if target in first:
            merged.append(f"{first[target]!r} and {n!r} both become {target!r}")
        first.setdefault(target, n)
    if merged:
        raise ValueError(f"aliases: {len(merged)} of the run's own tags are mapped onto another of its tags, which "
                         "would merge their truth and scores: " + "; ".join(merged[:5]) + ". Leave the run's tags "
                         "out of the alias table")


def shared_tags(run_names: list[str], tagger: ForeignTagger | RunTagger, aliases: dict[str, str] | None = None
                ) -> tuple[list[int], list[int]]:
    """(the run's tag columns, the tagger's output columns) of the tags both know, matched by
    canonical name (rating rows excluded), in the run's order."""
    theirs: dict[str, int] = {}
    for k, (n, c) in enumerate(zip(tagger.names, tagger.categories)):
        if c != "rating":
            theirs.setdefault(canonical(n, aliases), k)
    ours = [(j, theirs[canonical(n, aliases)]) for j, n in enumerate(run_names) if canonical(n, aliases) in theirs]
    return [j for j, _ in ours], [k for _, k in ours]


def _scored(y_val, s_val, y, s, run_pred: dict[str, np.ndarray] | None, n_boot: int,
            own: dict[str, Any] | None = None) -> dict[str, Any]:
    """F1 under each policy, with an interval, and its difference from the run's predictions
    on the same images (paired) where given. Thresholds: a tagger's `own` (an animetag run's
    thresholds.json, as `animetag tag` applies them) where it has one for the policy, else
    tuned on val."""
    own = own or {}
    th = policies.tune_all(y_val, s_val) if any(p.key not in own for p in policies.table()) else {}
    out: dict[str, Any] = {"_pred": {}}
    for p in policies.table():
        t = own[p.key] if p.key in own else p.threshold(th)
        pred = s >= np.asarray(t)
        out["_pred"][p.key] = pred
        out[p.key] = {**f1_at(y, s, t), "ci95": bootstrap_f1_ci(y, pred, n_boot=n_boot)}
        if not p.fixed and np.ndim(t) == 0:
            out[p.key]["threshold"] = float(t)
        if run_pred is not None:
            out[p.key]["minus_run"] = paired_bootstrap_diff(y, run_pred[p.key], pred, n_boot=n_boot)
    return out


def compare(run: str | os.PathLike, taggers: list[str], data: str | os.PathLike | None = None,
            labels: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
            aliases: dict[str, str] | None = None, n_boot: int = 1000, batch_size: int = 32) -> dict[str, Any]:
    """Scores the run and each tagger (specs for `foreign.load_tagger`) on the same images;
    writes compare.json and compare.csv in `out` (default: RUN/compare) and returns the
    result. `data`: the subset whose test split is scored (the run's own subset); `labels`:
    a labelled folder instead (thresholds then tuned on the validation split of `data`, or of
    the subset the run records)."""
    folder = RunFolder.of(run)
    if data is None and labels is None:
        raise ValueError("compare: give --data SUBSET (its test split) or --labels FOLDER")
    val_source = data or (folder.config or {}).get("subset")
    if not val_source or not (Path(val_source) / SubsetFolder.SUMMARY).exists():
        raise FileNotFoundError(f"thresholds are tuned on the validation split of the run's subset, and it is not here "
                                f"({val_source or 'not recorded'}): give --data SUBSET")
    subset = SubsetFolder.of(val_source)
    check_run_data(subset, folder)
    ours = RunTagger(folder, "run")
    foreign = [load_any(t) for t in taggers]
    if len({t.name for t in foreign} | {"run"}) != len(foreign) + 1:
        raise ValueError(f"compare: two taggers share a name ({[t.name for t in foreign]}); name them NAME=PATH")
    names = ours.names
    val = subset_images(subset, "val", names)
    refuse_merging_aliases(names, aliases)
    unknown: dict[str, int] = {}
    if labels is not None:
        test, unknown = labelled_folder(labels, names, aliases)
        truth = f"captions of {Path(labels)}"
    else:
        test = subset_images(subset, "test", names)
        truth = f"tags of {subset.path}"
    own = "its thresholds.json (as `animetag tag` applies them)" if ours.own.keys() >= {
        p.key for p in policies.table()} else "thresholds tuned on that split (it has no thresholds.json for every policy)"
    thresholds_note = (f"each animetag run: {own}; each foreign tagger: tuned on the validation split of "
                       f"{subset.path} (the run's own)" + ("; the labelled folder is only scored" if labels else ""))

    # each tagger's scores are kept over the tags it shares with the run only (Camie has 70k outputs)
    shared = {t.name: shared_tags(names, t, aliases) for t in foreign}
    scorers: list[tuple[str, Callable, Callable]] = [("run", ours.prepare, ours.scores)]
    scorers += [(t.name, t.prepare, _columns(t.scores, shared[t.name][1])) for t in foreign]
    out = Path(out) if out else folder.path / "compare"
    cache = out / "scores"
    cache.mkdir(parents=True, exist_ok=True)
    models = {"run": folder.model_path, **{t.name: t.model_file for t in foreign}}
    scores: dict[str, dict[str, np.ndarray]] = {}
    ok = {"val": np.ones(len(val.keys), bool), "test": np.ones(len(test.keys), bool)}
    image_keys = {"val": fingerprint(val.sources), "test": fingerprint(test.sources)}  # each file statted once
    for (who, prep, pred), cols in zip(scorers, [None, *(shared[t.name][1] for t in foreign)]):
        scores[who] = {}
        for split, images in (("val", val), ("test", test)):
            z = cached_arrays(cache / f"{_file_name(who)}-{split}.npz", _key(models[who], image_keys[split], cols),
                              lambda images=images, prep=prep, pred=pred, who=who, split=split: dict(zip(
                                  ("scores", "ok"), score_images(images, prep, pred, batch_size, desc=f"{who} {split}"))))
            scores[who][split] = z["scores"]
            ok[split] &= z["ok"]
    skipped = list(test.skipped)
    for split, images in (("val", val), ("test", test)):
        if not ok[split].all():
            skipped += [{"split": split, **r} for r in _skips(images, ok[split], "a tagger")]
    y_val, y = val.y[ok["val"]], test.y[ok["test"]]
    for who in scores:
        scores[who] = {sp: scores[who][sp][ok[sp]] for sp in ("val", "test")}

    result: dict[str, Any] = {
        "run": str(folder.path), "images": {"test": int(len(y)), "val": int(len(y_val)), "test_from": test.label,
                                            "truth": truth, "skipped": skipped},
        "thresholds": thresholds_note, "policies": [p.key for p in policies.table()],
        "reported_policy": policies.get(policies.DEFAULT_TAGGING).key, "run_tags": len(names),
        "note": ("every tagger, the run included, reads the original image files and prepares them as its own "
                 "clients do; F1 over the tags each tagger shares with the run (its `shared_tags`); minus_run: "
                 "the tagger's F1 minus the run's on the same images and tags, [difference, low, high] of a paired "
                 "95% bootstrap"),
        "caption_tags_outside_the_run": unknown,
        "run_all_tags": _public(_scored(y_val, scores["run"]["val"], y, scores["run"]["test"], None, n_boot,
                                        ours.own)),
        "taggers": [],
    }
    cats = np.array(ours.categories)
    for t in foreign:
        cols = shared[t.name][0]
        entry: dict[str, Any] = {"name": t.name, "path": str(t.path), "layout": t.layout, "input_size": t.size,
                                 "shared_tags": len(cols), "of_run_tags": len(names),
                                 "shared_by_category": {str(k): int(v) for k, v in pd.Series(cats[cols]).value_counts().items()},
                                 "run_tags_unknown_to_it": [names[j] for j in range(len(names)) if j not in set(cols)][:50]}
        if not cols:
            entry["note"] = "it knows none of the run's tags: nothing to compare"
            result["taggers"].append(entry)
            continue
        yv, yt = y_val[:, cols], y[:, cols]
        run_s = _scored(yv, scores["run"]["val"][:, cols], yt, scores["run"]["test"][:, cols], None, n_boot,
                        ours.own_for(cols))
        tag_own = t.own_for(shared[t.name][1]) if isinstance(t, RunTagger) else None
        tag_s = _scored(yv, scores[t.name]["val"], yt, scores[t.name]["test"], run_s["_pred"], n_boot, tag_own)
        entry["run"], entry["tagger"] = _public(run_s), _public(tag_s)
        key = result["reported_policy"]
        entry["by_category"] = {}
        for c in sorted(set(cats[cols])):
            m = cats[cols] == c
            entry["by_category"][str(c)] = {
                "tags": int(m.sum()),
                "run": f1_at(yt[:, m], run_s["_pred"][key][:, m], 0.5),
                "tagger": f1_at(yt[:, m], tag_s["_pred"][key][:, m], 0.5),
                "minus_run": paired_bootstrap_diff(yt[:, m], run_s["_pred"][key][:, m], tag_s["_pred"][key][:, m],
                                                   n_boot=n_boot)}
        if t.published is not None:
            th = t.published[shared[t.name][1]]
            missing = np.isnan(th)
            pred = scores[t.name]["test"] >= np.where(missing, 0.5, th)
            entry["published"] = {"source": t.published_source, **f1_at(yt, pred, 0.5),
                                  "tags_without_one_at_0.5": int(missing.sum()),
                                  "minus_run": paired_bootstrap_diff(yt, run_s["_pred"][key], pred, n_boot=n_boot),
                                  "minus_run_policy": key}
        result["taggers"].append(entry)
    write_json_atomic(out / RESULT, result)
    write_csv_atomic(out / TABLE, compare_table(result))
    return result


def _key(model: Path, images: str, cols: list[int] | None) -> str:
    """What a tagger's saved scores depend on: its model file, the images (`fingerprint`
    of every image file in order: path, size, modification time), the columns kept."""
    return hashlib.sha1(f"{fingerprint([model])}|{cols}|{images}".encode()).hexdigest()


def _file_name(who: str) -> str:
    """A file name for a tagger's saved scores, whatever its name holds (`owner/repo`, `../`,
    spaces): the name's safe characters and a hash of the whole name, so two names never meet."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", who).strip("._-")[:60] or "tagger"
    return f"{safe}-{hashlib.sha1(who.encode()).hexdigest()[:8]}"


def _columns(predict: Callable[[np.ndarray], np.ndarray], cols: list[int]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: predict(x)[:, cols]


def _public(scored: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scored.items() if k != "_pred"}


def compare_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per tagger and policy (and its published thresholds): the shared tags, the
    run's and the tagger's F1 on them, and the paired difference with its interval."""
    rows = []
    for t in result["taggers"]:
        if "tagger" not in t:
            rows.append({"tagger": t["name"], "policy": "", "shared tags": f"0 of {t['of_run_tags']}"})
            continue
        for key in result["policies"]:
            r, m = t["run"][key], t["tagger"][key]
            d = m["minus_run"]
            rows.append({
                "tagger": t["name"], "policy": key, "shared tags": f"{t['shared_tags']} of {t['of_run_tags']}",
                "run F1-micro": round(r["f1_micro"], 4), "run F1-macro": round(r["f1_macro"], 4),
                "tagger F1-micro": round(m["f1_micro"], 4), "tagger F1-macro": round(m["f1_macro"], 4),
                "ΔF1-micro (95% CI)": _ci(d["f1_micro"]), "ΔF1-macro (95% CI)": _ci(d["f1_macro"])})
        if "published" in t:
            p = t["published"]
            rows.append({
                "tagger": t["name"], "policy": "its published thresholds",
                "shared tags": f"{t['shared_tags']} of {t['of_run_tags']}",
                "run F1-micro": round(t["run"][p["minus_run_policy"]]["f1_micro"], 4),
                "run F1-macro": round(t["run"][p["minus_run_policy"]]["f1_macro"], 4),
                "tagger F1-micro": round(p["f1_micro"], 4), "tagger F1-macro": round(p["f1_macro"], 4),
                "ΔF1-micro (95% CI)": _ci(p["minus_run"]["f1_micro"]),
                "ΔF1-macro (95% CI)": _ci(p["minus_run"]["f1_macro"])})
    return pd.DataFrame(rows)


def _ci(d: list[float]) -> str:
    return f"{d[0]:+.4f} ({d[1]:+.4f} to {d[2]:+.4f})"


def stand_in_taggers(run: str | os.PathLike, out: str | os.PathLike) -> list[str]:
    """Two taggers in the WD layout made from `run`, for a demonstration where nothing can
    be downloaded (the built-in sample): its export taking 448 px as WD v3 does (resized in
    the graph), and that export cut to its general tags in reverse order, written with
    spaces (another vocabulary and order). Specs for `compare`."""
    from animetag.tagging.export import export_run

    out = Path(out)
    wd = out / "export-448"
    export_run(run, wd, input_size=448, overwrite=True)
    tags = pd.read_csv(wd / "selected_tags.csv", keep_default_na=False)
    general = tags.loc[tags["category"] == 0, "name"].tolist()[::-1]
    cut = cut_tagger(wd, out / "general-only", [n.replace("_", " ") for n in general])
    return [f"export-448={wd}", f"general-only={cut}"]
