"""Batches of a subset's split as numpy arrays, for any Keras backend and any number of
processes: the TFRecord shards read without TensorFlow (`data.shards`), the JPEGs decoded in
spawned worker processes (or threads) into one uint8 array (the decoded cache), then
shuffled per epoch and gathered into batches.

Shares: a split's shard files are dealt round-robin into `shares` groups (share k holds files
k, k + shares, ...), and each process reads only the shares it is given (`take`); a split with
fewer files than shares (a small validation split) has its records dealt out instead. Every global
batch is the concatenation, in share order, of `batch_size / shares` images from each share,
drawn from that share's own permutation for (seed, epoch, share). So N processes with one
share each build exactly the global batches that one process reading all N shares builds,
which is what makes a multi-process run comparable with a single-process one.

Determinism: the order depends only on (seed, epoch), so a run resumed at epoch E reads what
the uninterrupted run read at epoch E. Training keeps whole batches only (each share's few
left-over images differ each epoch); evaluation keeps every image, in shard order, and pads
each share's last batch with blank zero-weight images.

A split too large for memory (see `choose_cache`) is not cached: each batch is read from the
shards by its byte offsets and decoded in a thread pool (Pillow's decoder releases the GIL),
a few batches ahead.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
from PIL import Image

from animetag.data.shards import decode_example, list_shards, record_offsets
from animetag.folders import SubsetFolder

# share of the reclaimable memory that a decoded cache may take (the rest: model, backend, Python)
CACHE_SHARE = 0.5
# "auto" fills the cache in worker processes rather than threads only with this many workers
# (one per core, at most 8) and this many decoded bytes (a spawned worker costs about 2 s to
# start). benchmarks/loader.py on two cores, 20,000 images at 256 px: threads 2,708 img/s,
# processes 1,132 (the pixels cross a pipe, and two cores have no spare one for the parent).
PROCESS_WORKERS = 8
PROCESS_BYTES = 256 << 20
# records per decoding job: the jobs balance over the workers, and few pixels are in flight
JOB_RECORDS = 256


def memory_bytes() -> int:
    """Memory a process can still take: MemAvailable (free memory plus the page cache and other
    reclaimable memory, as the kernel estimates it), else free pages."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def decoded_bytes(n_images: int, image_size: int) -> int:
    return n_images * image_size * image_size * 3


def choose_cache(cache: str, n_images: int, image_size: int, encoded_bytes: int = 0, reserved: int = 0) -> str:
    """'decoded' when the split's uint8 pixels, with `reserved` bytes already promised to other
    caches, take at most CACHE_SHARE of the reclaimable memory; else 'encoded' (the JPEG records,
    so shards on a slow disk such as Drive are read once) when those fit; else 'off'.
    (`memory` forces the decoded cache, `off` disables caching.)"""
    if cache == "off":
        return "off"
    if cache == "memory":
        return "decoded"
    budget = int(memory_bytes() * CACHE_SHARE) - reserved
    if decoded_bytes(n_images, image_size) <= budget:
        return "decoded"
    return "encoded" if encoded_bytes <= budget else "off"


def batches_per_epoch(n_images: int, batch_size: int, training: bool) -> int:
    """Training: whole batches only; evaluation: every image (the last batch padded)."""
    return n_images // batch_size if training else math.ceil(n_images / batch_size)


def require_whole_batch(n_images: int, batch_size: int, subset_dir: str | Path, split: str) -> None:
    """Training needs at least one whole batch of the split."""
    if n_images < batch_size:
        raise ValueError(f"the '{split}' split of {subset_dir} has {n_images} images, fewer than one batch of "
                         f"{batch_size}; lower the batch size or build a larger subset")


def _decode(jpeg: bytes, size: int, where: str) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(jpeg))
        img = img.convert("RGB")
        if img.size != (size, size):  # shards hold the subset's size; resize only when asked for another
            img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
        return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: the image cannot be decoded ({e})") from None


def _labels(idx: Sequence[int], n_outputs: int) -> np.ndarray:
    y = np.zeros(n_outputs, np.float32)
    y[list(idx)] = 1.0
    return y


def _read_at(f, path: str, offset: int, length: int) -> bytes:
    """One record's payload from the open shard `f` (record_offsets checked its frame)."""
    f.seek(offset)
    data = f.read(length)
    if len(data) < length:
        raise ValueError(f"{path}: cut off inside the record at byte {offset - 12}")
    return data


def _decode_into(pixels: np.ndarray, start: int, path: str, records: list[tuple[int, int]], size: int,
                 n_outputs: int) -> tuple[list[int], np.ndarray]:
    """Decode the given records (offset, length) of one shard into rows start.. of `pixels`;
    returns their ids and labels."""
    ids, labels = [], []
    with open(path, "rb") as f:
        for i, (offset, length) in enumerate(records):
            pid, jpeg, idx = decode_example(_read_at(f, path, offset, length))
            pixels[start + i] = _decode(jpeg, size, f"{path}, the record at byte {offset - 12} (id {pid})")
            ids.append(pid)
            labels.append(_labels(idx, n_outputs))
    return ids, np.stack(labels) if labels else np.zeros((0, n_outputs), np.float32)


