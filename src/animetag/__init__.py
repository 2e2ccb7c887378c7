"""animetag: train and study multi-label Danbooru taggers (ResNet-SE, focal loss)."""

import importlib.util
import os as _os
import sys as _sys

__version__ = "0.1.0"

# TensorFlow's C++ log lines (oneDNN notices, dataset buffer sizes, CUDA factory registration)
# say nothing a user acts on, and in a notebook one of them looks like an error. Level 3 keeps
# them out; errors still raise in Python. Set TF_CPP_MIN_LOG_LEVEL yourself to see them.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with the process's stderr muted: a few lines are written while it
    loads, before its log level applies. Done once, in notebooks only (where those lines
    become output); a failed import still raises."""
    if "tensorflow" in _sys.modules:
        return
    try:

        if importlib.util.find_spec("tensorflow") is None:
            return
    except (ImportError, ValueError):
        return
    _sys.stderr.flush()
    saved, devnull = _os.dup(2), _os.open(_os.devnull, _os.O_WRONLY)
    try:
        _os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        _os.dup2(saved, 2)
        _os.close(saved)
        _os.close(devnull)


if "ipykernel" in _sys.modules:
    _import_tensorflow_quietly()
