"""Barlow Twins: two views whose projections' cross-correlation is driven to the identity."""

import keras

from zoo.losses import barlow_twins
from zoo.methods.simclr import TwoViewMethod


@keras.saving.register_keras_serializable(package="zoo")
class BarlowTwins(TwoViewMethod):
    """Barlow Twins: invariance on the diagonal of the views' cross-correlation, redundancy reduction off it.

    "The objective function [...] tries to equate the diagonal elements of the cross-correlation
    matrix to 1, [which] makes the embedding invariant to the distortions applied. The
    redundancy reduction term tries to equate the off-diagonal elements [...] to 0." No negative
    pairs, no momentum encoder; the projector is dropped after training.

    Args:
        encoder: keras.Model. Raw images -> (B, F) features.
        augment: keras.Model. Random view pipeline, float32 0..255 -> same shape (zoo.data.augment).
        lambd: float. Weight of the off-diagonal (redundancy reduction) term.
        projection: str. Projector widths (the paper: "8192-8192-8192"; wide projectors help).
        projector: keras.Model or None. A prebuilt projector (None: built from `projection`).

    Reference:
        Zbontar, Jing, Misra, LeCun, Deny. Barlow Twins: Self-Supervised Learning via Redundancy
        Reduction. ICML 2021.
    """

    def __init__(self, encoder, augment, lambd=5e-3, projection="1024-1024-1024", projector=None, **kwargs):
        super().__init__(encoder, augment, projection=projection, projector=projector, **kwargs)
        if not lambd >= 0:
            raise ValueError(f"lambd must be >= 0, got {lambd!r}")
        self.lambd = float(lambd)

    def view_objective(self, z_a, z_b):
        return barlow_twins(z_a, z_b, self.lambd)

    def get_config(self):
        return {**super().get_config(), "lambd": self.lambd}
