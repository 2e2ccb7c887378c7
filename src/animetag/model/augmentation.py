"""Training-time augmentation as a Keras layer that runs inside the training step, on the
accelerator: the host only moves uint8 pixels.

The layer sits in front of the model only while training (see `training.compile.training_model`); the
portable `model.keras` never contains it. It is written in `keras.ops`, so it compiles under
XLA and runs under any Keras backend.
"""

from __future__ import annotations

import keras
from keras import ops

from animetag.config import AugmentConfig

# ITU-R BT.601 luma weights, for the saturation blend with the grey image
_LUMA = (0.299, 0.587, 0.114)


def _replica_offset():
    """The replica's index under tf.distribute (0 elsewhere), so replicas draw different numbers."""
    if keras.backend.backend() != "tensorflow":
        return 0
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    return 0 if ctx is None else ctx.replica_id_in_sync_group


@keras.saving.register_keras_serializable(package="animetag")
class Augment(keras.layers.Layer):
    """Per image: horizontal flip, an integer translation with a white border, brightness,
    contrast and saturation jitter; values stay 0-255. Identity (a cast to float32) when not
    training. Input: a batch of images, uint8 or float, 0-255, NHWC."""

    def __init__(self, flip: bool = True, crop: float = 0.1, brightness: float = 0.1, contrast: float = 0.1,
                 saturation: float = 0.1, seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # never in float16/bfloat16: 0-255 must stay exact
        super().__init__(**kwargs)
        self.flip, self.crop = bool(flip), float(crop)
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @classmethod
    def from_settings(cls, cfg: AugmentConfig, seed: int | None = None, **kwargs) -> Augment:
        return cls(cfg.flip, cfg.crop, cfg.brightness, cfg.contrast, cfg.saturation, seed=seed, **kwargs)

    def _uniform(self, shape, low=0.0, high=1.0):
        if keras.backend.backend() != "tensorflow":
            return keras.random.uniform(shape, low, high, seed=self.seed_generator)
        import tensorflow as tf

        # under tf.distribute every replica reads the same generator state: fold the replica's
        # index into the seed, or each replica would draw the same numbers for its images
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        replica = _replica_offset()
        if not (isinstance(replica, int) and replica == 0):
            seed = seed + tf.stack([tf.constant(0, tf.int64), tf.cast(replica, tf.int64) * 7919])
        return tf.random.stateless_uniform(shape, seed, low, high, dtype=tf.float32)

    def call(self, images, training=None):
        x = ops.cast(images, "float32")
        if not training:
            return x
        n, h, w = ops.shape(x)[0], x.shape[1], x.shape[2]
        if self.flip:
            x = ops.where(self._uniform((n, 1, 1, 1)) < 0.5, ops.flip(x, axis=2), x)
        pad = int(round(self.crop * max(h, w)))
        if pad > 0:
            x = self._translate(x, n, h, w, pad)
        if self.brightness > 0:
            x = x + self._uniform((n, 1, 1, 1), -self.brightness, self.brightness) * 255.0
        if self.contrast > 0:
            mean = ops.mean(x, axis=(1, 2), keepdims=True)
            x = (x - mean) * self._uniform((n, 1, 1, 1), 1.0 - self.contrast, 1.0 + self.contrast) + mean
        if self.saturation > 0:
            grey = ops.sum(x * ops.convert_to_tensor(_LUMA, "float32"), axis=-1, keepdims=True)
            x = grey + (x - grey) * self._uniform((n, 1, 1, 1), 1.0 - self.saturation, 1.0 + self.saturation)
        return ops.clip(x, 0.0, 255.0)

    def _translate(self, x, n, h, w, pad):
        """Shift each image by whole pixels, up to `pad` each way, filling with white."""
        shift = ops.floor(self._uniform((n, 2), 0.0, 2.0 * pad + 1.0)) - pad  # integers in [-pad, pad]
        shift = ops.cast(ops.minimum(shift, pad), "int32")
        xp = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=255.0)
        rows = ops.arange(h, dtype="int32")[None, :] + pad - shift[:, :1]  # (n, h)
        cols = ops.arange(w, dtype="int32")[None, :] + pad - shift[:, 1:]  # (n, w)
        if keras.backend.backend() == "tensorflow":  # a batched gather: no image-sized index
            import tensorflow as tf

            return tf.gather(tf.gather(xp, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
        xp = ops.take_along_axis(xp, ops.broadcast_to(rows[:, :, None, None], (n, h, w + 2 * pad, 3)), axis=1)
        return ops.take_along_axis(xp, ops.broadcast_to(cols[:, None, :, None], (n, h, w, 3)), axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "flip": self.flip, "crop": self.crop, "brightness": self.brightness,
                "contrast": self.contrast, "saturation": self.saturation, "seed": self.seed}
