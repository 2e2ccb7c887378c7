"""animetag: train and study multi-label Danbooru taggers (ResNet-SE, focal loss).

The public surface: `from animetag import build_subset, train, evaluate, Tagger, ...`. Each
name below is loaded from its stage when first used (so `import animetag` loads neither
Keras nor TensorFlow), and keeps working when a module moves inside the package. The
stages, in the order data flows (each imports only those before it): `data`, `model`,
`training`, `tagging`, `evaluation`; under them the foundation every stage uses (`config`,
`settings`, `registry`, `vocab`, `metrics`, `folders`, `locks`); over them the entry
modules (`cli`, `notebook`, `colab`).
"""

import atexit as _atexit
import importlib
import importlib.util
import json as _json
import os as _os
import re as _re
import sys as _sys
import tempfile as _tempfile
import threading as _threading
from pathlib import Path as _Path

__version__ = "0.1.0"

# public name -> "module" (a module itself) or "module:attribute"
_PUBLIC = {
    # the notebooks' side: environment checks, form fields, the workspace and its prerequisites
    "check_versions": "colab:check_versions",
    "choose_backend": "colab:choose_backend",
    "in_colab": "colab:in_colab",
    "params_from_env": "notebook:params_from_env",
    "profile_for_source": "notebook:profile_for_source",
    "workspace": "notebook:workspace",
    "ensure_sample": "notebook:ensure_sample",
    "ensure_metadata": "notebook:ensure_metadata",
    "ensure_subset": "notebook:ensure_subset",
    "ensure_run": "notebook:ensure_run",
    "local_subset": "notebook:local_subset",
    "study_posts": "notebook:study_posts",
    # settings, folders, the output vocabulary, the registries
    "SubsetConfig": "config:SubsetConfig",
    "TrainConfig": "config:TrainConfig",
    "subset_config": "config:subset_config",
    "train_config": "config:train_config",
    "data_home": "config:data_home",
    "SubsetFolder": "folders:SubsetFolder",
    "RunFolder": "folders:RunFolder",
    "write_json_atomic": "folders:write_json_atomic",
    "category_name": "vocab:category_name",
    "n_ratings": "vocab:n_ratings",
    "tag_rows": "vocab:tag_rows",
    "BACKBONES": "registry:BACKBONES",
    "LOSSES": "registry:LOSSES",
    "POLICIES": "registry:POLICIES",
    "metrics": "metrics",
    # 1. data
    "generate_sample": "data.sample:generate",
    "load_posts": "data.danbooru:load_posts",
    "mirror": "data.mirror",
    "build_subset": "data.subset:build_subset",
    "read_subset": "data.subset:read_subset",
    "kept_tags": "data.subset:kept_tags",
    "label_matrix": "data.subset:label_matrix",
    "tag_vocabulary": "data.subset:tag_vocabulary",
    "peek": "data.shards:peek",
    "ImageError": "data.images:ImageError",
    "load_array": "data.images:load_array",
    "tag_stats": "data.tag_stats",
    # 2. model
    "build_model": "model.architecture:build_model",
    "stage_table": "model.architecture:stage_table",
    "ResNetSettings": "model.architecture:ResNetSettings",
    "resnet_features": "model.architecture:resnet_features",
    "policies": "model.policies",
    # 3. training
    "train": "training.fit:train",
    "require_accelerator": "training.runtime:require_accelerator",
    # 4. tagging
    "Tagger": "tagging.tagger:Tagger",
    "TagChoice": "tagging.tagger:TagChoice",
    "tag_paths": "tagging.tagger:tag_paths",
    "find_images": "tagging.tagger:find_images",
    "export_run": "tagging.export:export_run",
    "export_unavailable": "tagging.export:export_unavailable",
    "serve_app": "app:serve",
    # 5. evaluation
    "evaluate": "evaluation.evaluate:evaluate",
    "predict_split": "evaluation.evaluate:predict_split",
    "comparison_table": "evaluation.evaluate:comparison_table",
    "policy_table": "evaluation.evaluate:policy_table",
    "LOSS_SWEEP": "evaluation.published:LOSS_SWEEP",
    "compare": "evaluation.compare:compare",
    "compare_table": "evaluation.compare:compare_table",
    "stand_in_taggers": "evaluation.compare:stand_in_taggers",
    "leakage_table": "evaluation.leakage:leakage_table",
    "random_split_twin": "evaluation.leakage:random_split_twin",
    "ablation": "evaluation.ablation",
    "teach_study": "evaluation.teach_study",
    "plots": "evaluation.plots",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    """A public name, loaded from its module on first use."""
    target = _PUBLIC.get(name)
    if target is None:
        raise AttributeError(f"module 'animetag' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    obj = importlib.import_module(f"{__name__}.{module}")
    if attr:
        obj = getattr(obj, attr)
    globals()[name] = obj
    return obj


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))

