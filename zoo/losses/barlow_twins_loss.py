"""The Barlow Twins objective over two views (Zbontar et al. 2021)."""

from keras import ops

from zoo.losses._common import _two_views

__all__ = ["barlow_twins"]


def barlow_twins(z_a, z_b, lambd=5e-3):
    """Barlow Twins: drive the cross-correlation of the two views' features to the identity.

    "L_BT = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2", with C computed, as in
    the authors' code, from features standardised over the batch (biased variance,
    eps 1e-5) and divided by the batch size.

    Args:
        z_a: tensor (N, D). projector output for the first view.
        z_b: tensor (N, D). projector output for the second view.
        lambd: float. weight of the redundancy-reduction (off-diagonal) term.

    Reference:
        Zbontar, Jing, Misra, LeCun, Deny. Barlow Twins: Self-Supervised Learning via
        Redundancy Reduction. ICML 2021.
    """
    z_a, z_b = _two_views(z_a, z_b)

    def standardise(z):
        mean = ops.mean(z, axis=0, keepdims=True)
        variance = ops.mean(ops.square(z - mean), axis=0, keepdims=True)
        return (z - mean) / ops.sqrt(variance + 1e-5)

    n = ops.cast(ops.shape(z_a)[0], "float32")
    c = ops.matmul(ops.transpose(standardise(z_a)), standardise(z_b)) / n  # (D, D)
    diagonal = ops.diagonal(c)
    on_diagonal = ops.sum(ops.square(1.0 - diagonal))
    off_diagonal = ops.sum(ops.square(c)) - ops.sum(ops.square(diagonal))
    return on_diagonal + lambd * off_diagonal
