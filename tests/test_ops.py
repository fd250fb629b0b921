"""zoo.ops against the numpy references: distances, their gradients at zero distance, masks, input checks."""

import keras
import numpy as np
import pytest
from keras import ops

from zoo import ops as zops

from references import ref_cross_distances

pytestmark = pytest.mark.multibackend


def with_duplicates(seed, n=10, dim=8):
    """Half-integer points (exact Gram arithmetic) where every odd row copies an earlier one."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(n, dim)) * 2) / 2
    for i in range(1, n, 2):
        x[i] = x[rng.integers(0, i)]
    return x.astype(np.float32)


@pytest.mark.parametrize("squared", [False, True])
def test_pairwise_distances_match_numpy(squared):
    rng = np.random.default_rng(0)
    for n, dim in [(1, 8), (10, 8), (10, 3)]:
        x = rng.normal(size=(n, dim)).astype(np.float32)
        got = ops.convert_to_numpy(zops.pairwise_distances(x, squared=squared))
        np.testing.assert_allclose(got, ref_cross_distances(x, x, squared), rtol=1e-5, atol=1e-5)


def test_pairwise_diagonal_exactly_zero_and_duplicates_zero():
    # An offset of 100 makes |x|^2 ~ 8e4, where Gram cancellation leaves float32 residues of ~1e-2.
    x = np.random.default_rng(1).normal(size=(10, 8)).astype(np.float32) + 100.0
    for squared in (False, True):
        d = ops.convert_to_numpy(zops.pairwise_distances(x, squared=squared))
        assert np.all(np.diag(d) == 0.0)
        assert np.all(d >= 0.0)
    x = with_duplicates(2)
    d = ops.convert_to_numpy(zops.pairwise_distances(x))
    want = ref_cross_distances(x, x)
    assert np.any(want[~np.eye(len(x), dtype=bool)] == 0), "the batch must contain duplicates"
    np.testing.assert_array_equal(d[want == 0], 0.0)
    # Half-integer points: the squared distances are exact; torch's float32 sqrt may be 1 ulp off.
    np.testing.assert_allclose(d, want, rtol=1e-6)


@pytest.mark.parametrize("squared", [False, True])
def test_cross_distances_match_numpy(squared):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(7, 8)).astype(np.float32)
    b = rng.normal(size=(10, 8)).astype(np.float32)
    got = ops.convert_to_numpy(zops.cross_distances(a, b, squared=squared))
    np.testing.assert_allclose(got, ref_cross_distances(a, b, squared), rtol=1e-5, atol=1e-5)


def test_pairwise_gradient_at_duplicates_is_the_subgradient(value_and_grad):
    # d/dx_i of sum_{i,j} |x_i - x_j| is 2 sum_j (x_i - x_j)/|x_i - x_j|, a zero distance adding 0.
    x = with_duplicates(4)
    _, grad = value_and_grad(lambda e: ops.sum(zops.pairwise_distances(e)), x)
    diff = x[:, None, :].astype(np.float64) - x[None, :, :]
    norm = np.linalg.norm(diff, axis=2, keepdims=True)
    want = 2 * np.sum(np.where(norm > 0, diff / np.where(norm > 0, norm, 1), 0), axis=1)
    assert np.any(norm[~np.eye(len(x), dtype=bool)] == 0), "the batch must contain duplicates"
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-5)


def test_gradients_finite_at_zero_distance(value_and_grad):
    x = np.zeros((6, 8), np.float32)  # every distance is 0
    for fn in (
        lambda e: ops.sum(zops.pairwise_distances(e)),
        lambda e: ops.sum(zops.cross_distances(e[:3], e[3:])),
        lambda e: ops.sum(zops.l2_normalize(e)),
    ):
        value, grad = value_and_grad(fn, x)
        assert np.isfinite(value) and np.all(np.isfinite(grad))
    value, grad = value_and_grad(lambda e: ops.sum(zops.cross_distances(e, e)), with_duplicates(5))
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_l2_normalize():
    x = np.random.default_rng(6).normal(size=(5, 8)).astype(np.float32)
    x[2] = 0.0
    got = ops.convert_to_numpy(zops.l2_normalize(x))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    want = np.where(norms > 0, x / np.where(norms > 0, norms, 1), 0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        ops.convert_to_numpy(zops.l2_normalize(x, axis=0)), x / np.linalg.norm(x, axis=0), rtol=1e-6
    )
    half = zops.l2_normalize(ops.cast(x, "float16"))
    assert keras.backend.standardize_dtype(half.dtype) == "float16"
    np.testing.assert_allclose(ops.convert_to_numpy(half).astype(np.float32), want, atol=2e-3)


def test_label_masks_match_loops():
    labels = np.array([3, 1, 3, 3, 0, 1], np.int32)
    positive, negative = (ops.convert_to_numpy(m) for m in zops.label_masks(labels))
    for i in range(6):
        for j in range(6):
            assert positive[i, j] == (labels[i] == labels[j] and i != j)
            assert negative[i, j] == (labels[i] != labels[j])


@pytest.mark.parametrize(
    "labels, embeddings, message",
    [
        (np.zeros((4, 1), np.int32), np.zeros((4, 3)), r"labels must be a rank-1 .*\(4, 1\)"),
        (np.zeros(4, np.int32), np.zeros(4), r"embeddings must be a rank-2 .*\(4,\)"),
        (np.zeros(3, np.int32), np.zeros((4, 3)), "same batch size, got 3 labels and 4 embeddings"),
        (np.zeros(4, np.float32), np.zeros((4, 3)), "integer dtype .*float32"),
        (np.zeros(4, bool), np.zeros((4, 3)), "integer dtype .*bool"),
    ],
)
def test_check_labels_embeddings_rejects(labels, embeddings, message):
    with pytest.raises(ValueError, match=message):
        zops.check_labels_embeddings(
            ops.convert_to_tensor(labels), ops.convert_to_tensor(embeddings)
        )


def test_check_labels_embeddings_accepts_integer_ids():
    for dtype in (np.int32, np.int64, np.uint8):
        zops.check_labels_embeddings(
            ops.convert_to_tensor(np.zeros(4, dtype)), ops.convert_to_tensor(np.zeros((4, 3)))
        )
