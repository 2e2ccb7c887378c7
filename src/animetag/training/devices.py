"""Signs of a TPU on this machine, read without any backend, so that no backend is asked to
probe for a TPU where none can be (`training.runtime.accelerator` asks the backend)."""

from __future__ import annotations

import glob
import os


def tpu_hints() -> dict[str, bool]:
    """Signs of a TPU: a TPU VM's local chips (/dev/accel*, /dev/vfio with a TPU type in the
    environment), or a TPU node named by the environment (Colab's old COLAB_TPU_ADDR, TPU_NAME)."""

    vm = bool(glob.glob("/dev/accel*")) or (bool(glob.glob("/dev/vfio/[0-9]*"))
                                            and bool(os.environ.get("TPU_ACCELERATOR_TYPE")))
    node = bool(os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME"))
    return {"vm": vm, "node": node}
