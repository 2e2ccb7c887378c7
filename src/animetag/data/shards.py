"""TFRecord shards of a subset: images already decoded, resized and re-encoded as JPEG at the
training size; labels as tag indices.

Written and read without TensorFlow (`ShardWriter`, `read_records`, `decode_example`): the
TFRecord framing and the three-field `tf.train.Example` each shard holds are simple enough to
write and read in a few lines of Python, so a runtime without TensorFlow (JAX on a TPU or a
GPU machine) builds and reads the same shards that TensorFlow's tf.data reads.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from animetag.folders import SubsetFolder

SPLITS = ("train", "val", "test")


def shard_names(split: str, n_images: int, per_shard: int) -> list[str]:
    n = max(1, math.ceil(n_images / per_shard))
    return [f"{split}-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]


def _varint_bytes(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64s as protobuf writes them: ten bytes, two's complement
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint_bytes(number << 3 | 2) + _varint_bytes(len(payload)) + payload


def _int64_feature(values) -> bytes:
    packed = b"".join(_varint_bytes(int(v)) for v in values)
    return _field(3, _field(1, packed))  # Feature.int64_list, Int64List.value (packed)


def example_bytes(post_id: int, jpeg: bytes, labels: list[int]) -> bytes:
    """One shard record: a serialized `tf.train.Example` with the features id (int64), image
    (bytes) and labels (int64 list), written in plain Python (TensorFlow parses it)."""
    features = {"id": _int64_feature([post_id]), "image": _field(1, _field(1, jpeg)),  # Feature.bytes_list
                "labels": _int64_feature(labels)}
    entries = b"".join(_field(1, _field(1, k.encode()) + _field(2, v)) for k, v in features.items())
    return _field(1, entries)  # Example.features


def _fast_crc32c():
    """google-crc32c's hardware CRC-32C where it is installed (Colab has it), else None."""
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.value


class ShardWriter:
    """Writes one split round-robin into its shards (so each shard is a random mix), as
    TFRecord files, without TensorFlow. Each shard is written under a temporary name and
    renamed when closed, so a shard on disk is always whole."""

    def __init__(self, folder: Path, split: str, n_images: int, per_shard: int):
        self.paths = [folder / n for n in shard_names(split, n_images, per_shard)]
        self.tmp = [p.with_name(p.name + ".part") for p in self.paths]
        self.files = [open(t, "wb") for t in self.tmp]
        self.n = 0

    def write(self, post_id: int, jpeg: bytes, labels: list[int]) -> None:
        self.files[self.n % len(self.files)].write(frame(example_bytes(post_id, jpeg, labels)))
        self.n += 1

    def close(self) -> None:
        for f, tmp, path in zip(self.files, self.tmp, self.paths):
            f.close()
            tmp.replace(path)


def list_shards(subset_dir: str | Path, split: str) -> list[str]:
    shard_dir = Path(subset_dir) / SubsetFolder.SHARDS
    files = sorted(str(p) for p in shard_dir.glob(f"{split}-*.tfrecord"))
    if not files:
        raise FileNotFoundError(f"no '{split}' shards in {shard_dir}: is it a built subset?")
    return files


# -- reading without TensorFlow ---------------------------------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()
_FAST = _fast_crc32c()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord frames use it: google-crc32c's where installed, else
    pure Python (about 10 MB/s: fine for headers and the sample, slow for a 25k-image subset)."""
    if len(data) > 64 and _FAST is not None:
        return _FAST(data)
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC: rotated right by 15 bits, plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """A record framed as TFRecord stores it: length, the length's masked CRC, the record,
    the record's masked CRC."""
    header = struct.pack("<Q", len(record))
    return header + struct.pack("<I", masked_crc(header)) + record + struct.pack("<I", masked_crc(record))


