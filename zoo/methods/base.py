"""The base `keras.Model` of every training method: an encoder, its published `embedder`, serialisation."""

import copy

import keras
from keras import ops

from zoo.backbones import embedder_from
from zoo.ops import l2_normalize


@keras.saving.register_keras_serializable(package="zoo")
class EmbeddingMethod(keras.Model):
    """A training method around an encoder; `embedder` (encoder + L2 norm) is what gets published.

    Subclasses hold their training-only heads as further sub-models, list the config keys that
    are layers in `NESTED` (they are serialised and rebuilt by `get_config`/`from_config`), and
    express their objective in `call`/`compute_loss` with `keras.ops` only, so the same `fit()`
    runs on TensorFlow, JAX and torch. Every sub-model is built in `__init__`, so a `.keras`
    file restores all weights without a forward pass.

    Args:
        encoder: keras.Model. Raw inputs (e.g. `images`, float32 0..255) -> (B, F) features.
    """

    NESTED = ("encoder",)

    def __init__(self, encoder, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(encoder, keras.Model) or not encoder.built:
            raise ValueError(f"encoder must be a built keras.Model (e.g. zoo.backbones.conv4()), got {encoder!r}")
        self.encoder = encoder
        self.built = True  # subclasses build their heads in __init__ too (BackupAndRestore needs a built model)

    @property
    def feature_dim(self):
        return int(self.encoder.output_shape[-1])

    @property
    def embedder(self):
        """keras.Model: raw inputs -> (B, D) L2-normalised embeddings, sharing the encoder's weights."""
        return embedder_from(self.encoder, name=f"{self.name}_embedder")

    def embed(self, inputs, training=False):
        """(B, ...) raw inputs -> (B, F) L2-normalised float32 embeddings."""
        return l2_normalize(ops.cast(self.encoder(inputs, training=training), "float32"))

    def call(self, inputs, training=False):
        return self.embed(inputs, training=training)

    def build(self, input_shape=None):
        # Everything is built in __init__; Keras calls this when loading a .keras file.
        self.built = True

    def regularized(self, loss):
        """`loss` plus the layers' regularisation losses (what Keras' default compute_loss adds)."""
        extra = self.losses
        return loss + ops.sum(ops.stack([ops.cast(l, "float32") for l in extra])) if extra else loss

    def get_config(self):
        config = {"name": self.name}
        for key in self.NESTED:
            config[key] = keras.saving.serialize_keras_object(getattr(self, key))
        return config

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # deserialising a Functional config empties it: leave the caller's intact
        for key in cls.NESTED:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
