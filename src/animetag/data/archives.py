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
from dataclasses import dataclass, field
from pathlib import Path

# the image files a post's image may be (see present.ImageIndex for where they are looked for)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp")
_MD5 = re.compile(r"^[0-9a-f]{32}$")


def image_key(name: str) -> int | str | None:
    """What an image file or member is named by: its post id (`ID.ext`), its md5
    (`MD5.ext`, lowercased), or None when it is not an image named either way."""
    stem, _, ext = Path(name).name.rpartition(".")
    if ext.lower() not in IMAGE_EXTS or not stem:
        return None
    if stem.isdigit():
        return int(stem)
    return stem.lower() if _MD5.match(stem.lower()) else None


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
    """Every image member of some archives, by post id and by md5.

    The same post in two places (a member appended twice, or in two archives) is resolved as
    tar itself does for a member appended twice: the last one wins, in archive name order and
    then position; each such case is counted (`duplicates`). An archive that ends inside a
    member (a download cut off) keeps the whole members before the cut and is named in
    `truncated`."""

    by_id: dict[int, Member]
    by_md5: dict[str, Member]
    archives: list[str]
    duplicates: int = 0
    truncated: list[str] = field(default_factory=list)

    @classmethod
    def scan(cls, paths: list[str | os.PathLike]) -> TarIndex:
        index = cls({}, {}, [])
        for path in map(Path, paths):
            if path.suffix != ".tar":
                raise ValueError(f"{path}: only uncompressed .tar archives can be read without extracting them")
            index.archives.append(str(path))
            size, read = path.stat().st_size, 0
            try:
                with tarfile.open(path, "r:") as tar:
                    for m in tar:
                        read += 1
                        if m.isfile() and m.offset_data + m.size <= size:  # a member cut off is left out
                            index._add(Member(str(path), m.name, m.offset_data, m.size))
                    cut = _cut_after(path, tar.offset)
            except tarfile.TarError as e:
                if not read:
                    raise ValueError(f"{path}: not a readable tar archive ({e})") from None
                cut = True  # it ends inside a member: the whole members before are kept
            if cut:
                index.truncated.append(str(path))
        return index

    def _add(self, member: Member) -> None:
        key = image_key(member.name)
        if key is None:
            return
        table = self.by_id if isinstance(key, int) else self.by_md5
        self.duplicates += key in table
        table[key] = member  # the last one wins, as tar's own rule for a member appended twice

    def find(self, post_id: int, md5: str = "") -> Member | None:
        """The member of a post: by its id, else by its md5."""
        return self.by_id.get(int(post_id)) or (self.by_md5.get(md5.lower()) if md5 else None)

    def __len__(self) -> int:
        return len(self.by_id) + len(self.by_md5)


def _cut_after(path: Path, end: int) -> bool:
    """Whether an archive goes on past where tarfile stopped reading with anything but the
    zero blocks that end an archive: a header cut off by an interrupted download."""
    with open(path, "rb") as f:
        f.seek(end)
        rest = f.read(1 << 20)
    return bool(rest.strip(b"\0"))
