"""Distance and label-mask primitives for the losses, in pure `keras.ops` (any backend).

Distances come from the Gram matrix (O(B^2 D), no (B, B, D) difference tensor) and are
clipped at 0. The square root is taken only where the squared distance is positive, so the
value is exactly 0 and the gradient is 0 (not NaN) at zero distance: on the diagonal and
between duplicate embeddings.
"""

import keras
from keras import ops


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """Scale `x` to unit L2 norm along `axis`; zero vectors stay zero.

    Computed in float32 (float16 cannot hold `epsilon`) and cast back to the input dtype.

    Args:
        x: tensor. values to normalise.
        axis: int. axis along which the norm is taken.
        epsilon: float. lower bound on the squared norm, as in `tf.math.l2_normalize`.
    """
    x = ops.convert_to_tensor(x)
    dtype = x.dtype
    x32 = ops.cast(x, "float32")
    squared_norm = ops.sum(ops.square(x32), axis=axis, keepdims=True)
    return ops.cast(x32 * ops.rsqrt(ops.maximum(squared_norm, epsilon)), dtype)


def _safe_sqrt(squared):
    """Square root with value 0 and gradient 0 where `squared` is 0 (sqrt' is infinite there)."""
    zero = ops.less_equal(squared, 0.0)
    return ops.where(zero, 0.0, ops.sqrt(ops.where(zero, 1.0, squared)))


def pairwise_distances(embeddings, squared=False):
    """Euclidean distances between all rows of `embeddings`, with an exact zero diagonal.

    Args:
        embeddings: tensor (B, D). one embedding per row.
        squared: bool. return squared distances.

    Returns:
        tensor (B, B).
    """
    gram = ops.matmul(embeddings, ops.transpose(embeddings))  # (B, B)
    # Norms from the Gram diagonal: duplicate rows then cancel exactly in float arithmetic.
    squared_norms = ops.diagonal(gram)  # (B,)
    squared_dist = ops.maximum(
        squared_norms[:, None] - 2.0 * gram + squared_norms[None, :], 0.0
    )
    # Exact zeros on the diagonal whatever the rounding of the backend's matmul.
    index = ops.arange(ops.shape(embeddings)[0])
    squared_dist = ops.where(index[:, None] == index[None, :], 0.0, squared_dist)
    return squared_dist if squared else _safe_sqrt(squared_dist)


def cross_distances(a, b, squared=False):
    """Euclidean distances from every row of `a` to every row of `b`.

    Args:
        a: tensor (A, D). first set of embeddings.
        b: tensor (B, D). second set of embeddings.
        squared: bool. return squared distances.

    Returns:
        tensor (A, B).
    """
    squared_dist = ops.maximum(
        ops.sum(ops.square(a), axis=1)[:, None]
        - 2.0 * ops.matmul(a, ops.transpose(b))
        + ops.sum(ops.square(b), axis=1)[None, :],
        0.0,
    )  # (A, B)
    return squared_dist if squared else _safe_sqrt(squared_dist)


def label_masks(labels):
    """Masks of positive pairs (same label, i != j) and negative pairs (different label).

    Args:
        labels: int tensor (B,). class ids.

    Returns:
        (positive_mask, negative_mask): bool tensors (B, B).
    """
    same = labels[:, None] == labels[None, :]  # (B, B)
    index = ops.arange(ops.shape(labels)[0])
    not_self = index[:, None] != index[None, :]
    return ops.logical_and(same, not_self), ops.logical_not(same)


def check_labels_embeddings(labels, embeddings):
    """Raise ValueError unless labels are integer (B,) and embeddings are (B, D).

    Only static shapes are compared: a dimension unknown at trace time passes.

    Args:
        labels: tensor. expected integer dtype, shape (B,).
        embeddings: tensor. expected shape (B, D).
    """
    if len(labels.shape) != 1:
        raise ValueError(
            f"labels must be a rank-1 tensor of class ids (B,), got shape {tuple(labels.shape)}"
        )
    if len(embeddings.shape) != 2:
        raise ValueError(
            f"embeddings must be a rank-2 tensor (B, D), got shape {tuple(embeddings.shape)}"
        )
    n_labels, n_embeddings = labels.shape[0], embeddings.shape[0]
    if n_labels is not None and n_embeddings is not None and n_labels != n_embeddings:
        raise ValueError(
            f"labels and embeddings must have the same batch size, got {n_labels} labels "
            f"and {n_embeddings} embeddings"
        )
    if not keras.backend.is_int_dtype(labels.dtype):
        raise ValueError(
            "labels must have an integer dtype (class ids), got "
            f"{keras.backend.standardize_dtype(labels.dtype)}"
        )
