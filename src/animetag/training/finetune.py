"""Starting a run from another run's weights (`animetag train --init-from PARENT`): the
backbone as the parent left it, the outputs of the tags both runs know carried over by name
(whatever their order), each new output starting at its prior, and the backbone frozen for
the first epochs when asked (the head learns the new tags before the features move)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from animetag.config import TrainConfig
from animetag.data.subset import label_matrix
from animetag.folders import RunFolder, SubsetFolder
from animetag.training.compile import with_plugin_settings
from animetag.vocab import n_ratings, split_outputs, tag_rows

# the layers that are the head, not the backbone: what stays trainable while it is frozen
HEAD_LAYERS = ("pool", "dropout", "tags", "rating", "rating_probe", "scores")


def _backbone_of(train: dict[str, Any]) -> dict[str, Any]:
    """A recorded run's backbone and its settings (dropout belongs to the head)."""
    cfg = with_plugin_settings(TrainConfig.from_dict(train))
    return {k: v for k, v in cfg.model.to_dict().items() if k != "dropout"}


def check_parent(parent: RunFolder, cfg: TrainConfig) -> None:
    """A parent must be a trained run with the same image size and the same backbone (and
    backbone settings): otherwise its weights do not fit, and that is said, not guessed."""
    parent.require_model()
    recorded = (parent.config or {}).get("train")
    if not recorded:
        raise ValueError(f"--init-from {parent}: no config.json with training settings; is it a run folder?")
    done, planned = int(parent.state.get("epochs_done", 0)), int(recorded.get("epochs", 0))
    if done < planned:
        raise ValueError(f"--init-from {parent}: the run is unfinished ({done} of its {planned} epochs done), so its "
                         f"model.keras is only the best of those. Finish it first (`animetag train --data SUBSET --run "
                         f"{parent}` goes on where it stopped)")
    theirs, ours = _backbone_of(recorded), {k: v for k, v in cfg.model.to_dict().items() if k != "dropout"}
    why = []
    if int(recorded.get("image_size", 0)) != cfg.image_size:
        why.append(f"image size {recorded.get('image_size')} px there, {cfg.image_size} px here")
    if theirs != ours:
        why.append(f"backbone {theirs} there, {ours} here")
    if why:
        raise ValueError(f"--init-from {parent}: its weights do not fit this run ({'; '.join(why)}); "
                         "train with the parent's image size and backbone settings")


def initialise_from(core: keras.Model, parent: RunFolder, data: SubsetFolder) -> dict[str, Any]:
    """Copies the parent's weights into `core` (the tagger about to be trained on `data`):
    every backbone layer by name; the tag outputs by tag name; a new tag's output gets a zero
    kernel and the bias at the log-odds of its frequency in `data`'s training split, so it
    starts at its prior; the rating head when both have one. Returns what config.json
    records: the parent, and which tags came from it and which are new."""
    source = parent.model
    theirs = {layer.name: layer for layer in source.layers}
    for layer in core.layers:
        other = theirs.get(layer.name)
        if layer.name in ("tags", "rating") or other is None or not layer.weights:
            continue
        w = other.get_weights()
        if [a.shape for a in w] != [v.shape for v in layer.weights]:
            raise ValueError(f"--init-from {parent}: layer {layer.name} has other shapes there "
                             f"({[a.shape for a in w]} vs {[tuple(v.shape) for v in layer.weights]})")
        layer.set_weights(w)
    names = tag_rows(data.tags)["name"].tolist()
    parent_names = tag_rows(parent.tags)["name"].tolist()
    column = {n: j for j, n in enumerate(parent_names)}
    kernel, bias = theirs["tags"].get_weights()
    manifest = data.manifest
    train = manifest["split"].to_numpy() == "train"
    y = split_outputs(label_matrix(manifest, data.tags)[train], data.n_ratings)[1]
    prior = np.clip(y.mean(0) if len(y) else np.full(len(names), 0.5), 1e-4, 1 - 1e-4)
    k_new = np.zeros((kernel.shape[0], len(names)), np.float32)
    b_new = np.log(prior / (1 - prior)).astype(np.float32)
    for j, n in enumerate(names):
        if n in column:
            k_new[:, j], b_new[j] = kernel[:, column[n]], bias[column[n]]
    core.get_layer("tags").set_weights([k_new, b_new])
    if "rating" in theirs and any(layer.name == "rating" for layer in core.layers):
        core.get_layer("rating").set_weights(theirs["rating"].get_weights())
    return {"run": str(parent.path), "image_size": int(source.input_shape[1]),
            "from_parent": [n for n in names if n in column], "new": [n for n in names if n not in column],
            "left_behind": [n for n in parent_names if n not in set(names)],
            "rating_head": "from the parent" if n_ratings(parent.tags) and data.n_ratings else "new"}


def set_backbone_trainable(core: keras.Model, trainable: bool) -> None:
    """Freeze (or free) every layer but the head; frozen batch norm also keeps its statistics."""
    for layer in core.layers:
        if layer.name not in HEAD_LAYERS and layer.weights:
            layer.trainable = trainable


def backbone_frozen(core: keras.Model) -> bool:
    return any(not layer.trainable for layer in core.layers if layer.name not in HEAD_LAYERS and layer.weights)
