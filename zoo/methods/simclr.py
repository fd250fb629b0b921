"""SimCLR, and the two-view base it shares with Barlow Twins and MICLe."""

import keras
from keras import ops

from zoo.backbones import projection_head
from zoo.distributed import on_global_batch
from zoo.losses import nt_xent
from zoo.methods.base import EmbeddingMethod


@keras.saving.register_keras_serializable(package="zoo")
class TwoViewMethod(EmbeddingMethod):
    """Two augmented views of each image, encoded and projected; subclasses give the `view_objective`.

    Training batches are `(x_a, x_b)` pairs of raw images (zoo.data.samplers.TwoViewSampler;
    x_b is x_a, or another image of the same group for MICLe). The model draws each view's
    augmentation itself (`augment(x, training=True)` in `call`), so `fit()` is the same on every
    backend. The augmentation pipeline and the projector are used in training only: `embedder`
    is the encoder followed by L2 normalisation.

    Args:
        encoder: keras.Model. Raw images -> (B, F) features.
        augment: keras.Model. Random view pipeline, float32 0..255 -> same shape (zoo.data.augment).
        projection: str. Projector widths, e.g. "256-128" (zoo.backbones.projection_head).
        projector: keras.Model or None. A prebuilt projector (None: built from `projection`).
    """

    NESTED = ("encoder", "augment", "projector")

    def __init__(self, encoder, augment, projection="256-128", projector=None, **kwargs):
        super().__init__(encoder, **kwargs)
        if not isinstance(augment, keras.Model):
            raise ValueError(f"augment must be a keras.Model (e.g. zoo.data.augment.characters(28)), got {augment!r}")
        self.augment = augment
        self.augment.build((None, *self.encoder.input_shape[1:]))
        self.projection = projection
        self.projector = projector if projector is not None else projection_head(projection, name="projector")
        self.projector.build((None, self.feature_dim))
        # Mean per-dimension std of the L2-normalised features: about 1/sqrt(F) when healthy, 0 when collapsed.
        self.std_tracker = keras.metrics.Mean(name="feature_std")

    def view_objective(self, z_a, z_b):
        """Scalar loss of the two views' projections, each (N, P) float32."""
        raise NotImplementedError

    def call(self, inputs, training=False):
        if not isinstance(inputs, (tuple, list)):
            return self.embed(inputs, training=training)
        if len(inputs) != 2:
            raise ValueError(f"training batches must be (x_a, x_b) view pairs, got {len(inputs)} inputs")
        x_a, x_b = inputs
        n = ops.shape(x_a)[0]
        # One pass over both views: per-image random draws (on N replicas, those of the global batch:
        # zoo.distributed.on_global_batch), shared batch-norm statistics.
        views = on_global_batch(lambda v: self.augment(v, training=training), [x_a, x_b])  # (2N, H, W, C)
        features = self.encoder(views, training=training)  # (2N, F)
        z = ops.cast(self.projector(features, training=training), "float32")  # (2N, P)
        return ops.cast(features[:n], "float32"), z[:n], z[n:]

    def objective(self, y, y_pred):
        # In-batch (negatives, batch statistics): on N replicas the global batch's (B, P) views, in replica
        # order, row i of z_a still the twin of row i of z_b (EmbeddingMethod.compute_loss gathers them).
        features, z_a, z_b = y_pred
        loss = self.view_objective(z_a, z_b)
        normalised = features / ops.maximum(ops.norm(features, axis=1, keepdims=True), 1e-12)
        self.std_tracker.update_state(ops.mean(ops.std(normalised, axis=0)))
        return loss

    def get_config(self):
        return {**super().get_config(), "projection": self.projection}


@keras.saving.register_keras_serializable(package="zoo")
class SimCLR(TwoViewMethod):
    """SimCLR: each view must recognise its twin among the batch's other views (NT-Xent).

    "A simple framework for contrastive learning of visual representations [...] learns
    representations by maximizing agreement between differently augmented views of the same
    data example via a contrastive loss in the latent space." The projection head is dropped
    after training: the representation before it transfers better.

    Args:
        encoder: keras.Model. Raw images -> (B, F) features.
        augment: keras.Model. Random view pipeline, float32 0..255 -> same shape (zoo.data.augment).
        temperature: float. NT-Xent temperature tau.
        projection: str. Projector widths, e.g. "256-128".
        projector: keras.Model or None. A prebuilt projector (None: built from `projection`).

    Reference:
        Chen, Kornblith, Norouzi, Hinton. A Simple Framework for Contrastive Learning of Visual
        Representations. ICML 2020.
    """

    def __init__(self, encoder, augment, temperature=0.1, projection="256-128", projector=None, **kwargs):
        super().__init__(encoder, augment, projection=projection, projector=projector, **kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.temperature = float(temperature)

    def view_objective(self, z_a, z_b):
        return nt_xent(z_a, z_b, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
