"""A public Danbooru mirror at real size, a few of its archives downloaded: time and peak
memory of building a subset from it.

Writes a replica of deepghs/danbooru2024-webp-4Mpixel's layout: `metadata.parquet` with the
mirror's columns for --posts million posts (Danbooru's tag-frequency shape: the top-100
general tags from ~75% of posts down to ~6%, rank slope -0.6, then -1.0; characters,
copyrights, artists and meta tags beside them), and `images/NNNN.tar` for the first
--archives buckets of `id % 1000`, members `ID.webp`. Then builds a --max-images subset from
it in a child process (its own peak) and prints one JSON object: wall time, the build
process's peak RSS, and the peak of its RSS and its decoding workers' together (sampled
every 50 ms with psutil, where installed). `--format jsonl` writes the
metadata as JSON lines instead (nyanko7/danbooru2023's `posts.json` shape).

    python benchmarks/mirror_subset.py --posts 2 --archives 3 --work /tmp/animetag-mirror

To time another version of the package, put its `src` first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, os, resource, sys, time, warnings
warnings.simplefilter("ignore")
import animetag
from animetag.config import SubsetConfig
from animetag.data.subset import build_subset

peak = [0]

def sample_tree():  # the whole process tree's resident memory, every 50 ms
    import threading, psutil
    me = psutil.Process()
    def loop():
        while True:
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], total)
            time.sleep(0.05)
    threading.Thread(target=loop, daemon=True).start()

try:
    sample_tree()
except ImportError:
    peak[0] = None
t = time.time()
s = build_subset(sys.argv[1], sys.argv[2], sys.argv[3],
                 SubsetConfig(max_images=int(sys.argv[4]), image_size=64, images_per_shard=1024, workers=2),
                 overwrite=True, progress=False)
wall = time.time() - t
size = os.path.getsize(os.path.join(sys.argv[3], "subset.json"))
print(json.dumps({"package": animetag.__file__, "seconds": round(wall, 1),
                  "peak_rss_main_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "peak_rss_all_processes_mb": round(peak[0] / 2**20) if peak[0] else None,
                  "kept": s["counts"]["kept"], "records_read": s["counts"]["records_read"],
                  "subset_json_kb": round(size / 1024, 1)}))
"""

N_GENERAL, N_CHARACTER, N_COPYRIGHT, N_ARTIST, N_META = 30_000, 20_000, 5_000, 50_000, 200


def general_rates() -> np.ndarray:
    """P(tag) by rank: 0.75 r^-0.6 over the top 100 (6.3% at rank 100), then slope -1.0 to
    rank 2,000, then -2.0: about 30 general tags per post, as on Danbooru."""
    r = np.arange(1, N_GENERAL + 1, dtype=np.float64)
    p = np.where(r <= 100, 0.75 * r ** -0.6, 0.75 * 100 ** -0.6 * (r / 100) ** -1.0)
    p = np.where(r <= 2000, p, p[1999] * (r / 2000) ** -2.0)
    return p


def _names(prefix: str, n: int):
    import pyarrow as pa

    rng = np.random.default_rng(1)
    words = ["hair", "eyes", "shirt", "skirt", "smile", "hand", "long", "short", "blue", "red", "open", "mouth"]
    return pa.array([f"{words[rng.integers(len(words))]}_{prefix}{i}" for i in range(n)])


def _tag_strings(rng: np.random.Generator, names, rows: np.ndarray, cols: np.ndarray, n: int):
    """One space-separated string per post from (post, tag index) pairs."""
    import pyarrow as pa
    import pyarrow.compute as pc

    order = np.argsort(rows, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), names.take(pa.array(cols[order])))
    return pc.binary_join(lists, " ")


def _zipf_draws(rng, n: int, n_names: int, mean: float, a: float = 1.1) -> tuple[np.ndarray, np.ndarray]:
    k = rng.poisson(mean, n)
    rows = np.repeat(np.arange(n), k)
    w = np.arange(1, n_names + 1, dtype=np.float64) ** -a
    cols = rng.choice(n_names, size=len(rows), p=w / w.sum())
    return rows, cols


