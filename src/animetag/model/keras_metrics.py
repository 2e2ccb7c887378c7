"""The Keras metrics logged while training: for a model whose first `n_ratings` outputs are the
rating head, the tag metrics skip those columns, and the rating accuracy reads only them."""

from __future__ import annotations

import keras
from keras import ops


class _AfterRatings:
    """A Keras metric's update over the columns after the first `skip` (the tag columns)."""

    def __init__(self, skip: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.skip = int(skip)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true[..., self.skip:], y_pred[..., self.skip:], sample_weight)

    def get_config(self):
        return {**super().get_config(), "skip": self.skip}


@keras.saving.register_keras_serializable(package="animetag")
class TagF1Score(_AfterRatings, keras.metrics.F1Score):
    """Keras' F1Score over the tag columns."""


@keras.saving.register_keras_serializable(package="animetag")
class TagAUC(_AfterRatings, keras.metrics.AUC):
    """Keras' AUC over the tag columns."""


@keras.saving.register_keras_serializable(package="animetag")
class RatingAccuracy(keras.metrics.Metric):
    """Share of rated images whose highest rating score is their rating (the first `n`
    columns); images without a rating (an all-zero row) and zero-weight padding count not."""

    def __init__(self, n: int = 4, name: str = "rating_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.n = int(n)
        self.hits = self.add_variable(shape=(), initializer="zeros", name="hits")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y = ops.cast(y_true[..., : self.n], "float32")
        p = ops.cast(y_pred[..., : self.n], "float32")
        rated = ops.sum(y, axis=-1)
        if sample_weight is not None:
            rated = rated * ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(rated))
        hit = ops.cast(ops.equal(ops.argmax(y, axis=-1), ops.argmax(p, axis=-1)), "float32")
        self.hits.assign_add(ops.sum(hit * rated))
        self.count.assign_add(ops.sum(rated))

    def result(self):
        return ops.divide_no_nan(self.hits, self.count)

    def reset_state(self):
        self.hits.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "n": self.n}


def training_metrics(n_tags: int, n_ratings: int = 0) -> list:
    """F1-micro and F1-macro at threshold 0.5 and PR-AUC (macro), over the tag columns, and
    with a rating head the rating accuracy (posts without a rating left out).

    `threshold=0.5` matters: with None, Keras' F1Score marks only each row's top tag."""
    if not n_ratings:
        return [
            keras.metrics.F1Score(average="micro", threshold=0.5, name="f1_micro"),
            keras.metrics.F1Score(average="macro", threshold=0.5, name="f1_macro"),
            keras.metrics.AUC(curve="PR", multi_label=True, num_labels=n_tags, name="pr_auc"),
        ]
    return [
        TagF1Score(n_ratings, average="micro", threshold=0.5, name="f1_micro"),
        TagF1Score(n_ratings, average="macro", threshold=0.5, name="f1_macro"),
        TagAUC(n_ratings, curve="PR", multi_label=True, num_labels=n_tags, name="pr_auc"),
        RatingAccuracy(n_ratings, name="rating_accuracy"),
    ]
