"""The base `keras.Model` of every training method: an encoder, its published `embedder`, serialisation."""

import copy

import keras
from keras import ops

from zoo.backbones import embedder_from
from zoo.distributed import replica_share
from zoo.ops import l2_normalize


def default_jit_compile():
    """What `jit_compile="auto"` means for the zoo's methods: XLA, except on TensorFlow with only CPUs.

    Chosen by measurement on a 2-core AVX2 CPU (the peers' conv4 workload, ../shared/bench/peers, run with
    `jit_compile` True and False side by side): on the TensorFlow CPU backend XLA's convolutions and their
    gradients were slower than TensorFlow's own kernels, and XLA cannot use the fused batch-norm kernel
    (zoo.backbones.FusedBatchNormalization), so Keras' "auto" (XLA on) made fit() slower, most at semi-hard
    B=512 (issue 16 has the figures). On JAX, XLA is the only compiled path; on a TensorFlow GPU or TPU this
    keeps Keras' choice (XLA), not measured here.

    Returns:
        bool or "auto": the value handed to `keras.Model.compile`.
    """
    if keras.backend.backend() != "tensorflow":
        return "auto"
    import tensorflow as tf  # the TF backend is running: ask it for accelerators

    return "auto" if any(d.device_type != "CPU" for d in tf.config.list_physical_devices()) else False


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

    def compile(self, *args, jit_compile="auto", **kwargs):
        """`keras.Model.compile`, where `jit_compile="auto"` is `default_jit_compile()`; an explicit value wins."""
        super().compile(*args, jit_compile=default_jit_compile() if jit_compile == "auto" else jit_compile, **kwargs)

    def regularized(self, loss):
        """This replica's share of `loss` plus the layers' regularisation losses (what Keras' default
        compute_loss adds): all of it on one device and on JAX, 1/N of it on N TensorFlow replicas, whose
        gradients Keras sums (`zoo.distributed.replica_share`). Every compute_loss returns through here."""
        extra = self.losses
        loss = loss + ops.sum(ops.stack([ops.cast(l, "float32") for l in extra])) if extra else loss
        return replica_share(loss)

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
