"""The optimizer: AdamW that leaves batch-norm scales and shifts and biases undecayed, and
keeps that choice through `model.keras` (Keras' own exclusion list is not saved)."""

from __future__ import annotations

import keras

NO_DECAY = ("gamma", "beta", "bias")  # Keras 3 variable names (BN scale and shift, biases)


@keras.saving.register_keras_serializable(package="animetag")
class AdamW(keras.optimizers.AdamW):
    """keras.optimizers.AdamW with `no_decay`: variable names excluded from weight decay."""

    def __init__(self, no_decay: tuple[str, ...] | list[str] = NO_DECAY, **kwargs):
        super().__init__(**kwargs)
        self.no_decay = tuple(no_decay)
        if self.no_decay:
            self.exclude_from_weight_decay(var_names=list(self.no_decay))

    def get_config(self):
        return {**super().get_config(), "no_decay": list(self.no_decay)}
