"""The seam between training and Keras' backend: what `train` needs from TensorFlow or JAX,
behind one small interface, so that nothing else in the package imports a backend.

A runtime has
- `backend`, `acc` (the accelerator: kind, name, count, compute capability), `replicas`
  (devices in the global batch), `process_index` / `process_count`, `synchronized_bn`;
- `scope()`: the context the model is built and trained in (a tf.distribute strategy, or a
  keras.distribution layout);
- `train_input(data, cfg, initial_epoch)` / `val_input(data, cfg, reserved_cache_bytes)`:
  what `fit` reads, as (x, extra fit arguments);
- `versions()`: what the run records about its software.

`training.tensorflow_backend` is the TensorFlow side (tf.data, tf.distribute, TPU
resolvers); `training.jax_backend` the JAX side (the shards read without TensorFlow,
keras.distribution.DataParallel over every device of every process).
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Any

BACKENDS = ("tensorflow", "jax")


def backend_name() -> str:
    import keras

    return keras.backend.backend()


def backend_module(name: str | None = None) -> ModuleType:
    """The module of Keras' backend (KERAS_BACKEND): tensorflow or jax."""
    name = name or backend_name()
    if name == "tensorflow":
        from animetag.training import tensorflow_backend as module
    elif name == "jax":
        from animetag.training import jax_backend as module
    else:
        raise ValueError(f"Keras runs on the {name!r} backend: animetag trains under {' or '.join(BACKENDS)}. "
                         "Set KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow before Python starts")
    return module


def make_runtime(strategy: Any = None, acc: dict[str, Any] | None = None):
    """The runtime of Keras' backend. `strategy`: a tf.distribute strategy to use (TensorFlow only)."""
    module = backend_module()
    if strategy is None:
        return module.Runtime(acc)
    if module.Runtime.backend != "tensorflow":
        raise ValueError(f"a tf.distribute strategy was given, but Keras runs on {module.Runtime.backend}")
    return module.Runtime(acc, strategy)


def process_settings(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> dict[str, Any] | None:
    """The multi-process settings from the arguments, else from the environment variables
    JAX reads (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); None for one process."""
    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if coordinator is None and (num_processes or 1) == 1:
        return None
    missing = [n for n, v in (("--coordinator HOST:PORT", coordinator), ("--num-processes", num_processes),
                              ("--process-id", process_id)) if v is None]
    if missing:
        raise ValueError(f"training in several processes needs {', '.join(missing)} as well "
                         "(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id} is not within 0 to {num_processes - 1}")
    if ":" not in coordinator:
        raise ValueError(f"--coordinator {coordinator}: give HOST:PORT (process 0's address and a free port)")
    return {"coordinator": coordinator, "num_processes": int(num_processes), "process_id": int(process_id)}


def accelerator() -> dict[str, object]:
    """What will run the model, as Keras' backend sees it: {'kind': 'tpu'|'gpu'|'cpu', 'name',
    'count', 'compute_capability'}."""
    return backend_module().accelerator()


class NoAccelerator(RuntimeError):
    """The full profile asked to train on a CPU."""


def require_accelerator(profile: str, allow_cpu: bool = False, acc: dict[str, object] | None = None
                        ) -> dict[str, object]:
    """The accelerator; for the `full` profile on a CPU, a clear stop unless `allow_cpu`
    (a warning then). The `sample` profile is made for a CPU."""
    acc = acc or accelerator()
    if acc["kind"] == "cpu" and profile == "full":
        if not allow_cpu:
            raise NoAccelerator("the full profile (17M parameters, 25k images at 256 px) would take days on a CPU. "
                                "On Colab: Runtime > Change runtime type > a GPU, then run the notebook again; "
                                "or set ALLOW_CPU = True to train here anyway.")
        warnings.warn("training the full profile on a CPU: expect days", stacklevel=2)
    return acc
