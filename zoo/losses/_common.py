"""Input checks and reductions that the loss files share."""

from keras import ops

from zoo.ops import check_labels_embeddings


def _float32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


def _labels_embeddings(labels, embeddings):
    """Validated (int labels, float32 embeddings)."""
    labels = ops.convert_to_tensor(labels)
    embeddings = ops.convert_to_tensor(embeddings)
    check_labels_embeddings(labels, embeddings)
    return labels, ops.cast(embeddings, "float32")


def _two_views(z_a, z_b, name_a="z_a", name_b="z_b"):
    """Validated float32 (N, D) pair of views of the same shape."""
    z_a, z_b = _float32(z_a), _float32(z_b)
    for name, z in ((name_a, z_a), (name_b, z_b)):
        if len(z.shape) != 2:
            raise ValueError(f"{name} must be a rank-2 tensor (N, D), got shape {tuple(z.shape)}")
    for axis in (0, 1):
        n_a, n_b = z_a.shape[axis], z_b.shape[axis]
        if n_a is not None and n_b is not None and n_a != n_b:
            raise ValueError(
                f"{name_a} and {name_b} must have the same shape (N, D), got "
                f"{tuple(z_a.shape)} and {tuple(z_b.shape)}"
            )
    return z_a, z_b


def _safe_mean(total, count):
    """total / count, and 0 where count is 0."""
    return total / ops.maximum(count, 1.0)
