"""What is trained and how it is compiled: the training model (augmentation in front of the
tagger), AdamW with its learning-rate schedule, the loss and the metrics.

Keras only (no TensorFlow import), so the step benchmark runs it under any Keras backend.
"""

from __future__ import annotations

from dataclasses import replace

import keras

from animetag.config import TrainConfig
from animetag.model.augmentation import Augment
from animetag.model.keras_metrics import training_metrics  # its classes registered for load_model
from animetag.model.losses import make_loss
from animetag.model.optimizer import AdamW
from animetag.registry import BACKBONES, LOSSES, json_dict


def lr_schedule(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up to cfg.lr, then cosine decay to zero by the last step."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.lr / 100.0, decay_steps=max(1, total - warmup), alpha=0.0,
        warmup_target=cfg.lr, warmup_steps=warmup)


def compile_model(model: keras.Model, cfg: TrainConfig, n_tags: int, steps_per_epoch: int, jit: bool,
                  executions: int = 1, n_ratings: int = 0) -> None:
    """`n_tags` tag outputs, after `n_ratings` rating outputs when the model has a rating head."""
    opt = AdamW(learning_rate=lr_schedule(cfg, steps_per_epoch), weight_decay=cfg.weight_decay)
    # weighted_metrics: the metrics that take sample weights (the zero-weight padding of the
    # last validation batch); `metrics=` would count the padding as images
    model.compile(optimizer=opt, loss=make_loss(cfg, n_ratings),
                  weighted_metrics=training_metrics(n_tags, n_ratings), jit_compile=jit,
                  steps_per_execution=executions)


def training_model(core: keras.Model, cfg: TrainConfig) -> keras.Model:
    """What is trained: uint8 images in, augmentation (active only in training, on the
    accelerator), then the tagger `core`. Only `core` is saved as the portable model.keras."""
    inputs = keras.Input(core.input_shape[1:], dtype="uint8", name="pixels")
    x = Augment.from_settings(cfg.augment, seed=cfg.seed, name="augment")(inputs)
    return keras.Model(inputs, core(x), name=f"train_{core.name}")


def core_of(model: keras.Model) -> keras.Model:
    """The tagger inside a training model (the model itself if it is one already)."""
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return inner[0] if inner else model


def with_plugin_settings(cfg: TrainConfig, older: bool = False) -> TrainConfig:
    """`cfg` with its backbone's and loss's own settings complete (their defaults where not
    given), each checked by the plug-in that owns it: an unknown name or setting fails here,
    before anything is built or written. `older`: a run recorded by an earlier version, whose
    model group held every backbone's fields; those its backbone does not own are dropped."""


    given = dict(cfg.model.settings)
    if older:
        known = set(BACKBONES.defaults(cfg.model.backbone))
        given = {k: v for k, v in given.items() if k in known}
    model = BACKBONES.settings(cfg.model.backbone, given, "model.")
    loss = LOSSES.settings(cfg.loss, cfg.loss_settings, "loss_settings.")
    return replace(cfg, model=replace(cfg.model, settings=json_dict(model) if model is not None else {}),
                   loss_settings=json_dict(loss) if loss is not None else {})
