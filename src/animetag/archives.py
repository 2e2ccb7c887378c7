"""Images inside tar archives, as today's public Danbooru mirrors ship them (1,000 to 10,000
images per archive, members named `{id}.{ext}` or `{md5}.{ext}`), read without extracting.

An index lists every member once, from the archive headers alone (Python's tarfile seeks
past the data of an uncompressed archive); a member is then read by its byte offset, so
decoding workers read only the images they are given, each straight from its archive. On
a slow shared drive this is a few large files instead of tens of thousands of small ones.
"""

from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .danbooru import IMAGE_EXTS

_MD5 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Member:
    """One image inside an archive: where its bytes start, and how many there are."""

    archive: str
    name: str
    offset: int
    size: int

    def read(self) -> bytes:
        with open(self.archive, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self}: the archive ends {self.size - len(data)} bytes early")
        return data

    def __str__(self) -> str:
        return f"{self.archive}:{self.name}"


@dataclass
class TarIndex:
    """Every image member of some archives, by post id and by md5."""

    by_id: dict[int, Member]
    by_md5: dict[str, Member]
    archives: list[str]

    @classmethod
    def scan(cls, paths: list[str | os.PathLike]) -> TarIndex:
        by_id: dict[int, Member] = {}
        by_md5: dict[str, Member] = {}
        archives = []
        for path in map(Path, paths):
            if path.suffix != ".tar":
                raise ValueError(f"{path}: only uncompressed .tar archives can be read without extracting them")
            archives.append(str(path))
            try:
                with tarfile.open(path, "r:") as tar:
                    for m in tar:
                        if not m.isfile():
                            continue
                        stem, _, ext = Path(m.name).name.rpartition(".")
                        if ext.lower() not in IMAGE_EXTS:
                            continue
                        member = Member(str(path), m.name, m.offset_data, m.size)
                        if stem.isdigit():
                            by_id.setdefault(int(stem), member)
                        elif _MD5.match(stem.lower()):
                            by_md5.setdefault(stem.lower(), member)
            except tarfile.TarError as e:
                raise ValueError(f"{path}: not a readable tar archive ({e})") from None
        return cls(by_id, by_md5, archives)

    def find(self, post_id: int, md5: str = "") -> Member | None:
        """The member of a post: by its id, else by its md5."""
        return self.by_id.get(int(post_id)) or (self.by_md5.get(md5.lower()) if md5 else None)

    def __len__(self) -> int:
        return len(self.by_id) + len(self.by_md5)
