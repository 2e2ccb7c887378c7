"""Which posts have an image here, learnt once before any metadata is read.

A public mirror describes all of Danbooru (~8M posts) and ships its images in 1,000
archives; a user has downloaded a few. So the images root is looked at first: every folder
below it listed once (never a `stat` per post and candidate path), every `.tar` archive's
headers read once. The metadata loader then keeps only the records whose image is here
(`ImageIndex.has`, or `arrow_mask` on a whole Parquet batch, or `maybe_in_line` on a JSON
line before it is parsed), and the subset draws its random selection from those.

An image is found by its post id (a file or member named `ID.ext`, anywhere below the
root: Danbooru20xx's `512px/NNNN/ID.jpg` and `original/NNNN/ID.ext`, a flat folder, a
mirror's archives), by its md5 (`MD5.ext`, the DeepDanbooru layout) or by the metadata's
`file` column (a path relative to the root, or absolute).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from animetag.data.archives import Member, TarIndex, image_key
from animetag.folders import walk

# a JSON line's "id" values (the post's, and any nested one) and md5 values
_ID_IN_LINE = re.compile(r'"id"\s*:\s*"?(\d+)')
_MD5_IN_LINE = re.compile(r'"md5"\s*:\s*"([0-9a-fA-F]{32})"')


def _rank(rel: str, file_ext: str) -> tuple[int, int]:
    """Which of several files of one post wins: Danbooru20xx's 512px JPEG, then the original,
    then anything else; the metadata's own extension first within each."""
    top = rel.split("/", 1)[0]
    place = 0 if top == "512px" else 1 if top == "original" else 2
    return place, 0 if file_ext and rel.lower().endswith("." + file_ext) else 1


