"""animetag: train and study multi-label Danbooru taggers (ResNet-SE, focal loss).

The public surface: `from animetag import build_subset, train, evaluate, Tagger, ...`. Each
name below is loaded from its stage when first used (so `import animetag` loads neither
Keras nor TensorFlow), and keeps working when a module moves inside the package. The
stages, in the order data flows (each imports only those before it): `data`, `model`,
`training`, `tagging`, `evaluation`; under them the foundation every stage uses (`config`,
`settings`, `registry`, `vocab`, `metrics`, `folders`, `locks`); over them the entry
modules (`cli`, `notebook`, `colab`).
"""

import importlib
import importlib.util
import os as _os
import sys as _sys

__version__ = "0.1.0"

# public name -> "module" (a module itself) or "module:attribute"
_PUBLIC = {
    # the notebooks' side: environment checks, form fields, the workspace and its prerequisites
    "check_versions": "colab:check_versions",
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
    "require_accelerator": "training.devices:require_accelerator",
    # 4. tagging
    "Tagger": "tagging.tagger:Tagger",
    "TagChoice": "tagging.tagger:TagChoice",
    "tag_paths": "tagging.tagger:tag_paths",
    "find_images": "tagging.tagger:find_images",
    "export_run": "tagging.export:export_run",
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