def _keras_json_backend() -> str | None:
    """The backend named in Keras' own config file ($KERAS_HOME/keras.json or
    ~/.keras/keras.json), which Keras reads when KERAS_BACKEND is unset."""
    home = _os.environ.get("KERAS_HOME") or _os.path.join(_os.path.expanduser("~"), ".keras")
    try:
        with open(_os.path.join(home, "keras.json"), encoding="utf-8") as f:
            return _json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


def _default_to_jax_without_tensorflow() -> None:
    """Keras falls back to TensorFlow when nothing names a backend, and then fails at its
    import where only JAX is installed (Colab's TPU runtimes, a GPU machine with JAX). There,
    and only there, importing animetag first makes JAX the backend. KERAS_BACKEND still wins,
    and so does a backend other than TensorFlow in keras.json (Keras writes TensorFlow there
    by itself at its first import)."""
    if "keras" in _sys.modules or _os.environ.get("KERAS_BACKEND") or \
            _keras_json_backend() not in (None, "tensorflow"):
        return
    try:
        if importlib.util.find_spec("tensorflow") is None and importlib.util.find_spec("jax") is not None:
            _os.environ["KERAS_BACKEND"] = "jax"
    except (ImportError, ValueError):
        pass


_default_to_jax_without_tensorflow()

# TensorFlow's C++ log lines (oneDNN notices, dataset buffer sizes, CUDA factory registration)
# say nothing a user acts on, and in a notebook one of them looks like an error. Level 3 keeps
# them out; errors still raise in Python. Set TF_CPP_MIN_LOG_LEVEL yourself to see them.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# TensorFlow's C++ log lines in abseil's format (`E0000 00:00:1796458417.825591  5845
# util.cc:131] ...`) and the notice abseil writes before its log is set up. Fatal (F) lines
# are never held back: they come right before a crash.
_NATIVE_LOG = _re.compile(rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.-]+:\d+\] |"
                         rb"WARNING: All log messages before absl::InitializeLog\(\) is called)")


def native_log_path() -> _os.PathLike | None:
    """Where a notebook kernel's TensorFlow C++ log lines go instead of cell outputs (None
    outside a notebook, or before the first line)."""
    return _NATIVE_LOG_FILE


_NATIVE_LOG_FILE = None


def _hold_back_native_logs() -> None:
    """In a notebook kernel, keep TensorFlow's C++ log lines out of the cell outputs, whatever
    TF_CPP_MIN_LOG_LEVEL says: file descriptor 2 (where TensorFlow, and the worker processes
    the kernel starts, write them) becomes a pipe whose reader appends those lines to a log
    file in the temporary folder (`native_log_path()`) and passes every other byte on to
    where descriptor 2 went before. Errors that matter still raise in Python."""
    global _NATIVE_LOG_FILE
    _sys.stderr.flush()
    before = _os.dup(2)
    read_end, write_end = _os.pipe()
    _os.dup2(write_end, 2)
    _os.close(write_end)
    _NATIVE_LOG_FILE = _Path(_tempfile.gettempdir()) / f"animetag-native-log-{_os.getpid()}.txt"

    def pass_on(data: bytes) -> None:
        while data:
            data = data[_os.write(before, data):]

    def pump() -> None:
        pending = b""
        try:
            with open(_NATIVE_LOG_FILE, "ab") as log:
                while chunk := _os.read(read_end, 65536):
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        if _NATIVE_LOG.match(line):
                            log.write(line + b"\n")
                            log.flush()
                        else:
                            pass_on(line + b"\n")
                    # a partial line (a progress bar's) is held until its newline only while it
                    # may still turn out to be a log line
                    if pending and (pending[:1] not in (b"I", b"W", b"E") or
                                    (len(pending) > 100 and not _NATIVE_LOG.match(pending))):
                        pass_on(pending)
                        pending = b""
        except OSError:  # the log file cannot be written (a full disk): descriptor 2 as it was,
            _os.dup2(before, 2)  # so that no writer ever blocks on a pipe nobody reads
            pass_on(pending)
            while chunk := _os.read(read_end, 65536):  # what is already in the pipe, passed on
                pass_on(chunk)
            return
        pass_on(pending)

    thread = _threading.Thread(target=pump, name="animetag-native-log", daemon=True)
    thread.start()

    def restore() -> None:  # at exit: descriptor 2 as it was, and the last lines passed on
        _os.dup2(before, 2)
        thread.join(timeout=2)

    _atexit.register(restore)


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
    _hold_back_native_logs()
    _import_tensorflow_quietly()
