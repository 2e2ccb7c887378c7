"""The published taggers, run as their own clients run them, so that `animetag compare` can
score them beside a run on the same images.

Two layouts are read:

- **WD** (SmilingWolf's WD taggers v2/v3, animetag's own export): a
  folder with `model.onnx` and `selected_tags.csv` (`name`, `category`: 9 rating, 0
  general, 4 character). Input NHWC float32, its size read from the ONNX input, channel
  order BGR, values 0-255: each image on a white square, resized with Pillow's bicubic
  filter. The outputs are probabilities, one per row of the CSV. Published thresholds: a
  `threshold` or `best_threshold` column where the CSV has one, else the WD app's defaults
  (general 0.35, character 0.85).
- **Camie v2** (`camie-tagger-v2.onnx` + `camie-tagger-v2-metadata.json`): input NCHW, the
  size from `model_info.img_size` (512), RGB; the image resized with its aspect kept (the
  long side to the size, Lanczos), centred on a square of (124, 116, 104), scaled to 0-1 and
  normalised with the ImageNet mean and deviation. Outputs are logits, the refined ones
  second (the first output when there is one); tag names and categories from
  `dataset_info.tag_mapping` (`idx_to_tag`, `tag_to_category`). Taken from its model card's
  inference code as third-party clients reproduce it; not checked against the real file here.

A tagger is a folder, or on Colab a Hugging Face repository id (`owner/name`, fetched with
huggingface_hub: only its .onnx, .csv and .json files). A timm-style export (animetimm's:
`model.onnx` + `selected_tags.csv` + `preprocess.json`, fed normalised NCHW) is refused with
that said: its preprocessing is not reproduced here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from animetag.data.images import open_rgb, open_rgb_square
from animetag.data.mirror import reach_hub
from animetag.folders import read_csv

WD_DEFAULTS = {"general": 0.35, "character": 0.85}  # SmilingWolf's app's sliders
CATEGORY_NAMES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta", 9: "rating", 10: "year"}
CAMIE_PAD = (124, 116, 104)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def canonical(name: str, aliases: dict[str, str] | None = None) -> str:
    """A tag name as both sides are matched: lower case, underscores for spaces, then its
    alias's target where a tag table gives one (`long hair` and `Long_Hair` are one tag)."""
    n = "_".join(str(name).strip().lower().split())
    return (aliases or {}).get(n, n)


def read_aliases(path: str | os.PathLike) -> dict[str, str]:
    """Tag aliases from a CSV: Danbooru's `antecedent_name,consequent_name` (its tag_aliases
    export), or any two columns old name, current name."""
    df = read_csv(path, dtype=str, keep_default_na=False)
    cols = (["antecedent_name", "consequent_name"] if {"antecedent_name", "consequent_name"} <= set(df.columns)
            else list(df.columns[:2]))
    if len(cols) < 2:
        raise ValueError(f"{path}: an alias table needs two columns (antecedent_name, consequent_name)")
    if "status" in df.columns:
        df = df[df["status"].isin(["active", ""])]
    return {canonical(a): canonical(b) for a, b in zip(df[cols[0]], df[cols[1]]) if a and b}


