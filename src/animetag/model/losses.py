"""Losses for multi-label tagging: focal loss (the thesis's), binary cross-entropy, and the
asymmetric loss. Each averages over tags and images, so their values are comparable."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import ops

from animetag.config import TrainConfig
from animetag.registry import LOSSES
from animetag.settings import FRACTION, NON_NEGATIVE, check


@keras.saving.register_keras_serializable(package="animetag")
class AsymmetricLoss(keras.losses.Loss):
    """Asymmetric loss (Ridnik et al., "Asymmetric Loss For Multi-Label Classification",
    arXiv 2009.14119):

        L+ = (1 - p)^gamma_pos * log(p)
        L- = p_m^gamma_neg * log(1 - p_m),  p_m = max(p - clip, 0)
        L  = -mean over tags of [y L+ + (1 - y) L-]

    Negatives that are easy (p below `clip`) are discarded and the rest down-weighted,
    which suits under-tagged data: a missing tag is a negative the model need not fight.
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05,
                 eps: float = 1e-7, name: str = "asymmetric_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        p = ops.clip(y_pred, self.eps, 1.0 - self.eps)
        p_m = ops.maximum(p - self.clip, 0.0) if self.clip > 0 else p
        loss_pos = y_true * ops.power(1.0 - p, self.gamma_pos) * ops.log(p)
        loss_neg = (1.0 - y_true) * ops.power(p_m, self.gamma_neg) * ops.log(ops.clip(1.0 - p_m, self.eps, 1.0))
        return -ops.mean(loss_pos + loss_neg, axis=-1)

    def get_config(self):
        return {**super().get_config(), "gamma_neg": self.gamma_neg, "gamma_pos": self.gamma_pos,
                "clip": self.clip, "eps": self.eps}


@keras.saving.register_keras_serializable(package="animetag")
class WithRating(keras.losses.Loss):
    """The tag loss on the tag columns plus `weight` x the rating head's cross-entropy on
    the first `n_ratings` columns (softmax scores, one-hot labels).

    A post without a rating has an all-zero rating row, so its cross-entropy is zero: it
    trains the tags and leaves the rating head alone. By default the rating head is a linear
    probe (its gradient stops at the pooled features), so the weight only scales the head's
    own gradient. Trained jointly (`rating_joint`), the weight decides how much the rating
    shapes the shared features: the cross-entropy of one 4-way choice starts near 1.2 while
    the focal loss, a mean over a hundred mostly easy tags, is a few hundredths."""

    def __init__(self, tag_loss, n_ratings: int = 4, weight: float = 0.05, eps: float = 1e-7,
                 name: str = "tags_and_rating", **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(tag_loss, dict):
            tag_loss = keras.saving.deserialize_keras_object(tag_loss)
        self.tag_loss, self.n_ratings, self.weight, self.eps = tag_loss, int(n_ratings), float(weight), eps

    def call(self, y_true, y_pred):
        r = self.n_ratings
        y_true = ops.cast(y_true, y_pred.dtype)
        tags = self.tag_loss.call(y_true[..., r:], y_pred[..., r:])
        ce = -ops.sum(y_true[..., :r] * ops.log(ops.clip(y_pred[..., :r], self.eps, 1.0)), axis=-1)
        return tags + self.weight * ce

    def get_config(self):
        return {**super().get_config(), "tag_loss": keras.saving.serialize_keras_object(self.tag_loss),
                "n_ratings": self.n_ratings, "weight": self.weight, "eps": self.eps}


def make_loss(cfg: TrainConfig, n_ratings: int = 0) -> keras.losses.Loss:
    """The loss a run's settings ask for (a name in `registry.LOSSES`, with its own settings
    `cfg.loss_settings`), with the rating head's term when the model has one."""
    settings = LOSSES.settings(cfg.loss, cfg.loss_settings, "loss_settings.")
    loss = LOSSES.get(cfg.loss)(*([settings] if settings is not None else []))
    return WithRating(loss, n_ratings, cfg.rating_loss_weight) if n_ratings else loss


# -- the registered losses: each returns a Keras loss whose `call` gives one value per image --

@dataclass
class FocalSettings:
    alpha: float = 0.25  # the positives' weight (negatives 1 - alpha)
    gamma: float = 2.0  # how much easy examples are down-weighted

    def __post_init__(self) -> None:
        check(self, "", {"alpha": FRACTION, "gamma": NON_NEGATIVE})


@LOSSES.register("focal", settings=FocalSettings)
def focal(settings: FocalSettings):
    """Focal loss with alpha balancing, the thesis's: FL = -alpha_t (1 - p_t)^gamma log(p_t)."""
    return keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=settings.alpha,
                                                gamma=settings.gamma, name="focal_loss")


@LOSSES.register("bce")
def bce():
    """Binary cross-entropy, averaged over tags (ahead of focal loss in SmilingWolf's sweep)."""
    return keras.losses.BinaryCrossentropy(name="bce")


@dataclass
class AsymmetricSettings:
    gamma_neg: float = 4.0
    gamma_pos: float = 0.0
    clip: float = 0.05  # negatives scored below it are discarded

    def __post_init__(self) -> None:
        check(self, "", {"gamma_neg": NON_NEGATIVE, "gamma_pos": NON_NEGATIVE, "clip": (0, 1, True, False)})


@LOSSES.register("asl", settings=AsymmetricSettings)
def asl(settings: AsymmetricSettings):
    """Asymmetric loss (Ridnik et al.): easy negatives discarded, for under-tagged data."""
    return AsymmetricLoss(settings.gamma_neg, settings.gamma_pos, settings.clip)