@dataclass
class ImageIndex:
    """Every image below an images root (a folder, or one `.tar` archive), by post id and md5."""

    root: Path
    by_id: dict[int, list[str]] = field(default_factory=dict)  # relative paths of loose files
    by_md5: dict[str, list[str]] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)  # every loose image, relative to the root
    tars: TarIndex | None = None
    folders_listed: int = 0

    @classmethod
    def scan(cls, root: str | os.PathLike) -> ImageIndex:
        """List the root once (linked folders followed, each folder once): loose image files by
        name, archive members from their headers."""
        root = Path(root)
        index = cls(root)
        if root.is_file():
            index.tars = TarIndex.scan([root]) if root.suffix == ".tar" else None
            return index
        if not root.is_dir():
            raise FileNotFoundError(f"images root not found: {root} (a folder, or a .tar archive)")
        archives: list[Path] = []
        for dirpath, _, filenames in walk(root):
            index.folders_listed += 1
            rel_dir = os.path.relpath(dirpath, root)
            prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            for name in filenames:
                if name.lower().endswith(".tar"):
                    archives.append(Path(dirpath) / name)
                    continue
                key = image_key(name)
                if key is None:
                    continue
                rel = prefix + name
                index.files.add(rel)
                (index.by_id if isinstance(key, int) else index.by_md5).setdefault(key, []).append(rel)
        if archives:
            index.tars = TarIndex.scan(sorted(p for p in archives if p.is_file()))
        return index

    # -- what is here --------------------------------------------------------------------

    @cached_property
    def id_set(self) -> set[int]:
        return set(self.by_id) | (set(self.tars.by_id) if self.tars else set())

    @cached_property
    def md5_set(self) -> set[str]:
        return set(self.by_md5) | (set(self.tars.by_md5) if self.tars else set())

    @cached_property
    def _id_array(self) -> Any:
        import pyarrow as pa

        return pa.array(np.fromiter(self.id_set, dtype=np.int64, count=len(self.id_set)))

    @cached_property
    def _md5_array(self) -> Any:
        import pyarrow as pa

        return pa.array(sorted(self.md5_set), type=pa.string())

    def _file_path(self, file: str) -> Path | None:
        p = Path(file)
        if p.is_absolute():
            return p if p.is_file() else None
        rel = file.replace(os.sep, "/")
        rel = rel[2:] if rel.startswith("./") else rel
        if rel in self.files:
            return self.root / rel
        return self.root / rel if (self.root / rel).is_file() else None  # outside the listing (../x)

    def has(self, post_id: int, md5: str = "", file: str = "") -> bool:
        """Whether a post's image is here (no file system call, unless `file` is absolute)."""
        if file:
            return self._file_path(file) is not None
        return post_id in self.id_set or (bool(md5) and md5.lower() in self.md5_set)

    def locate(self, post_id: int, md5: str = "", file_ext: str = "", file: str = "") -> Path | Member | None:
        """The image of a post: its `file` where the metadata names one; else a loose file
        named by its id, then by its md5; else an archive member by id, then by md5."""
        if file:
            return self._file_path(file)
        rels = self.by_id.get(post_id) or (self.by_md5.get(md5.lower()) if md5 else None)
        if rels:
            return self.root / min(rels, key=lambda r: _rank(r, file_ext))
        return self.tars.find(post_id, md5) if self.tars else None

    def maybe_in_line(self, line: str) -> tuple[bool, int | None]:
        """(whether a raw JSON line may describe a post with an image here, its first id).
        False only when no `"id"` and no `"md5"` value in the line is here and it names no
        `file`: such a line need not be parsed."""
        ids = [int(m) for m in _ID_IN_LINE.findall(line)]
        first = ids[0] if ids else None
        if '"file"' in line or any(i in self.id_set for i in ids):
            return True, first
        if self.md5_set and any(m.lower() in self.md5_set for m in _MD5_IN_LINE.findall(line)):
            return True, first
        return False, first

    def arrow_mask(self, batch: Any) -> Any:
        """A boolean array: which rows of a pyarrow RecordBatch of posts may have an image here
        (by `id`, `md5` or `file`, nested `media_asset.md5` too); None when the batch's
        columns cannot be compared in Arrow (each record is then checked by `has`)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        names = batch.schema.names
        if "id" not in names:
            return None
        try:
            ids = pc.cast(batch.column("id"), pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        mask = pc.fill_null(pc.is_in(ids, value_set=self._id_array), False)
        md5 = _md5_column(batch)
        if self.md5_set and md5 is not None:
            mask = pc.or_(mask, pc.fill_null(pc.is_in(pc.utf8_lower(md5), value_set=self._md5_array), False))
        if "file" in names:
            has_file = pc.fill_null(pc.greater(pc.utf8_length(pc.cast(batch.column("file"), pa.string())), 0), False)
            mask = pc.or_(mask, has_file)  # checked one by one by `has`
        return mask

    def describe(self) -> dict[str, Any]:
        """Counts for subset.json."""
        tars = self.tars
        return {
            "root": str(self.root),
            "loose_images": len(self.files),
            "folders_listed": self.folders_listed,
            "archives": len(tars.archives) if tars else 0,
            "archive_members": len(tars) if tars else 0,
            **({"duplicate_members": tars.duplicates} if tars and tars.duplicates else {}),
            **({"truncated_archives": tars.truncated} if tars and tars.truncated else {}),
        }

    def posts_per_archive(self) -> dict[str, int]:
        """Image members in each archive."""
        if not self.tars:
            return {}
        per = Counter(m.archive for m in self.tars.by_id.values())
        per.update(m.archive for m in self.tars.by_md5.values())
        return {a: per.get(a, 0) for a in self.tars.archives}


def _md5_column(batch: Any) -> Any:
    """A batch's md5 column, or the md5 inside its `media_asset` struct (some mirrors nest it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = batch.schema.names
    if "md5" in names and pa.types.is_string(batch.schema.field("md5").type):
        return batch.column("md5")
    if "media_asset" in names:
        t = batch.schema.field("media_asset").type
        if pa.types.is_struct(t) and t.get_field_index("md5") >= 0:
            return pc.struct_field(batch.column("media_asset"), "md5")
    return None
