"""NT-Xent, SimCLR's contrastive loss over two views (Chen et al. 2020)."""

from keras import ops

from zoo.losses._common import _two_views
from zoo.ops import l2_normalize

__all__ = ["nt_xent"]


def nt_xent(z_a, z_b, temperature=0.1):
    """NT-Xent: each of the 2N views must pick its twin among the other 2N - 1 by cosine.

    "l(i, j) = -log exp(sim(z_i, z_j)/tau) / sum_{k=1}^{2N} 1[k != i] exp(sim(z_i, z_k)/tau)
    [...] The final loss is computed across all positive pairs, both (i, j) and (j, i)."

    Args:
        z_a: tensor (N, D). first view of each example.
        z_b: tensor (N, D). second view, row i paired with row i of z_a.
        temperature: float. tau, the softmax temperature.

    Reference:
        Chen, Kornblith, Norouzi, Hinton. A Simple Framework for Contrastive Learning of
        Visual Representations. ICML 2020.
    """
    z_a, z_b = _two_views(z_a, z_b)
    z_a, z_b = l2_normalize(z_a), l2_normalize(z_b)
    z = ops.concatenate([z_a, z_b], axis=0)  # (2N, D)
    logits = ops.matmul(z, ops.transpose(z)) / temperature  # (2N, 2N)
    index = ops.arange(ops.shape(z)[0])
    # A large finite value rather than -inf: exp underflows to 0 and no inf reaches a gradient.
    logits = ops.where(index[:, None] == index[None, :], -1e9, logits)
    twin = ops.sum(z_a * z_b, axis=1) / temperature  # (N,)
    positive = ops.concatenate([twin, twin], axis=0)  # (2N,)
    return ops.mean(ops.logsumexp(logits, axis=1) - positive)
