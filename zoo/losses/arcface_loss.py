"""ArcFace: softmax over learned class centres with an additive angular margin (Deng et al. 2019)."""

import math

from keras import ops

from zoo.losses._common import _float32, _labels_embeddings
from zoo.losses._registry import register_loss
from zoo.ops import l2_normalize

__all__ = ["arcface"]


@register_loss("arcface", inputs=("labels", "embeddings", "centres"))
def arcface(labels, embeddings, centres, scale=64.0, margin=0.5):
    """ArcFace loss: each embedding's angle to its class centre is widened by `margin` inside a scaled softmax.

    `cos = normalise(embeddings) @ normalise(centres).T`; the target logit is
    `phi = cos(theta_y + margin)` where `cos_y > cos(pi - margin)` (theta_y + margin < pi), else
    `cos_y - margin * sin(pi - margin)` (where the angle plus the margin would pass pi, the
    margin as the reference implementation applies it there); logits = scale * (phi at the
    label, cos elsewhere); the mean softmax cross-entropy. The centres are a trained head,
    dropped at export. cos(theta + m) is expanded as cos theta cos m - sin theta sin m, so no
    arccos (whose gradient is infinite at +-1) is taken.

    Args:
        labels: int tensor (B,). class ids in 0..C-1.
        embeddings: tensor (B, D). embeddings (normalised here).
        centres: tensor (C, D). one learned centre per class (normalised here).
        scale: float. s, the radius of the hypersphere the logits are scaled to.
        margin: float. m, the additive angular margin in radians.

    Reference:
        Deng, Guo, Xue, Zafeiriou. ArcFace: Additive Angular Margin Loss for Deep Face
        Recognition. CVPR 2019: "we add an additive angular margin penalty m between x_i and
        W_{y_i} to simultaneously enhance the intra-class compactness and inter-class
        discrepancy".
    """
    labels, embeddings = _labels_embeddings(labels, embeddings)
    centres = _float32(centres)
    if len(centres.shape) != 2 or centres.shape[1] != embeddings.shape[1] or centres.shape[0] is None:
        raise ValueError(f"centres must be a rank-2 tensor (C, D) of the embeddings' width D = "
                         f"{embeddings.shape[1]} and a known C, got shape {tuple(centres.shape)}")
    cos = ops.matmul(l2_normalize(embeddings), ops.transpose(l2_normalize(centres)))  # (B, C)
    target = ops.cast(ops.one_hot(labels, centres.shape[0]), "bool")  # (B, C)
    cos_y = ops.sum(ops.where(target, cos, 0.0), axis=1)  # (B,)
    sin_squared = 1.0 - ops.square(cos_y)
    positive = sin_squared > 0.0  # sqrt' is infinite at 0 (and rounding may take cos_y past 1)
    sin_y = ops.where(positive, ops.sqrt(ops.where(positive, sin_squared, 1.0)), 0.0)
    phi = cos_y * math.cos(margin) - sin_y * math.sin(margin)  # cos(theta_y + m)
    phi = ops.where(cos_y > math.cos(math.pi - margin), phi, cos_y - margin * math.sin(math.pi - margin))
    logits = scale * ops.where(target, phi[:, None], cos)  # (B, C)
    return ops.mean(ops.logsumexp(logits, axis=1) - scale * phi)
