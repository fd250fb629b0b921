"""Contrastive loss over pairs (Hadsell et al. 2006)."""

from keras import ops

from zoo.losses._common import _float32
from zoo.losses._registry import register_loss

__all__ = ["contrastive"]


@register_loss("contrastive", inputs=("same", "distance"))
def contrastive(same, distance, margin=1.0):
    """Contrastive loss over pairs: pull same pairs together, push others beyond `margin`.

    "L(W, Y, X1, X2) = (1 - Y) 1/2 (D_W)^2 + (Y) 1/2 {max(0, m - D_W)}^2" (Y = 0 for similar
    pairs). As the zoo's design defines it: `same * d^2 + (1 - same) * max(0, margin - d)^2`,
    without the 1/2, averaged over pairs.

    Args:
        same: tensor (N,). 1 (or True) for a pair of the same class, 0 otherwise.
        distance: tensor (N,). distance between the two embeddings of each pair.
        margin: float. distance beyond which a different pair costs nothing.

    Reference:
        Hadsell, Chopra, LeCun. Dimensionality Reduction by Learning an Invariant Mapping.
        CVPR 2006.
    """
    same, distance = _float32(same), _float32(distance)
    if len(same.shape) != len(distance.shape) or any(
        a is not None and b is not None and a != b for a, b in zip(same.shape, distance.shape)
    ):
        raise ValueError(
            "same and distance must have the same shape (N,), got "
            f"{tuple(same.shape)} and {tuple(distance.shape)}"
        )
    hinge = ops.relu(margin - distance)
    return ops.mean(same * ops.square(distance) + (1.0 - same) * ops.square(hinge))