def _decode_shard(path: str, records: list[tuple[int, int]], size: int,
                  n_outputs: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Worker process: the given records of one shard decoded, as (ids, labels, pixels). The
    pixels come back through the pool's pipe, one job's at a time, and the parent copies them
    into its cache: no shared memory, whose size a container may cap (/dev/shm), and no
    second copy of the whole cache."""
    pixels = np.empty((len(records), size, size, 3), np.uint8)
    ids, labels = _decode_into(pixels, 0, path, records, size, n_outputs)
    return ids, labels, pixels


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


@dataclass
class _Share:
    records: list[tuple[str, int, int]]  # (file, payload offset, length)

    @property
    def n(self) -> int:
        return len(self.records)

    def by_file(self) -> list[tuple[int, str, list[tuple[int, int]]]]:
        """(first row, file, its records) for each run of records from one file."""
        out: list[tuple[int, str, list[tuple[int, int]]]] = []
        for row, (f, off, ln) in enumerate(self.records):
            if not out or out[-1][1] != f:
                out.append((row, f, []))
            out[-1][2].append((off, ln))
        return out


class SplitLoader:
    """A split's images as batches of numpy arrays: (uint8 NHWC images, float32 multi-hot
    labels[, float32 sample weights][, int64 ids]).

    batch_size: the global batch (every process together); it must divide by `shares`.
    shares / take: how the split's shard files are dealt out, and which shares this process
    reads (see the module's docstring). One process alone: shares=1, take=(0,).
    """

    def __init__(self, subset_dir: str | Path | SubsetFolder, split: str, batch_size: int,
                 image_size: int | None = None, training: bool = False, seed: int = 0, cache: str = "auto",
                 shares: int = 1, take: Sequence[int] = (0,), pad_to_batch: bool = False, with_ids: bool = False,
                 workers: int | None = None, reserved_cache_bytes: int = 0, processes: bool | str = "auto"):
        if batch_size < 1:
            raise ValueError(f"batch size: {batch_size} must be at least 1")
        if batch_size % shares:
            raise ValueError(f"batch size {batch_size} does not divide among {shares} processes: "
                             f"use a multiple of {shares}")
        subset = SubsetFolder.of(subset_dir)
        files = list_shards(subset, split)
        self.subset, self.split, self.training, self.seed = subset, split, training, seed
        self.shares, self.take = shares, tuple(take)
        self.local_batch = batch_size // shares  # per share
        self.n_outputs = subset.n_outputs
        self.size = int(image_size or subset.image_size)
        self.pad_to_batch, self.with_ids = pad_to_batch, with_ids
        self.workers = workers or default_workers()
        self.processes = processes  # decode the cache in spawned processes (else threads); auto: large splits
        offsets = {f: record_offsets(f) for f in files}  # the length headers only: cheap
        if len(files) >= shares:  # each share its own files
            every = {k: _Share([(f, o, n) for f in files[k::shares] for o, n in offsets[f]]) for k in range(shares)}
        else:  # fewer files than shares (a small val split): records dealt out one by one
            flat = [(f, o, n) for f in files for o, n in offsets[f]]
            every = {k: _Share(flat[k::shares]) for k in range(shares)}
        self.all_shares = every
        sizes = [s.n for s in every.values()]
        if training:
            require_whole_batch(min(sizes) * shares, batch_size, subset.path, split)
            self.steps = min(sizes) // self.local_batch
        else:
            self.steps = max(math.ceil(n / self.local_batch) for n in sizes)
        encoded = sum(Path(f).stat().st_size for f in files)
        local_n = sum(every[k].n for k in self.take)
        self.mode = choose_cache(cache, local_n, self.size, encoded, reserved_cache_bytes)
        self._pixels = self._ids = self._labels = None
        self._records: dict[int, bytes] = {}
        self._where = [r for k in self.take for r in every[k].records]  # this process's records, in share order

    # -- the decoded cache ---------------------------------------------------------------------
    def _share_start(self) -> dict[int, int]:
        out, at = {}, 0
        for k in self.take:
            out[k] = at
            at += self.all_shares[k].n
        return out

    def _fill(self) -> None:
        """Decode every image of this process's shares once into one uint8 array, in spawned
        worker processes (JAX and TensorFlow are not fork-safe) or in threads; the array is
        the only copy (peak memory: the cache plus a few jobs' pixels in flight)."""
        starts, n = self._share_start(), len(self._where)
        jobs = [(starts[k] + row + i, f, recs[i: i + JOB_RECORDS]) for k in self.take
                for row, f, recs in self.all_shares[k].by_file() for i in range(0, len(recs), JOB_RECORDS)]
        pixels = np.empty((n, self.size, self.size, 3), np.uint8)
        ids = np.zeros(n, np.int64)
        labels = np.zeros((n, self.n_outputs), np.float32)
        done = False
        if self._use_processes(n) and len(jobs) > 1:
            done = self._fill_in_processes(jobs, pixels, ids, labels)
        if not done:  # in threads, straight into the array: Pillow's decoder releases the GIL
            def one(job):
                row, f, recs = job
                i, y = _decode_into(pixels, row, f, recs, self.size, self.n_outputs)
                ids[row: row + len(i)] = i
                labels[row: row + len(i)] = y

            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(one, jobs))
        self._pixels, self._ids, self._labels = pixels, ids, labels

    def _use_processes(self, n: int) -> bool:
        if self.processes == "auto":  # starting a worker costs seconds: worth it for large splits only
            return self.workers >= PROCESS_WORKERS and decoded_bytes(n, self.size) >= PROCESS_BYTES
        return bool(self.processes) and self.workers > 1

    def _fill_in_processes(self, jobs, pixels: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> bool:
        """Fill the arrays from worker processes; False where the workers could not start."""
        ctx = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(min(self.workers, len(jobs)), mp_context=ctx) as pool:
                # map hands the results back in order and lets go of each once taken
                results = pool.map(_decode_shard, [f for _, f, _ in jobs], [recs for _, _, recs in jobs],
                                   repeat(self.size), repeat(self.n_outputs))
                for (row, _, _), (i, y, x) in zip(jobs, results):
                    pixels[row: row + len(i)] = x
                    ids[row: row + len(i)] = i
                    labels[row: row + len(i)] = y
            return True
        except BrokenProcessPool as e:  # e.g. a __main__ that cannot be imported again (stdin)
            warnings.warn(f"decoding the '{self.split}' split in threads: worker processes could not start ({e})",
                          stacklevel=3)
            return False

    # -- reading without the decoded cache ---------------------------------------------------------
    def _read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        def one(r):
            f, off, ln = self._where[r]
            if self.mode == "encoded" and r in self._records:
                data = self._records[r]
            else:
                with open(f, "rb") as fh:
                    data = _read_at(fh, f, off, ln)
                if self.mode == "encoded":
                    self._records[r] = data
            pid, jpeg, idx = decode_example(data)
            return pid, _decode(jpeg, self.size, f"{f}, byte {off - 12} (id {pid})"), _labels(idx, self.n_outputs)

        with ThreadPoolExecutor(self.workers) as pool:
            out = list(pool.map(one, rows))
        return (np.stack([o[1] for o in out]), np.stack([o[2] for o in out]),
                np.array([o[0] for o in out], np.int64))

    # -- batches -------------------------------------------------------------------------------------
    def rows(self, epoch: int) -> list[np.ndarray]:
        """Per step, this process's rows (indices into its shares, in share order; -1 is a
        blank padding row) for `epoch`."""
        starts = self._share_start()
        per_share = {}
        for k in self.take:
            n = self.all_shares[k].n
            order = (np.random.default_rng([self.seed, epoch, k]).permutation(n) if self.training
                     else np.arange(n))
            need = self.steps * self.local_batch
            if not self.training:
                order = np.concatenate([order + starts[k], np.full(need - n, -1)])
            else:
                order = order[:need] + starts[k]
            per_share[k] = order.reshape(self.steps, self.local_batch)
        return [np.concatenate([per_share[k][s] for k in self.take]) for s in range(self.steps)]

    def batch(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        real = rows >= 0
        r = np.where(real, rows, 0)
        if self.mode == "decoded":
            if self._pixels is None:
                self._fill()
            x, y, pid = self._pixels[r], self._labels[r], self._ids[r]
        else:
            x, y, pid = self._read(r)
        if not real.all():
            x[~real], y[~real], pid = 0, 0.0, np.where(real, pid, -1)
        out: tuple[np.ndarray, ...] = (x, y)
        if self.pad_to_batch:
            out = (*out, real.astype(np.float32))
        elif not real.all():  # without padding asked for: the real images only
            out = tuple(a[real] for a in out)
            pid = pid[real]
        return (*out, pid) if self.with_ids else out

    def epoch(self, epoch: int = 0) -> Iterator[tuple[np.ndarray, ...]]:
        """Every batch of `epoch`, decoding a few batches ahead where nothing is cached."""
        steps = self.rows(epoch)
        if self.mode == "decoded":
            for r in steps:
                yield self.batch(r)
            return
        with ThreadPoolExecutor(1) as ahead:
            pending = [ahead.submit(self.batch, r) for r in steps[:2]]
            for i in range(len(steps)):
                out = pending.pop(0).result()
                if i + 2 < len(steps):
                    pending.append(ahead.submit(self.batch, steps[i + 2]))
                yield out

    def __len__(self) -> int:
        return self.steps
