"""Colab helpers: is this Colab, and do its Keras and Keras' backend meet the minimum versions.
(Which accelerator a run has is `devices`: it is not Colab's alone.)"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings

MIN_VERSIONS = {"tensorflow": "2.16", "keras": "3.3", "jax": "0.4.30"}


def in_colab() -> bool:
    return "google.colab" in sys.modules


def _vtuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def check_versions() -> dict[str, str]:
    """Keras' and its backend's versions (TensorFlow's only where Keras runs on it); warns
    (never fails) when below the minimum."""
    import keras

    found = {"keras": keras.__version__, "backend": keras.backend.backend()}
    backend = importlib.import_module(found["backend"])
    found[found["backend"]] = backend.__version__
    for name, v in found.items():
        if name in MIN_VERSIONS and _vtuple(v) < _vtuple(MIN_VERSIONS[name]):
            warnings.warn(f"{name} {v} is older than the {MIN_VERSIONS[name]} animetag is tested with", stacklevel=2)
    return found


def choose_backend() -> str:
    """Keras' backend for this runtime, chosen before Keras is imported: KERAS_BACKEND where it
    is set; else TensorFlow where it is installed (Colab's GPU and CPU runtimes); else JAX
    (Colab's TPU runtimes, GPU machines with JAX alone). Returns the backend Keras will use."""
    if "keras" in sys.modules:  # too late to choose: Keras has read its backend
        return sys.modules["keras"].backend.backend()
    if not os.environ.get("KERAS_BACKEND"):
        for name in ("tensorflow", "jax"):
            if importlib.util.find_spec(name) is not None:
                os.environ["KERAS_BACKEND"] = name
                break
    return os.environ.get("KERAS_BACKEND", "tensorflow")