@dataclass
class ForeignTagger:
    """One published tagger: its outputs' tag names and categories, and how it is fed."""

    name: str
    path: Path
    layout: str  # "wd" or "camie"
    names: list[str]  # every output's tag name, as the tagger writes it
    categories: list[str]  # every output's category name ("rating" for the rating rows)
    size: int
    published: np.ndarray | None = None  # one threshold per output, where it ships them
    published_source: str = ""
    model_file: Path | None = None
    _session: Any = field(default=None, repr=False)
    tags_file: Path | None = None  # the file its names were read from

    @property
    def session(self):
        if self._session is None:
            self._session = _session(self.model_file)
        return self._session

    def prepare(self, src: str | os.PathLike | bytes) -> np.ndarray:
        """One image as this tagger's clients prepare it (raises images.ImageError)."""
        if self.layout == "wd":
            return np.asarray(open_rgb_square(src, self.size), dtype=np.float32)[..., ::-1]  # BGR
        im = open_rgb(src)
        w, h = im.size
        if w >= h:
            nw, nh = self.size, max(1, int(self.size * h / w))
        else:
            nw, nh = max(1, int(self.size * w / h)), self.size
        canvas = Image.new("RGB", (self.size, self.size), CAMIE_PAD)
        canvas.paste(im.resize((nw, nh), Image.Resampling.LANCZOS), ((self.size - nw) // 2, (self.size - nh) // 2))
        x = (np.asarray(canvas, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return x.transpose(2, 0, 1)

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (n_images x n_outputs) of a prepared batch."""
        sess = self.session
        feed = {sess.get_inputs()[0].name: batch.astype(np.float32)}
        fixed = sess.get_inputs()[0].shape[0]
        if isinstance(fixed, int) and fixed != len(batch):  # a model exported for one image at a time
            return np.concatenate([self.scores(batch[i: i + 1]) for i in range(len(batch))])
        try:
            outs = sess.run(None, feed)
        except Exception as e:  # ONNX Runtime's own errors name neither the file nor the cause plainly
            raise ValueError(f"{self.model_file}: ONNX Runtime failed on a batch of shape {batch.shape} "
                             f"({type(e).__name__}: {str(e)[:300]})") from None
        out = outs[0] if self.layout == "wd" or len(outs) == 1 else outs[1]
        if np.ndim(out) != 2 or np.shape(out)[1] != len(self.names):
            raise ValueError(f"{self.model_file}: {np.shape(out)[-1] if np.ndim(out) else 0} outputs, but its tag list "
                             f"({self.tags_file}) names {len(self.names)}: the names would shift onto other "
                             "outputs; use the tag list made with this model")
        if self.layout == "wd":
            return np.asarray(out, np.float32)
        logits = np.asarray(out, np.float64)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def _session(model_file: Path):
    """An ONNX Runtime session: on a GPU where onnxruntime-gpu has one (`pip install
    onnxruntime-gpu` on a Colab GPU runtime), else on the CPU. Opened once per tagger."""
    import onnxruntime as ort

    wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        return ort.InferenceSession(str(model_file), providers=wanted)
    except Exception as e:  # a cut-off download, an HTML error page saved as .onnx, another format
        raise ValueError(f"{model_file}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e)[:300]}); "
                         "download it again") from None


def _declared_outputs(sess, index: int = 0) -> int | None:
    """The width of a session's output `index` where the model fixes it, else None."""
    outs = sess.get_outputs()
    if index >= len(outs):
        index = 0
    shape = outs[index].shape
    return shape[-1] if shape and isinstance(shape[-1], int) else None


def check_tag_list(file: Path, names: list[str], categories: list[str], n_outputs: int | None,
                   thresholds: np.ndarray | None = None, model: Path | None = None) -> None:
    """Refuse a tag list that does not name the model's outputs one for one: another count,
    a name twice (one would silently take the other's scores) or an empty name."""
    if n_outputs is not None and n_outputs != len(names):
        raise ValueError(f"{file}: {len(names)} tags, but {model or 'its model'} has {n_outputs} outputs: the names "
                         "would shift onto other outputs; use the tag list made with this model")
    if not names:
        raise ValueError(f"{file}: no tags (a header without rows?)")
    empty = [i for i, n in enumerate(names) if not canonical(n)]
    if empty:
        raise ValueError(f"{file}: {len(empty)} tags without a name (rows {_rows(empty)})")
    seen: dict[str, int] = {}
    twice = []
    for i, (n, c) in enumerate(zip(names, categories)):
        key = (canonical(n), c == "rating")
        if key in seen:
            twice.append(f"{n!r} (rows {seen[key] + 1} and {i + 1})")
        seen.setdefault(key, i)
    if twice:
        raise ValueError(f"{file}: {len(twice)} tag names appear twice, so their scores cannot be told apart: "
                         + ", ".join(twice[:5]))
    if thresholds is not None:
        bad = [i for i, t in enumerate(thresholds) if not np.isnan(t) and not 0.0 <= t <= 1.0]
        if bad:
            raise ValueError(f"{file}: thresholds outside 0-1 at rows {_rows(bad)}")


def _rows(idx: list[int]) -> str:
    shown = ", ".join(str(i + 1) for i in idx[:5])
    return shown + (f" and {len(idx) - 5} more" if len(idx) > 5 else "")


def _read_wd(folder: Path, name: str) -> ForeignTagger:
    model, csv = folder / "model.onnx", folder / "selected_tags.csv"
    tags = read_csv(csv, keep_default_na=False, dtype=str)
    missing = [c for c in ("name", "category") if c not in tags.columns]
    if missing:
        raise ValueError(f"{csv}: no {missing} column (the WD layout has name, category)")
    cat_ids = pd.to_numeric(tags["category"].str.strip(), errors="coerce")
    bad = [i for i, c in enumerate(cat_ids) if pd.isna(c) or c != int(c)]
    if bad:
        raise ValueError(f"{csv}: category is not a whole number at data rows {_rows(bad)} "
                         f"(first: {tags['category'].iloc[bad[0]]!r}); WD categories are 9 rating, 0 general, 4 character")
    cats = [CATEGORY_NAMES.get(int(c), str(int(c))) for c in cat_ids]
    column = next((c for c in ("threshold", "best_threshold") if c in tags.columns), None)
    if column:
        raw = tags[column].str.strip()
        published = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
        bad = [i for i, (r, v) in enumerate(zip(raw, published)) if r and np.isnan(v)]
        if bad:
            raise ValueError(f"{csv}: {column} is not a number at data rows {_rows(bad)} (first: {raw.iloc[bad[0]]!r})")
        source = f"selected_tags.csv's {column} column"
    else:
        published = np.array([WD_DEFAULTS.get(c, np.nan) for c in cats])
        source = "the WD app's defaults (general 0.35, character 0.85)"
    names = tags["name"].astype(str).tolist()
    sess = _session(model)
    check_tag_list(csv, names, cats, _declared_outputs(sess), published if column else None, model)
    shape = sess.get_inputs()[0].shape
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{model}: input shape {shape} is not the WD layout's [batch, size, size, 3]")
    size = shape[1] if isinstance(shape[1], int) else None
    if size is None:
        raise ValueError(f"{model}: its input size is not fixed in the model; the WD layout fixes it (448)")
    return ForeignTagger(name, folder, "wd", names, cats, size, published, source, model, sess, csv)


def _read_camie(folder: Path, meta_file: Path, name: str) -> ForeignTagger:
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_file}: not readable JSON ({type(e).__name__}: {str(e)[:200]})") from None
    try:
        mapping = meta["dataset_info"]["tag_mapping"]
        idx_to_tag, tag_to_cat = mapping["idx_to_tag"], mapping.get("tag_to_category", {})
        names = [str(idx_to_tag[str(i)]) for i in range(len(idx_to_tag))]
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"{meta_file}: no dataset_info.tag_mapping.idx_to_tag numbered 0 to N-1 "
                         "(Camie v2's metadata)") from None
    cats = [str(tag_to_cat.get(n, "general")) for n in names]
    models = sorted(folder.glob("*.onnx"))
    if not models:
        raise FileNotFoundError(f"{folder}: Camie metadata but no .onnx model beside it")
    sess = _session(models[0])
    check_tag_list(meta_file, names, cats, _declared_outputs(sess, 1), None, models[0])
    side = sess.get_inputs()[0].shape[2]
    size = int(meta.get("model_info", {}).get("img_size") or (side if isinstance(side, int) else 512))
    return ForeignTagger(name, folder, "camie", names, cats, size, None, "", models[0], sess, meta_file)


def load_tagger(spec: str, cache_dir: str | os.PathLike | None = None) -> ForeignTagger:
    """A tagger from `spec`: `[NAME=]FOLDER` or `[NAME=]OWNER/REPO` (a Hugging Face
    repository, downloaded; needs huggingface_hub and a network). The layout is read from
    the files: WD (`model.onnx` + `selected_tags.csv`) or Camie v2 (`*-metadata.json`)."""
    name, _, where = spec.rpartition("=") if "=" in spec else ("", "", spec)
    folder = Path(where).expanduser()
    if not folder.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", where):
        from huggingface_hub import snapshot_download

        reach_hub()  # offline: said at once, not after the Hub client's retries
        folder = Path(snapshot_download(where, allow_patterns=["*.onnx", "*.csv", "*.json"], cache_dir=cache_dir))
    if not folder.is_dir():
        raise FileNotFoundError(f"tagger {spec!r}: no folder {folder} (and not a Hugging Face repository id)")
    name = name or (where if not Path(where).exists() else folder.name)
    if (folder / "model.onnx").is_file() and (folder / "selected_tags.csv").is_file():
        if (folder / "preprocess.json").is_file():
            raise ValueError(f"tagger {spec!r}: {folder} has a preprocess.json beside model.onnx: a timm-style export "
                             "(as animetimm's), fed normalised NCHW images as that file says, not the WD layout; "
                             "animetag does not reproduce that preprocessing yet")
        return _read_wd(folder, name)
    metas = [p for p in folder.glob("*.json") if p.name.endswith("metadata.json")]
    if metas:
        return _read_camie(folder, metas[0], name)
    raise ValueError(f"tagger {spec!r}: {folder} holds neither model.onnx + selected_tags.csv (the WD layout) "
                     "nor a Camie *-metadata.json with its .onnx")


def cut_tagger(src: str | os.PathLike, out: str | os.PathLike, keep: list[str]) -> Path:
    """A WD-layout tagger cut down to the tags `keep` (by name, in that order): its ONNX
    scores gathered to those rows, and a selected_tags.csv naming them. A smaller, faster
    tagger for the tags one cares about; animetag's demo makes a stand-in for a foreign
    tagger with another vocabulary this way. Needs the `onnx` package."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src, out = Path(src), Path(out)
    tags = pd.read_csv(src / "selected_tags.csv", keep_default_na=False)
    row = {canonical(n): i for i, n in enumerate(tags["name"])}
    missing = [n for n in keep if canonical(n) not in row]
    if missing:
        raise ValueError(f"{src}: no {missing[:5]} among its tags")
    rows = [row[canonical(n)] for n in keep]
    m = onnx.load(str(src / "model.onnx"))
    g = m.graph
    first = g.output[0].name
    g.initializer.append(numpy_helper.from_array(np.array(rows, np.int64), "kept_rows"))
    g.node.append(helper.make_node("Gather", [first, "kept_rows"], ["kept_scores"], axis=1))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("kept_scores", TensorProto.FLOAT, None))
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(out / "model.onnx"))
    kept = tags.iloc[rows].reset_index(drop=True)
    kept["name"] = list(keep)
    kept.to_csv(out / "selected_tags.csv", index=False)
    return out
