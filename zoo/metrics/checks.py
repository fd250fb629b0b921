"""Input checks shared by the metrics: finite matrices, labels, unit rows, positive counts."""

import numpy as np

from zoo.runtime.kernels import l2_normalize


def _matrix(x, name):
    """Return `x` as a finite 2-D float array, or raise ValueError."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (N, D), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _labels(y, n, name):
    """Integer ids 0..C-1 and the class values of `y`, checked to be 1-D of length n (None: any)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != (len(y) if n is None else n):
        raise ValueError(f"{name} must be a 1-D array of length {'N' if n is None else n}, got shape {y.shape}")
    values, ids = np.unique(y, return_inverse=True)
    return ids.reshape(-1), values


def _members(ids):
    """Item indices of each class id 0..C-1, in one sort rather than a scan per class."""
    order = np.argsort(ids, kind="stable")
    return np.split(order, np.cumsum(np.bincount(ids))[:-1])


def _unit(x, name):
    """Rows of `x` divided by their L2 norm; zero rows have no direction and are an error."""
    if not np.all(np.any(x, axis=1)):
        raise ValueError(f"{name} has an all-zero row; cosine similarity is undefined for it")
    return l2_normalize(x)


def _unit_pair(a, b, name_a, name_b):
    """Two checked matrices (`_matrix`) of unit rows (`_unit`) with the same number of columns."""
    a, b = _unit(_matrix(a, name_a), name_a), _unit(_matrix(b, name_b), name_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} and {name_b} must have the same dim, got {a.shape[1]} and {b.shape[1]}")
    return a, b


def _positive_int(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _ks(k, name="ks"):
    """A tuple of positive ints from an int or a sequence of ints."""
    ks = (k,) if isinstance(k, (int, np.integer)) else tuple(k)
    if not ks:
        raise ValueError(f"{name} must not be empty")
    return tuple(_positive_int(v, name) for v in ks)
