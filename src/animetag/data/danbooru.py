"""Read Danbooru metadata in its public shapes into one normalised, streaming-built table.

Shapes read by the same loader:
- API post records as a JSON array or JSON lines (the Danbooru2021/2023 dumps), with
  `tag_string_general`, `tag_string_character`, ... fields;
- the older Danbooru2017-2020 dump shape, `"tags": [{"id", "name", "category"}]`, numbers
  as strings;
- CSV and Parquet tables with the API columns (Hugging Face mirrors), `md5` and `file_ext`
  also nested in a `media_asset` struct (p1atdev/danbooru-2024), or one list-valued column
  per category, `general`, `character`, ... (isek-ai/danbooru-tags-2024).
Files may be gzip-compressed. Records are read one at a time and only the kept columns are
stored, so memory grows with the posts and columns kept, never with the file. Given the
images that are here (`present.ImageIndex`), only the records with an image are kept:
Parquet batches are filtered in Arrow, JSON lines without a present id or md5 are not even
parsed.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from animetag.config import CATEGORIES, CATEGORY_NAMES
from animetag.folders import read_csv
from animetag.registry import READERS

if TYPE_CHECKING:
    from animetag.data.image_index import ImageIndex

MAX_ID = 2**63 - 1  # ids are stored as int64
COLUMNS = ("id", "md5", "file_ext", "rating", "image_width", "image_height", "is_deleted", "parent_id")


class MalformedRecord(ValueError):
    """A record that cannot be read; the message says why."""


@dataclass
class LoadReport:
    """What the loader read and what it could not read (with file and line)."""

    records: int = 0
    malformed: list[dict[str, Any]] = field(default_factory=list)
    uncategorised: int = 0  # records with only a flat `tag_string` (no categories)
    comma_separated: int = 0  # records whose tag strings were comma-separated lists
    truncated: bool = False  # a compressed file broke off
    absent: int = 0  # records whose image is not here (when the images present were given)
    absent_examples: list[int] = field(default_factory=list)  # the first few of their ids

    def add_absent(self, n: int, ids: Iterable[int | None] = ()) -> None:
        self.absent += n
        room = 20 - len(self.absent_examples)
        if room > 0:
            self.absent_examples += [int(i) for i in ids if i is not None][:room]

    def add_malformed(self, source: str, line: int, reason: str) -> None:
        self.malformed.append({"source": source, "line": line, "reason": reason})


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _format_of(path: Path) -> str:
    """The registered reader for a file: by its suffix (`suffixes` at registration), else
    by its first character (`starts_with`), else JSON lines."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    entries = READERS.entries()
    for e in entries:
        if ext in e.extra.get("suffixes", ()):
            return e.name
    head = _peek(path)
    first = head.lstrip()[:1]
    if first == "{":
        _refuse_single_object(path, head)
    for e in entries:
        if first and first in e.extra.get("starts_with", ()):
            return e.name
    return "jsonl"


def _peek(path: Path, size: int = 1 << 16) -> str:
    """The first `size` bytes as text, as far as a truncated compressed file allows."""
    data = b""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        try:
            while len(data) < size:
                block = f.read(4096)
                if not block:
                    break
                data += block
        except (EOFError, zlib.error, gzip.BadGzipFile):
            pass
    return data.decode("utf-8", errors="replace")


