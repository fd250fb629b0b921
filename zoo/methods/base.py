"""The base `keras.Model` of every training method: an encoder, its published `embedder`, serialisation."""

import copy

import keras
import numpy as np
from keras import ops

from zoo.backbones import embedder_from
from zoo.distributed import gather, replica_share
from zoo.ops import l2_normalize


def default_jit_compile():
    """What `jit_compile="auto"` means for the zoo's methods: XLA, except on TensorFlow with only CPUs.

    Chosen by measurement on a 2-core AVX2 CPU (the peers' conv4 workload with `jit_compile` True and False
    side by side: `python benchmarks/training.py --peers --zoo-xla`): on the TensorFlow CPU backend XLA's
    convolutions and their gradients were slower than TensorFlow's own kernels, and XLA cannot use the fused
    batch-norm kernel (zoo.backbones.FusedBatchNormalization), so Keras' "auto" (XLA on) made fit() slower,
    most at semi-hard B=512. On JAX, XLA is the only compiled path; on a TensorFlow GPU or TPU this
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
    a wait seen in stack traces of the peers' workload (`benchmarks/training.py --peers`: 30 steps per
    `fit()`), where it weighs most. Keras' adapter gathers on parallel threads; one gather per batch here is a copy of a
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


_NO_SAMPLE_WEIGHTS = ("{} weighs every sample of its loss alike: fit it without sample_weight= or class_weight= "
                      "(for class balance, draw the batches so, e.g. with zoo.data.samplers.PKSampler)")


class _Untracked:
    """A plain holder of models that Keras neither tracks nor saves (the published models a method builds)."""

    def __init__(self):
        self.models = {}


@keras.saving.register_keras_serializable(package="zoo")
class EmbeddingMethod(keras.Model):
    """A training method around an encoder; `embedder` (encoder + L2 norm) is what gets published.

    Subclasses hold their training-only heads as further sub-models, list the config keys that
    are layers in `NESTED` (they are serialised and rebuilt by `get_config`/`from_config`), and
    express their objective in `call` and `objective` with `keras.ops` only, so the same `fit()`
    runs on TensorFlow, JAX and torch. Every sub-model is built in `__init__`, so a `.keras`
    file restores all weights without a forward pass.

    The loss is the method's own: `compute_loss` hands `objective` the batch's targets and
    `call`'s outputs (for an in-batch objective, `IN_BATCH`, those of the global batch on N
    replicas), adds the layers' regularisation losses and takes this replica's share. So
    `compile(loss=...)` and `fit(sample_weight=...)` are refused rather than ignored.

    Args:
        encoder: keras.Model. Raw inputs (e.g. `images`, float32 0..255) -> (B, F) features.
    """

    NESTED = ("encoder",)
    # Whether the objective couples the rows of a batch (in-batch negatives, mining, batch statistics): on N
    # replicas it then sees the global batch (zoo.distributed.gather); otherwise each replica averages its own
    # rows, and the replicas' shares add up to the mean over the global batch.
    IN_BATCH = True

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
        """keras.Model: raw inputs -> (B, D) L2-normalised embeddings, sharing the encoder's weights; built once."""
        return self.published("embedder", self.build_embedder)

    def build_embedder(self):
        """A new `embedder` (subclasses whose published model is not encoder + L2 norm override this)."""
        return embedder_from(self.encoder, name=f"{self.name}_embedder")

    def published(self, key, build):
        """`build()`'s model, made on the first call for `key` and returned again after.

        Made again only where Keras' global dtype policy has changed since: after a mixed-precision fit,
        `zoo.recipe.to_float32` turns the method's layers and the policy to float32, and the model evaluated and
        exported then must hold no layer made, or function traced, under the 16-bit policy.
        """
        cache = self.__dict__.get("_published_models")
        if cache is None:
            # Not a tracked attribute: Keras would count the shared weights again and save them twice.
            cache = _Untracked()
            object.__setattr__(self, "_published_models", cache)
        policy = keras.config.dtype_policy().name
        if key not in cache.models or cache.models[key][0] != policy:
            cache.models[key] = (policy, build())
        return cache.models[key][1]

    def embed(self, inputs, training=False):
        """(B, ...) raw inputs -> (B, F) L2-normalised float32 embeddings."""
        return l2_normalize(ops.cast(self.encoder(inputs, training=training), "float32"))

    def call(self, inputs, training=False):
        return self.embed(inputs, training=training)

    def build(self, input_shape=None):
        # Everything is built in __init__; Keras calls this when loading a .keras file.
        self.built = True

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, *args, jit_compile="auto", **kwargs):
        """`keras.Model.compile`, where `jit_compile="auto"` is `default_jit_compile()`; an explicit value wins.

        Raises:
            ValueError: `loss` or `loss_weights` given: the method computes its own loss, set by its arguments.
        """
        if loss is not None or loss_weights is not None:
            raise ValueError(f"{type(self).__name__} computes its own loss: compile it without loss= or "
                             "loss_weights= (the loss and its options are the method's arguments, e.g. "
                             "MetricLearning(encoder, loss='multi_similarity'))")
        super().compile(optimizer, None, None, *args,
                        jit_compile=default_jit_compile() if jit_compile == "auto" else jit_compile, **kwargs)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, **kwargs):
        """`keras.Model.fit`; on TensorFlow, numpy arrays are batched by `array_dataset` (no tf.data autotuning).

        Only where the batches are then exactly Keras' own: `x` (and `y`, `validation_data`) numpy arrays,
        `shuffle` True or False, no `validation_split` or `steps_per_epoch`. Anything else goes to Keras unchanged.

        Raises:
            ValueError: `sample_weight` or `class_weight` given: the method's loss weighs no sample.
        """
        if sample_weight is not None or class_weight is not None:
            raise ValueError(_NO_SAMPLE_WEIGHTS.format(type(self).__name__))
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

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """A batch's training objective: `objective(y, y_pred)` and the regularisation losses, this replica's share.

        For an `IN_BATCH` objective, on N TensorFlow replicas `y` and every tensor of `y_pred` are gathered first
        (`zoo.distributed.gather`, in replica order, the gradient flowing back to each replica's rows), so every
        replica computes the global batch's objective; on one device and on JAX they are the batch already.
        """
        if sample_weight is not None:
            raise ValueError(_NO_SAMPLE_WEIGHTS.format(type(self).__name__))
        if self.IN_BATCH:
            y, y_pred = (keras.tree.map_structure(lambda t: None if t is None else gather(t), part)
                         for part in (y, y_pred))
        return self.regularized(self.objective(y, y_pred))

    def objective(self, y, y_pred):
        """float32 scalar loss of a batch from its targets `y` (or None) and `call`'s outputs `y_pred`."""
        raise NotImplementedError(f"{type(self).__name__} must define objective(y, y_pred)")

    def regularized(self, loss):
        """This replica's share of `loss` plus the layers' regularisation losses (what Keras' default
        compute_loss adds): all of it on one device and on JAX, 1/N of it on N TensorFlow replicas, whose
        gradients Keras sums (`zoo.distributed.replica_share`). `compute_loss` returns through here."""
        extra = self.losses
        loss = loss + ops.sum(ops.stack([ops.cast(l, "float32") for l in extra])) if extra else loss
        return replica_share(loss)

    def get_config(self):
        config = super().get_config()  # name, trainable, dtype (policy)
        for key in self.NESTED:
            config[key] = keras.saving.serialize_keras_object(getattr(self, key))
        return config

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # deserialising a Functional config empties it: leave the caller's intact
        for key in cls.NESTED:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
