"""The base `keras.Model` of every training method: an encoder, its published `embedder`, serialisation."""

import copy

import keras
import numpy as np
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


def array_dataset(x, y=None, batch_size=None, shuffle=True):
    """numpy arrays -> the `tf.data.Dataset` of batches Keras' `fit()` makes of them, without tf.data autotuning.

    The same batches as Keras' own array adapter (one permutation of the rows per pass, or their order with
    `shuffle=False`; the last batch partial; rows gathered per batch from the arrays held once), but with
    autotuning off: on TensorFlow 2.21 the iterator of Keras' pipeline, whose parallel map is autotuned,
    waits at its deletion (the end of every `fit()` with arrays) for the autotuning thread's next wake-up,
    a wait seen in stack traces of the peers' workload (../shared/bench/peers: 30 steps per `fit()`), where
    it weighs most. Keras' adapter gathers on parallel threads; one gather per batch here is a copy of a
    batch, small beside a training step.

    Args:
        x: numpy array, or a tuple / list / dict of them. the inputs, rows first.
        y: numpy array or None. the targets.
        batch_size: int or None. rows per batch (None: 32, as Keras).
        shuffle: bool. a new permutation of the rows on every pass, else their order.

    Returns:
        tf.data.Dataset of `x` batches, or of `(x, y)` batches.
    """
    import tensorflow as tf  # fit() on the TensorFlow backend: its input pipeline is tf.data

    floatx = keras.config.floatx()  # Keras casts every other float dtype to floatx
    data = keras.tree.lists_to_tuples(x if y is None else (x, y))
    if y is None and isinstance(data, tuple):
        data = (data,)  # as Keras packs it: a tuple of inputs alone would read as (x, y)
    data = keras.tree.map_structure(lambda a: a.astype(floatx) if a.dtype.kind == "f" and a.dtype != floatx else a, data)
    rows = len(keras.tree.flatten(data)[0])
    batch_size = int(batch_size or 32)

    def order(_):
        indices = tf.range(rows, dtype=tf.int64)
        return tf.random.shuffle(indices) if shuffle else indices

    full = rows % batch_size == 0  # every batch full: a static batch dimension, as Keras gives
    batches = tf.data.Dataset.range(1).map(order).flat_map(
        lambda indices: tf.data.Dataset.from_tensor_slices(indices).batch(batch_size, drop_remainder=full))
    dataset = tf.data.Dataset.zip((batches, tf.data.Dataset.from_tensors(data).repeat()))
    dataset = dataset.map(lambda indices, arrays: keras.tree.map_structure(lambda a: tf.gather(a, indices), arrays))
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-rows // batch_size))).prefetch(1)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)


def _arrays(data):
    """Whether `data` is a numeric numpy array, or a tuple / list / dict of them, all with the same number (> 0) of rows."""
    leaves = keras.tree.flatten(data)
    return (bool(leaves) and all(isinstance(a, np.ndarray) and a.ndim >= 1 and a.dtype.kind in "biuf" for a in leaves)
            and len({len(a) for a in leaves}) == 1 and len(leaves[0]) > 0)


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

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, **kwargs):
        """`keras.Model.fit`; on TensorFlow, numpy arrays are batched by `array_dataset` (no tf.data autotuning).

        Only where the batches are then exactly Keras' own: `x` (and `y`, `validation_data`) numpy arrays,
        `shuffle` True or False, no `validation_split`, `sample_weight`, `class_weight` or `steps_per_epoch`.
        Anything else goes to Keras unchanged.
        """
        if (keras.backend.backend() == "tensorflow" and _arrays(x if y is None else (x, y))
                and shuffle in (True, False) and not validation_split and class_weight is None
                and sample_weight is None and kwargs.get("steps_per_epoch") is None):
            x, y = array_dataset(x, y, batch_size, shuffle), None
            if isinstance(validation_data, tuple) and len(validation_data) == 2 and _arrays(validation_data):
                validation_data = array_dataset(*validation_data, kwargs.pop("validation_batch_size", None)
                                                or batch_size, shuffle=False)
            batch_size, shuffle = None, False  # the dataset draws its own permutation per pass (Keras warns otherwise)
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
                           validation_split=validation_split, validation_data=validation_data, shuffle=shuffle,
                           class_weight=class_weight, sample_weight=sample_weight, **kwargs)

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
