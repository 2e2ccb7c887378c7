"""Metrics: Keras metrics logged while training, and numpy/scikit-learn ones for evaluation."""

from __future__ import annotations

import numpy as np


def keras_metrics(n_tags: int) -> list:
    """F1-micro and F1-macro at threshold 0.5, and PR-AUC (macro over tags).

    `threshold=0.5` matters: with None, Keras' F1Score marks only each row's top tag."""
    import keras

    return [
        keras.metrics.F1Score(average="micro", threshold=0.5, name="f1_micro"),
        keras.metrics.F1Score(average="macro", threshold=0.5, name="f1_macro"),
        keras.metrics.AUC(curve="PR", multi_label=True, num_labels=n_tags, name="pr_auc"),
    ]


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """F1-micro and F1-macro of binary predictions (a tag with no positive and no prediction
    scores 0 in the macro mean, as Keras' F1Score does)."""
    from sklearn.metrics import f1_score

    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    return {"f1_micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
            "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}


def prior_baseline(y_train: np.ndarray, y_eval: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """F1 of scoring every image with each tag's training prior: a model that learnt nothing
    from the pixels. At 0.5 it predicts exactly the tags on more than half the images."""
    prior = np.asarray(y_train, dtype=float).mean(0)
    pred = np.broadcast_to(prior >= threshold, np.shape(y_eval))
    return f1_scores(y_eval, pred)