def _frames(path: Path, read: bool) -> Iterator[tuple[int, int, bytes | None, bytes]]:
    """(offset, payload length, payload or None, footer) of each TFRecord frame, each length
    header checked against its CRC; with `read` False the payloads are skipped, not read."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while header := f.read(12):
            if len(header) < 12:
                raise ValueError(f"{path}: cut off in the header of the record at byte {offset}")
            (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if masked_crc(header[:8]) != length_crc:
                raise ValueError(f"{path}: the record at byte {offset} has a damaged length header")
            if offset + 16 + length > size:
                raise ValueError(f"{path}: cut off inside the record at byte {offset}")
            if read:
                data, footer = f.read(length), f.read(4)
            else:
                data, footer = None, b""
                f.seek(length + 4, 1)
            yield offset, length, data, footer
            offset += 16 + length


def read_records(path: str | Path, verify: bool = False) -> Iterator[bytes]:
    """The records of one TFRecord file, in order, without TensorFlow: each frame's length
    header is checked against its CRC (and with `verify` each record's too); a file cut off
    or damaged raises ValueError naming it and the record's offset."""
    path = Path(path)
    for offset, _length, data, footer in _frames(path, read=True):
        if verify and masked_crc(data) != struct.unpack("<I", footer)[0]:
            raise ValueError(f"{path}: the record at byte {offset} is damaged (its CRC does not match)")
        yield data


def record_offsets(path: str | Path) -> list[tuple[int, int]]:
    """(byte offset, length) of each record's payload in a TFRecord file, from the length
    headers alone (the payloads are skipped, not read)."""
    return [(offset + 12, length) for offset, length, _, _ in _frames(Path(path), read=False)]


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of a protobuf message: varints as ints,
    length-delimited fields as bytes (the only wire types an Example holds, beside fixed32
    floats, which it does not use here)."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i: i + size], i + size
        elif wire == 5:
            value, i = buf[i: i + 4], i + 4
        elif wire == 1:
            value, i = buf[i: i + 8], i + 8
        else:
            raise ValueError(f"protobuf wire type {wire} is not one an Example holds")
        yield number, wire, value


def _int64s(feature: bytes) -> list[int]:
    out = []
    for number, _wire, value in _fields(feature):
        if number != 3:  # Feature.int64_list
            continue
        for _, w, v in _fields(value):  # Int64List.value: packed, or one varint a field
            if w == 2:
                j = 0
                while j < len(v):
                    x, j = _varint(v, j)
                    out.append(x - (1 << 64) if x >= 1 << 63 else x)
            else:
                out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


def _bytes(feature: bytes) -> list[bytes]:
    return [v for number, _, value in _fields(feature) if number == 1 for _, _, v in _fields(value)]


def decode_example(data: bytes) -> tuple[int, bytes, list[int]]:
    """(post id, JPEG bytes, tag indices) of one shard record, without TensorFlow."""
    features: dict[str, bytes] = {}
    for number, _, value in _fields(data):
        if number != 1:  # Example.features
            continue
        for n2, _, entry in _fields(value):  # Features.feature: map entries
            if n2 != 1:
                continue
            key, feat = b"", b""
            for n3, _, v in _fields(entry):
                key, feat = (v, feat) if n3 == 1 else (key, v)
            features[key.decode()] = feat
    try:
        return _int64s(features["id"])[0], _bytes(features["image"])[0], _int64s(features["labels"])
    except (KeyError, IndexError):
        raise ValueError(f"a shard record without id, image or labels (it has {sorted(features)})") from None


def peek(subset_dir: str | Path, split: str = "train", n: int = 8):
    """The first `n` examples of a split as (ids, uint8 images, multi-hot labels) numpy
    arrays, in the order TensorFlow's reader gives them (shard by shard), without TensorFlow."""
    n_outputs = SubsetFolder.of(subset_dir).n_outputs
    ids, images, labels = [], [], []
    for shard in list_shards(subset_dir, split):
        for record in read_records(shard):
            if len(ids) == n:
                break
            pid, jpeg, idx = decode_example(record)
            images.append(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))
            y = np.zeros(n_outputs, np.float32)
            y[idx] = 1.0
            labels.append(y)
            ids.append(pid)
    return np.array(ids), np.stack(images), np.stack(labels)
