"""Training under JAX, with no TensorFlow: the shards read by `data.loader` (worker
processes, a decoded uint8 cache, this process's share of the files), and
`keras.distribution.DataParallel` over every device of every process, so that each step is
one XLA program over the global batch (BatchNorm statistics and metrics are the global
batch's).

Many processes: `initialize_processes` starts JAX's distributed runtime (on the CPU with
gloo collectives) before anything else touches JAX; every process then reads its own share
of the shards and feeds its part of each global batch.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import jax
import keras

from animetag.data.loader import SplitLoader

_started: dict[str, Any] = {}


def initialize_processes(settings: dict[str, Any]) -> None:
    """jax.distributed.initialize for (coordinator, num_processes, process_id); once per Python
    process (a second call with the same settings does nothing, with others it refuses)."""
    if _started:
        if _started != settings:
            raise RuntimeError(f"this Python process already joined {_started}; start a new one for {settings}")
        return
    with contextlib.suppress(AttributeError, ValueError):  # CPU collectives across processes
        if not jax.config.jax_cpu_collectives_implementation:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(settings["coordinator"], settings["num_processes"], settings["process_id"])
    _started.update(settings)


def _capability(device) -> tuple[int, int] | None:
    cc = getattr(device, "compute_capability", None)
    if not cc:
        return None
    major, _, minor = str(cc).partition(".")
    return int(major), int(minor or 0)


def accelerator() -> dict[str, object]:
    """What will run the model, as JAX sees it: this process's devices (`count`), their
    platform and name."""
    devices = jax.local_devices()
    kind = devices[0].platform
    kind = kind if kind in ("gpu", "tpu") else "cpu"
    name = {"cpu": "CPU"}.get(kind, getattr(devices[0], "device_kind", kind.upper()))
    return {"kind": kind, "name": name, "count": len(devices),
            "compute_capability": _capability(devices[0]) if kind == "gpu" else None}


class JaxRuntime:
    """keras.distribution.DataParallel over jax.devices() (every process's) when there is more
    than one device; the plain single-device path otherwise."""

    backend = "jax"
    synchronized_bn = False  # one program over the global batch: BatchNorm sees all of it already

    def __init__(self, acc: dict[str, Any] | None = None):
        self.acc = acc or accelerator()
        self.replicas = jax.device_count()
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.distribution = None
        if self.replicas > 1:
            self.distribution = keras.distribution.DataParallel(devices=jax.devices())
            # each process feeds its own share of the shards (data.loader): nothing for Keras to split
            self.distribution.auto_shard_dataset = False

    def scope(self) -> AbstractContextManager:
        """Where the model is built and trained: its variables laid out over every device."""
        return self.distribution.scope() if self.distribution is not None else contextlib.nullcontext()

    fit_scope = scope  # Keras lays each batch out over the devices while the distribution is set

    @staticmethod
    @contextlib.contextmanager
    def local_scope():
        """Outside the distribution: what the writing process builds alone (model.keras's float32
        copy) must not lay variables out over other processes' devices, which needs them all."""
        current = keras.distribution.distribution()
        keras.distribution.set_distribution(None)
        try:
            yield
        finally:
            keras.distribution.set_distribution(current)

    def _loader(self, data, cfg, split: str, **kwargs) -> SplitLoader:
        shares = cfg.input_shares or self.process_count
        if shares % self.process_count:
            raise ValueError(f"input_shares {shares} does not divide among {self.process_count} processes")
        return SplitLoader(data, split, cfg.batch_size, cfg.image_size, cache=cfg.cache, seed=cfg.seed,
                           shares=shares, take=tuple(range(self.process_index, shares, self.process_count)), **kwargs)

    def train_input(self, data, cfg, initial_epoch: int, repeat: bool = True) -> tuple[Iterator, dict[str, Any]]:
        """Every epoch's batches from `initial_epoch` on, each epoch's order fixed by (seed, epoch)."""
        loader = self._loader(data, cfg, "train", training=True)

        def batches():
            for epoch in itertools.count(initial_epoch):
                yield from loader.epoch(epoch)

        return batches(), {"steps_per_epoch": loader.steps}

    def val_input(self, data, cfg, reserved_cache_bytes: int) -> tuple[Iterator, dict[str, Any]]:
        loader = self._loader(data, cfg, "val", pad_to_batch=True, reserved_cache_bytes=reserved_cache_bytes)

        def batches():
            while True:
                yield from loader.epoch(0)

        return batches(), {"validation_steps": loader.steps}

    @staticmethod
    def repeated(batch) -> Iterator:
        """One batch, again and again: the training step with no input to wait for."""
        def again():
            while True:
                yield batch

        return again()

    def versions(self) -> dict[str, str]:
        return {"backend": "jax", "jax": jax.__version__, "keras": keras.__version__}


Runtime = JaxRuntime