def _refuse_single_object(path: Path, head: str) -> None:
    """A file that holds one JSON object (another site's API response, an error message) is
    not a post list: say so once, with its keys, instead of one error per line."""
    line = head.lstrip().split("\n", 1)[0]
    try:
        obj = json.loads(line)  # JSON lines: the first line is a whole record
    except json.JSONDecodeError:
        obj = None
        if path.stat().st_size > 256 << 20:
            return  # too large to read whole just to name it; read as JSON lines
        try:
            with _open_text(path) as f:
                obj = json.load(f)
        except (json.JSONDecodeError, MemoryError, EOFError, OSError, zlib.error):
            return  # not one object either: JSON lines with a broken first line
    if not isinstance(obj, dict) or "id" in obj:
        return
    keys = list(obj)[:8]
    lists = [k for k, v in obj.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
    hint = f"; the records may be under {lists[0]!r}: save that list as a JSON array" if lists else ""
    raise ValueError(f"{path}: not a list of Danbooru posts but one JSON object with the keys {keys}{hint}")


def iter_raw_records(path: str | os.PathLike, report: LoadReport | None = None,
                     columns: Iterable[str] | None = None,
                     present: ImageIndex | None = None) -> Iterator[tuple[int, Any]]:
    """Yield (line number, raw record) from any supported file; malformed ones go to report.
    A compressed file that breaks off keeps the records before the break, and the break is
    reported as a malformed record at its line. With `present`, JSON lines and Parquet rows
    that cannot have an image here are skipped before they are parsed (and counted in
    `report.absent`); the caller checks the rest with `present.has`."""
    path = Path(path)
    report = report if report is not None else LoadReport()
    it = READERS.get(_format_of(path))(path, report, columns, present)
    line = 0
    try:
        for line, rec in it:
            yield line, rec
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        report.add_malformed(str(path), line + 1, f"the compressed file is truncated or corrupt after line {line} "
                                                  f"({e}); the records before it are kept")
        report.truncated = True


# -- the registered readers: (line number, raw record) from one file of a format ------------
# Each takes (path, report, columns wanted or None, present images or None); a new format is
# one more function registered here or in a plug-in package.

@READERS.register("jsonl", starts_with="{")
def _iter_jsonl(path: Path, report: LoadReport, columns: Iterable[str] | None = None,
                present: ImageIndex | None = None) -> Iterator[tuple[int, Any]]:
    """JSON lines, one post per line (Danbooru's own dumps; nyanko7's posts.json)."""
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if present is not None:
                maybe, first_id = present.maybe_in_line(line)
                if not maybe:
                    report.add_absent(1, (first_id,))
                    continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                report.add_malformed(str(path), lineno, f"invalid JSON: {e.msg} (column {e.colno})")


@READERS.register("json_array", starts_with="[")
def _iter_json_array(path: Path, report: LoadReport, columns: Iterable[str] | None = None,
                     present: ImageIndex | None = None, chunk: int = 1 << 20) -> Iterator[tuple[int, Any]]:
    """Stream the elements of a top-level JSON array without reading the whole file."""
    dec = json.JSONDecoder()
    with _open_text(path) as f:
        buf = f.read(chunk)
        pos = buf.index("[") + 1
        line = 1 + buf.count("\n", 0, pos)
        eof = False
        while True:
            # skip whitespace and separators, counting lines
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    if buf[pos] == "\n":
                        line += 1
                    pos += 1
                if pos < len(buf) or eof:
                    break
                buf, pos = f.read(chunk), 0
                eof = not buf
            if pos >= len(buf) or buf[pos] == "]":
                return
            try:
                obj, end = dec.raw_decode(buf, pos)
            except json.JSONDecodeError as e:
                end = _element_end(buf, pos)
                if end < 0 and not eof:  # the element goes on in the next chunk
                    more = f.read(chunk)
                    if more:
                        buf = buf[pos:] + more
                        pos = 0
                        continue
                    eof = True
                    continue
                # a broken element: report it once and go on after it
                report.add_malformed(str(path), line, f"invalid JSON: {e.msg}")
                if end < 0:
                    return
                line += buf.count("\n", pos, end)
                pos = end
                continue
            yield line, obj
            line += buf.count("\n", pos, end)
            pos = end


def _element_end(buf: str, pos: int) -> int:
    """Where the array element starting at `pos` ends: after its closing bracket for an object
    or array (strings and escapes respected), else at the next separator; -1 if not in `buf`."""
    if buf[pos] not in "{[":
        ends = [i for i in (buf.find(",", pos), buf.find("\n", pos), buf.find("]", pos)) if i >= 0]
        return min(ends) if ends else -1
    depth, in_str, esc = 0, False, False
    for i in range(pos, len(buf)):
        ch = buf[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


@READERS.register("csv", suffixes=(".csv",))
def _iter_csv(path: Path, report: LoadReport, columns: Iterable[str] | None = None,
              present: ImageIndex | None = None) -> Iterator[tuple[int, Any]]:
    """CSV with a header row (Kaggle's exports)."""
    csv.field_size_limit(1 << 26)
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        _require_columns(path, reader.fieldnames or [])
        for row in reader:
            yield reader.line_num, row


@READERS.register("parquet", suffixes=(".parquet", ".pq"))
def _iter_parquet(path: Path, report: LoadReport, columns: Iterable[str] | None = None,
                  present: ImageIndex | None = None) -> Iterator[tuple[int, Any]]:
    """Rows of the wanted columns, a batch at a time; with `present`, each batch is filtered
    in Arrow first, so only the rows with an image here become Python objects."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering held whole row groups: twice the memory
    except Exception as e:  # ArrowInvalid, OSError: a cut-off download, another format named .parquet
        raise ValueError(f"{path}: not a readable Parquet file ({type(e).__name__}: {str(e)[:200]}); download it "
                         "again") from None
    names = set(pf.schema_arrow.names)
    _require_columns(path, pf.schema_arrow.names)
    cols = [c for c in columns if c in names] if columns else None
    if cols and "media_asset" in cols and {"md5", "file_ext"} <= names:
        cols.remove("media_asset")  # a large struct, read only where the flat columns are missing
    if cols and any(c.startswith("tag_string_") for c in cols):
        cols = [c for c in cols if c not in ("tag_string", "tags")]  # the flat string repeats them
    row = 0
    for batch in pf.iter_batches(batch_size=65536, columns=cols):
        rows = np.arange(row + 1, row + 1 + batch.num_rows)
        row += batch.num_rows
        mask = present.arrow_mask(batch) if present is not None else None
        if mask is not None:
            keep = mask.to_numpy(zero_copy_only=False)
            n_absent = int((~keep).sum())
            if n_absent:
                report.add_absent(n_absent, pc.filter(batch.column("id"), pc.invert(mask))[:20].to_pylist())
                batch, rows = batch.filter(mask), rows[keep]
        yield from zip(rows.tolist(), batch.to_pylist())


def _require_columns(path: Path, columns: Iterable[str], required: Iterable[str] = ()) -> None:
    """A table of posts needs an `id` column and a column of tags (a tag string, per-category
    tag strings or lists, or the old dumps' `tags`), and where it has per-category tags, those
    of each `required` category: without them every row would be left out or kept without
    those tags, so the file is refused naming what it has."""
    have = [str(c).strip() for c in columns]
    tag_columns = {"tag_string", "tags", *(f"tag_string_{c}" for c in CATEGORIES), *CATEGORIES}
    missing = [m for m, ok in (("id", "id" in have), ("a tag column (tag_string, tag_string_general, ...)",
                                                     bool(tag_columns & set(have)))) if not ok]
    if not missing and not {"tag_string", "tags"} & set(have):  # per category only: each one asked for
        missing = [f"tag_string_{c}" for c in required if f"tag_string_{c}" not in have and c not in have]
    if missing:
        shown = ", ".join(have[:20]) + (f" and {len(have) - 20} more" if len(have) > 20 else "")
        raise ValueError(f"{path}: no {' and no '.join(missing)} among its columns ({shown or 'none'})")


def _table_columns(path: Path) -> list[str] | None:
    """The column names of a CSV or Parquet file (None for other formats)."""
    fmt = _format_of(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as e:
            raise ValueError(f"{path}: not a readable Parquet file ({type(e).__name__}: {str(e)[:200]}); download "
                             "it again") from None
    if fmt == "csv":
        with _open_text(path) as f:
            return next(csv.reader(f), [])
    return None


# -- normalisation ---------------------------------------------------------------------

def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def to_int(v: Any, default: int | None = None) -> int | None:
    """An integer from an int, a float (`4099990.0`) or a string; `default` when empty."""
    if _blank(v):
        return default
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise MalformedRecord(f"not a number: {v!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise MalformedRecord(f"not an integer: {v!r}")
    return int(f)


def to_bool(v: Any) -> bool:
    if _blank(v):
        return False
    if isinstance(v, str):
        return v.strip().lower() in ("true", "t", "1", "yes")
    return bool(v)


def _tag_str(v: Any) -> str:
    """Tags as one space-separated string. In a list each element is one tag, so a space
    inside it is Danbooru's underscore (`long hair` -> `long_hair`). A string with `", "` in
    it is a comma-separated list as some exports write them (`1girl, solo, long hair`): no
    Danbooru tag holds a comma followed by a space."""
    if _blank(v):
        return ""
    if isinstance(v, str) and ", " in v:
        v = v.split(",")
    if isinstance(v, (list, tuple, np.ndarray)):
        return " ".join("_".join(str(t).split()) for t in v if not _blank(t) and str(t).strip())
    return " ".join(str(v).split())


RATING_WORDS = {"general": "g", "sensitive": "s", "questionable": "q", "explicit": "e",
                "safe": "g"}  # Danbooru's word before 2022; read as today's general, as a legacy `s` is


def _rating(v: Any) -> str:
    """A rating letter g/s/q/e from a letter or Danbooru's word for it; '' when blank; any
    other value as given (lowercased), so that the subset counts it as unknown."""
    if _blank(v):
        return ""
    r = str(v).strip().lower()
    return RATING_WORDS.get(r, r)


def _parent(v: Any) -> int:
    """A post's `parent_id` (the original it is a variant of), 0 for none or an unreadable one:
    an optional field never costs a post."""
    try:
        pid = to_int(v, 0) or 0
    except MalformedRecord:
        return 0
    return pid if 0 < pid <= MAX_ID else 0


def _field(rec: dict[str, Any], name: str) -> Any:
    """A record's field, or the same field of its `media_asset` (where some mirrors keep
    `md5`, `file_ext` and the image size)."""
    v = rec.get(name)
    if _blank(v) and isinstance(rec.get("media_asset"), dict):
        return rec["media_asset"].get(name)
    return v


def read_tag_table(path: str | os.PathLike) -> dict[str, int]:
    """Tag name -> Danbooru category id from a CSV: the WD taggers' `selected_tags.csv`
    (`tag_id,name,category,count`; its rating rows, category 9, are left out), any table
    with `name` and `category` columns, or a headerless `name,category[,...]` list such as
    the Danbooru tag lists that autocomplete tools ship."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tag table not found: {path}")
    head = read_csv(path, nrows=0)
    cols = [str(c).strip().lower() for c in head.columns]
    if "name" in cols and "category" in cols:
        t = read_csv(path, keep_default_na=False, dtype=str)
        t.columns = cols
        t = t[["name", "category"]]
    else:
        t = read_csv(path, header=None, usecols=[0, 1], names=["name", "category"], keep_default_na=False,
                        dtype=str)
    out = {}
    for name, cat in zip(t["name"], t["category"]):
        c = to_int(cat)
        if c is None:
            raise ValueError(f"{path}: the category of {name!r} is {cat!r}, not a Danbooru category id")
        if c in CATEGORY_NAMES:
            out[str(name).strip()] = c
    if not out:
        raise ValueError(f"{path}: no tags with a Danbooru category (0, 1, 3, 4, 5) found")
    return out


def normalise(rec: Any, keep: tuple[str, ...] = CATEGORIES, tag_table: dict[str, int] | None = None) -> dict[str, Any]:
    """One raw record of any shape as {id, md5, file_ext, rating, ..., tags_<category>}.

    A flat tag string (no categories: Danbooru's v1 API, Moebooru) is split by `tag_table`
    where given (tags it lacks count as general); without one its tags all count as general,
    and the record is marked `_uncategorised`."""
    if not isinstance(rec, dict):
        raise MalformedRecord(f"a record must be an object, not {type(rec).__name__}")
    raw_id = rec.get("id")
    if isinstance(raw_id, bool):
        raise MalformedRecord(f"the id is a boolean ({raw_id!r}), not a post id")
    pid = to_int(raw_id)
    if pid is None:
        raise MalformedRecord("no id")
    if not 0 < pid <= MAX_ID:
        raise MalformedRecord(f"the id {raw_id!r} is not a positive integer within int64")
    md5, ext = _field(rec, "md5"), _field(rec, "file_ext")
    out: dict[str, Any] = {
        "id": pid,
        "md5": "" if _blank(md5) else str(md5).strip().lower(),
        "file_ext": "" if _blank(ext) else str(ext).strip().lower().lstrip("."),
        "rating": _rating(rec.get("rating")),
        "image_width": to_int(_field(rec, "image_width"), 0),
        "image_height": to_int(_field(rec, "image_height"), 0),
        "is_deleted": to_bool(rec.get("is_deleted")),
        "parent_id": _parent(rec.get("parent_id")),
        "file": "" if _blank(rec.get("file")) else str(rec["file"]),
    }
    tags = rec.get("tags")
    if isinstance(tags, list):  # Danbooru2017-2020 shape
        per: dict[str, list[str]] = {c: [] for c in CATEGORIES}
        for t in tags:
            if not isinstance(t, dict) or _blank(t.get("name")):
                raise MalformedRecord(f"bad tag entry {t!r}")
            cat = CATEGORY_NAMES.get(to_int(t.get("category"), 0))
            if cat is None:
                raise MalformedRecord(f"unknown tag category {t.get('category')!r}")
            per[cat].append("_".join(str(t["name"]).split()))  # one tag: `long hair` is long_hair
        for c in keep:
            out[f"tags_{c}"] = " ".join(per[c])
        out["_uncategorised"] = out["_comma_separated"] = False
        return out
    has_cat = any(f"tag_string_{c}" in rec for c in CATEGORIES)
    lists = not has_cat and any(isinstance(rec.get(c), (list, tuple, np.ndarray)) for c in CATEGORIES)
    for c in keep:  # tag_string_<category>, or a list per category (isek-ai/danbooru-tags-2024)
        out[f"tags_{c}"] = _tag_str(rec.get(c) if lists else rec.get(f"tag_string_{c}"))
    out["_uncategorised"] = False
    out["_comma_separated"] = any(isinstance(rec.get(k), str) and ", " in rec[k]
                                  for k in ("tag_string", *(f"tag_string_{c}" for c in CATEGORIES)))
    has_cat = has_cat or lists
    if not has_cat:
        flat = _tag_str(rec.get("tag_string") if "tag_string" in rec else tags)
        if flat and tag_table is not None:
            per = {c: [] for c in CATEGORIES}
            for t in flat.split():
                per[CATEGORY_NAMES[tag_table.get(t, 0)]].append(t)
            for c in keep:
                out[f"tags_{c}"] = " ".join(per[c])
        elif flat:
            out["_uncategorised"] = True
            if "general" in keep:
                out["tags_general"] = flat
    return out


def load_posts(paths: str | os.PathLike | Iterable[str | os.PathLike],
               categories: Iterable[str] = CATEGORIES,
               report: LoadReport | None = None,
               tag_table: dict[str, int] | None = None,
               present: ImageIndex | None = None,
               required: Iterable[str] = ()) -> tuple[pd.DataFrame, LoadReport]:
    """Read metadata files into one table with the tag columns of `categories`.

    `required`: categories a table (CSV, Parquet) with per-category tag columns must have a
    column for (a subset's label categories), else it is refused naming the column.

    Malformed records are skipped and listed in the report with file and line number.
    Flat tag strings are categorised with `tag_table` (see `read_tag_table`); without one,
    the report counts them (`uncategorised`) and `flat_tags_warning` says what that means.
    With `present` (the images that are here), a record whose image is not here is only
    counted (`report.absent`), never kept: the table holds the posts a subset can use.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    keep = tuple(categories)
    report = report if report is not None else LoadReport()
    import pyarrow as pa

    names = (*COLUMNS, "file", *(f"tags_{c}" for c in keep), "source", "line")
    types = {"id": pa.int64(), "image_width": pa.int64(), "image_height": pa.int64(), "is_deleted": pa.bool_(),
             "parent_id": pa.int64(),
             "source": pa.int32(), "line": pa.int64()}
    cols: dict[str, list[Any]] = {c: [] for c in names}
    batches: list[pa.RecordBatch] = []

    def flush() -> None:
        # lists of Python objects cost several times their text; arrow columns do not
        if cols["id"]:
            batches.append(pa.record_batch([pa.array(cols[c], type=types.get(c, pa.string())) for c in names],
                                           names=list(names)))
            for v in cols.values():
                v.clear()

    # the columns a table is read with: the kept categories' (a flat `tag_string` only where
    # a file has no `tag_string_<category>` column)
    wanted = [*COLUMNS, "file", "tag_string", "tags", "media_asset", *(f"tag_string_{c}" for c in keep), *keep]
    sources = [Path(p) for p in paths]
    for src_i, p in enumerate(sources):
        if not p.exists():
            raise FileNotFoundError(f"metadata file not found: {p}")
        header = _table_columns(p)
        if header is not None:
            _require_columns(p, header, tuple(required))
        for line, raw in iter_raw_records(p, report, wanted, present):
            try:
                rec = normalise(raw, keep, tag_table)
            except MalformedRecord as e:
                report.add_malformed(str(p), line, str(e))
                continue
            if present is not None and not present.has(rec["id"], rec["md5"], rec["file"]):
                report.add_absent(1, (rec["id"],))
                continue
            report.records += 1
            report.uncategorised += rec.pop("_uncategorised")
            report.comma_separated += rec.pop("_comma_separated")
            rec["source"], rec["line"] = src_i, line
            for k, lst in cols.items():
                lst.append(rec[k])
            if len(cols["id"]) >= 65536:
                flush()
    flush()
    schema = pa.schema([(c, types.get(c, pa.string())) for c in names])
    table = pa.Table.from_batches(batches, schema=schema)
    df = table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get, self_destruct=True)
    df["source"] = pd.Categorical.from_codes(df["source"].astype("int64"), [str(p) for p in sources])
    return df, report


def comma_tags_warning(report: LoadReport) -> str:
    """What comma-separated tag strings were read as ('' when there were none)."""
    if not report.comma_separated:
        return ""
    return (f"{report.comma_separated} of {report.records} records have comma-separated tag strings "
            "(`1girl, solo, long hair`, as some exports write them): each was read as a list of tags, with the "
            "spaces inside a tag read as underscores (long_hair)")


def flat_tags_warning(report: LoadReport) -> str:
    """What uncategorised records mean for a subset ('' when there are none)."""
    if not report.uncategorised:
        return ""
    return (f"{report.uncategorised} of {report.records} records have only a flat tag string (no tag categories, "
            "as Danbooru's v1 API and Moebooru give): their artist, copyright and character tags count as "
            "general tags. Give a tag table (--tag-table: the WD taggers' selected_tags.csv, or a name,category "
            "CSV) to categorise them")


def tag_list(s: str) -> list[str]:
    return s.split() if s else []

