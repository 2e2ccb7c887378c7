"""Colab helpers: environment detection, Drive, version and accelerator checks.

Everything here is a no-op outside Colab; `google.colab` is imported only behind the check.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

MIN_VERSIONS = {"tensorflow": "2.16", "keras": "3.3"}


def in_colab() -> bool:
    return "google.colab" in sys.modules


def mount_drive(mountpoint: str = "/content/drive") -> Path | None:
    """Mount Google Drive on Colab and return its 'MyDrive' folder; None elsewhere."""
    if not in_colab():
        return None
    from google.colab import drive  # only on Colab

    drive.mount(mountpoint)
    return Path(mountpoint) / "MyDrive"


def _vtuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def check_versions() -> dict[str, str]:
    """Installed TensorFlow and Keras versions; warns (never fails) when below the minimum."""
    import keras
    import tensorflow as tf

    found = {"tensorflow": tf.__version__, "keras": keras.__version__}
    for name, v in found.items():
        if _vtuple(v) < _vtuple(MIN_VERSIONS[name]):
            warnings.warn(f"{name} {v} is older than the {MIN_VERSIONS[name]} animetag is tested with", stacklevel=2)
    return found


def accelerator() -> dict[str, object]:
    """What will run the model: {'kind': 'tpu'|'gpu'|'cpu', 'name', 'count', 'compute_capability'}."""
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        if resolver.master():
            return {"kind": "tpu", "name": "TPU", "count": 8, "compute_capability": None}
    except (ValueError, RuntimeError, ImportError, KeyError):
        pass
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return {"kind": "gpu", "name": details.get("device_name", "GPU"), "count": len(gpus),
                "compute_capability": details.get("compute_capability")}
    return {"kind": "cpu", "name": "CPU", "count": 1, "compute_capability": None}


def warn_if_cpu() -> dict[str, object]:
    acc = accelerator()
    if acc["kind"] == "cpu":
        warnings.warn("No GPU or TPU found: training the full profile on a CPU takes days. "
                      "On Colab: Runtime > Change runtime type > GPU.", stacklevel=2)
    return acc
