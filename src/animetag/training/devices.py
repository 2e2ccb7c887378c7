"""The accelerator a run trains on (a GPU, a TPU, or the CPU), found without probing for a
TPU where none can be, and the check that stops the full profile on a CPU."""

from __future__ import annotations

import glob
import os
import warnings


def _tpu_hints() -> dict[str, bool]:
    """Signs of a TPU: a TPU VM's local chips (/dev/accel*, /dev/vfio with a TPU type in the
    environment), or a TPU node named by the environment (Colab's old COLAB_TPU_ADDR, TPU_NAME)."""

    vm = bool(glob.glob("/dev/accel*")) or (bool(glob.glob("/dev/vfio/[0-9]*"))
                                            and bool(os.environ.get("TPU_ACCELERATOR_TYPE")))
    node = bool(os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME"))
    return {"vm": vm, "node": node}


def tpu_resolver():
    """A TPUClusterResolver for the TPU this process can use, or None.

    On a TPU VM the chips are local, and only `tpu="local"` finds them (a bare
    TPUClusterResolver() raises there); a TPU node is found from the environment. The
    resolver is never asked where there is no sign of a TPU."""
    import tensorflow as tf

    hints = _tpu_hints()
    resolver_cls = tf.distribute.cluster_resolver.TPUClusterResolver
    if hints["vm"]:
        try:
            return resolver_cls(tpu="local")
        except (ValueError, RuntimeError, KeyError, tf.errors.OpError):
            pass
    if hints["node"]:
        try:
            resolver = resolver_cls()
            if resolver.master():
                return resolver
        except (ValueError, RuntimeError, KeyError, tf.errors.OpError):
            pass
    return None


def accelerator() -> dict[str, object]:
    """What will run the model: {'kind': 'tpu'|'gpu'|'cpu', 'name', 'count', 'compute_capability'}.

    For a TPU, `count` is the number of TPU cores TensorFlow lists, or None before the TPU
    system is initialised (the strategy then reports its replicas)."""
    import tensorflow as tf

    if tpu_resolver() is not None:
        cores = len(tf.config.list_logical_devices("TPU"))
        return {"kind": "tpu", "name": "TPU", "count": cores or None, "compute_capability": None}
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return {"kind": "gpu", "name": details.get("device_name", "GPU"), "count": len(gpus),
                "compute_capability": details.get("compute_capability")}
    return {"kind": "cpu", "name": "CPU", "count": 1, "compute_capability": None}


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