def write_metadata(path: Path, n_posts: int, fmt: str, seed: int = 0) -> np.ndarray:
    """The mirror's metadata for n_posts posts; returns their ids."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(int(n_posts * 1.05) + 1, size=n_posts, replace=False) + 1).astype(np.int64)
    names = {c: _names(c[0], n) for c, n in (("general", N_GENERAL), ("character", N_CHARACTER),
                                              ("copyright", N_COPYRIGHT), ("artist", N_ARTIST), ("meta", N_META))}
    p = general_rates()
    head, tail = p[:100], p[100:]
    chunk = 200_000
    writer = None
    out = open(path, "w") if fmt == "jsonl" else None
    for start in range(0, n_posts, chunk):
        cid = ids[start: start + chunk]
        n = len(cid)
        hr, hc = np.nonzero(rng.random((n, 100)) < head)
        k = rng.poisson(tail.sum(), n)
        tr = np.repeat(np.arange(n), k)
        tc = rng.choice(len(tail), size=len(tr), p=tail / tail.sum()) + 100
        general = _tag_strings(rng, names["general"], np.concatenate([hr, tr]), np.concatenate([hc, tc]), n)
        cats = {"general": general}
        for c, mean in (("character", 0.9), ("copyright", 1.1), ("artist", 1.0), ("meta", 1.5)):
            r, col = _zipf_draws(rng, n, len(names[c]), mean)
            cats[c] = _tag_strings(rng, names[c], r, col, n)
        md5 = np.frombuffer(rng.bytes(16 * n), dtype="S16")
        cols = {
            "id": pa.array(cid),
            "created_at": pc.strftime(pa.array((cid * 40 + 1_100_000_000) * 1000, pa.timestamp("ms")),
                                      format="%Y-%m-%dT%H:%M:%S.000-05:00"),
            "uploader_id": pa.array(rng.integers(1, 900_000, n)),
            "score": pa.array(rng.poisson(12, n)),
            "source": pc.binary_join_element_wise("https://twitter.com/user/status/", pc.cast(pa.array(cid), pa.string()),
                                                  ""),
            "md5": pa.array([m.hex() for m in md5.tolist()]),
            "rating": pa.array(rng.choice(np.array(["g", "s", "q", "e"]), n, p=[0.3, 0.4, 0.15, 0.15])),
            "image_width": pa.array(rng.integers(500, 4000, n)),
            "image_height": pa.array(rng.integers(500, 4000, n)),
            "tag_string": pc.binary_join_element_wise(*[cats[c] for c in cats], " "),
            "fav_count": pa.array(rng.poisson(20, n)),
            "file_ext": pa.array(rng.choice(np.array(["jpg", "png", "gif", "webp"]), n, p=[0.72, 0.25, 0.02, 0.01])),
            "parent_id": pa.array(np.where(rng.random(n) < 0.05, cid - 1, 0)),
            "has_children": pa.array(rng.random(n) < 0.05),
            "file_size": pa.array(rng.integers(100_000, 8_000_000, n)),
            "is_deleted": pa.array(rng.random(n) < 0.06),
            "is_banned": pa.array(rng.random(n) < 0.002),
            "pixiv_id": pa.array(rng.integers(1, 120_000_000, n)),
            **{f"tag_count_{c}": pc.list_value_length(pc.split_pattern(cats[c], " ")) for c in cats},
            **{f"tag_string_{c}": cats[c] for c in cats},
            "file_url": pc.binary_join_element_wise("https://cdn.donmai.us/original/", pc.cast(pa.array(cid), pa.string()),
                                                    ".jpg", ""),
        }
        table = pa.table(cols)
        if fmt == "jsonl":
            for rec in table.to_pylist():
                out.write(json.dumps(rec) + "\n")
        else:
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=100_000)
        print(f"  metadata: {start + n:,} of {n_posts:,} posts", file=sys.stderr, flush=True)
    if writer:
        writer.close()
    if out:
        out.close()
    return ids


def write_archives(folder: Path, ids: np.ndarray, n_archives: int) -> int:
    """images/NNNN.tar for buckets 0..n_archives-1 of id % 1000, members ID.webp (a few small
    distinct images, as bytes)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    blobs = []
    for i in range(16):
        buf = io.BytesIO()
        Image.new("RGB", (96, 72 + 4 * i), (16 * i, 255 - 16 * i, 128)).save(buf, "WEBP")
        blobs.append(buf.getvalue())
    n = 0
    for b in range(n_archives):
        with tarfile.open(folder / f"{b:04d}.tar", "w") as tar:
            for pid in ids[ids % 1000 == b].tolist():
                data = blobs[pid % len(blobs)]
                info = tarfile.TarInfo(f"{pid}.webp")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=float, default=2.0, help="millions of posts in the metadata")
    ap.add_argument("--archives", type=int, default=3, help="image archives present (of 1,000)")
    ap.add_argument("--max-images", type=int, default=1000)
    ap.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    ap.add_argument("--work", default="build/bench-mirror")
    a = ap.parse_args()
    n_posts = int(a.posts * 1e6)
    work = Path(a.work) / f"{a.posts:g}M"
    work.mkdir(parents=True, exist_ok=True)
    meta = work / ("metadata.parquet" if a.format == "parquet" else "posts.json")
    images = work / "images"
    t = time.time()
    if not meta.exists():
        ids = write_metadata(meta.with_suffix(".tmp"), n_posts, a.format)
        meta.with_suffix(".tmp").rename(meta)
        np.save(work / "ids.npy", ids)
    ids = np.load(work / "ids.npy")
    marker = images / f"archives-{a.archives}.done"
    if not marker.exists():
        members = write_archives(images, ids, a.archives)
        marker.write_text(str(members))
    generated = time.time() - t
    r = subprocess.run([sys.executable, "-c", CHILD, str(meta), str(images), str(work / "subset"), str(a.max_images)],
                       capture_output=True, text=True)
    if r.returncode:
        print(r.stderr[-3000:], file=sys.stderr)
        return r.returncode
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print(json.dumps({"posts": n_posts, "format": a.format, "metadata_mb": round(meta.stat().st_size / 1e6),
                      "archives_present": a.archives, "images_present": int(marker.read_text()),
                      "generated_s": round(generated, 1), **res}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
