"""Colab helpers: is this Colab, and does its TensorFlow/Keras meet the minimum versions.
(Which accelerator a run has is `devices`: it is not Colab's alone.)"""

from __future__ import annotations

import sys
import warnings

MIN_VERSIONS = {"tensorflow": "2.16", "keras": "3.3"}


def in_colab() -> bool:
    return "google.colab" in sys.modules


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
