"""zoo.losses against naive numpy loops written from each paper's definition (tests/references.py).

Runs on every backend (no tensorflow import at module level). The references compute in
float64 with explicit loops over pairs and triplets; the library sorts and masks instead.
Every registered loss of labelled batches has one line in `ORACLES`, which the tests of the
registry's losses are parametrised over: values in float32 and under mixed precision, compiled
and with a dynamic batch, gradients (finite, and against finite differences of the oracle).
"""

import keras
import numpy as np
import pytest
from keras import ops

from zoo import losses

import references
from references import (
    numeric_grad,
    ordered_pairs,
    ref_active_fraction,
    ref_barlow_twins,
    ref_batch_all,
    ref_batch_hard,
    ref_clip,
    ref_contrastive,
    ref_hard_cluster,
    ref_nt_xent,
    ref_prototypical,
    ref_semi_hard,
)

pytestmark = pytest.mark.multibackend

RTOL = ATOL = 1e-5


# ---------------------------------------------------------------- batches


def make_batch(layout, batch_size, seed, dim=8):
    """(labels int32 (B,), embeddings float32 (B, D)) for one label layout."""
    rng = np.random.default_rng(seed)
    if layout == "pk":
        labels = np.repeat(np.arange(batch_size), 4)[:batch_size]
    elif layout == "random":
        labels = rng.integers(0, max(2, batch_size // 3), size=batch_size)
    elif layout == "all_same":
        labels = np.full(batch_size, 7)
    elif layout == "all_different":
        labels = rng.permutation(batch_size) * 3 + 100  # arbitrary, non-contiguous ids
    elif layout == "duplicates":
        labels = rng.integers(0, 3, size=batch_size)
    else:
        raise AssertionError(layout)
    labels = rng.permutation(labels).astype(np.int32)
    x = rng.normal(size=(batch_size, dim))
    if layout == "duplicates":
        # Half-integers so the Gram-matrix distances are exact; copies across and within classes.
        x = np.round(x * 2) / 2
        for i in range(1, batch_size, 2):
            x[i] = x[rng.integers(0, i)]
    return labels, x.astype(np.float32)


LAYOUTS = ["pk", "random", "all_same", "all_different", "duplicates"]
# Few distinct shapes: the JAX backend compiles every op once per shape.
SIZES = [1, 3, 12, 24]
BATCHES = [
    (layout, size, seed)
    for layout in LAYOUTS
    for size in SIZES
    for seed in range(3)
    if not (size == 1 and seed > 0)
]

TRIPLET_LOSSES = {
    "triplet_batch_all": ref_batch_all,
    "triplet_batch_hard": ref_batch_hard,
    "triplet_semi_hard": ref_semi_hard,
    "triplet_active_fraction": ref_active_fraction,
}


# One line per registered loss of labelled batches (zoo.losses.label_losses()): its numpy oracle, which takes the
# inputs the loss declares and its options by name, and option sets to test beside the defaults.
ORACLES = {
    "batch_all": (references.ref_batch_all, [{"margin": 1.0, "squared": True}]),
    "batch_hard": (references.ref_batch_hard, [{"margin": 1.0, "squared": True}]),
    "semi_hard": (references.ref_semi_hard, [{"margin": 1.0, "squared": True}]),
    "hard_cluster": (references.ref_hard_cluster, [{"margin": 5.0}]),
    "contrastive": (references.ref_contrastive, [{"margin": 0.5}]),
    "multi_similarity": (references.ref_multi_similarity, [{"alpha": 1.0, "beta": 10.0, "base": 0.3, "epsilon": 0.3}]),
    "arcface": (references.ref_arcface, [{"scale": 8.0}, {"scale": 16.0, "margin": 1.2}]),
}


def as_float(x):
    return float(ops.convert_to_numpy(x))


_JITTED = {}


def label_loss_value(loss, labels, x, margin, **static):
    """loss(labels, x, margin=margin, **static) as a float.

    On JAX through one cached jit per (loss, static arguments): eager JAX compiles every op
    for every new shape and re-traces the losses' while loops at every call, which would
    dominate this file's runtime.
    """
    if keras.backend.backend() != "jax":
        return as_float(loss(labels, x, margin=margin, **static))
    import jax

    key = (loss, tuple(sorted(static.items())))
    if key not in _JITTED:
        _JITTED[key] = jax.jit(lambda lab, emb, m: loss(lab, emb, margin=m, **static))
    return as_float(_JITTED[key](labels, x, margin))


# ---------------------------------------------------------------- compilation, backend by backend


def compiled(fn):
    """fn compiled the way fit() runs it: XLA on TensorFlow, jit on JAX."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    pytest.skip(f"no compiler for backend {backend}")


# ---------------------------------------------------------------- values vs references


@pytest.mark.parametrize("name", sorted(TRIPLET_LOSSES))
@pytest.mark.parametrize("squared", [False, True])
def test_triplet_losses_match_naive_loops(name, squared):
    loss, reference = getattr(losses, name), TRIPLET_LOSSES[name]
    for layout, size, seed in BATCHES:
        labels, x = make_batch(layout, size, seed)
        for margin in (0.2, 1.0):
            got = label_loss_value(loss, labels, x, margin, squared=squared)
            want = reference(labels, x, margin, squared)
            np.testing.assert_allclose(
                got, want, rtol=RTOL, atol=ATOL, err_msg=f"{layout} B={size} seed={seed} m={margin}"
            )


@pytest.mark.parametrize("name", sorted(TRIPLET_LOSSES))
def test_triplet_losses_exact_ties(name):
    # Half-integer points in 2-D: squared distances are multiples of 1/4, so d(a,n) == d(a,p) and
    # d(a,n) == margin + d(a,p) happen often and are exact; "farther" and "positive" are strict.
    loss, reference = getattr(losses, name), TRIPLET_LOSSES[name]
    rng = np.random.default_rng(5)
    for _ in range(10):
        labels = rng.integers(0, 3, size=12).astype(np.int32)
        x = np.zeros((12, 8), np.float32)
        x[:, :2] = rng.integers(-2, 3, size=(12, 2)) / 2
        for margin in (0.25, 0.5):
            got = label_loss_value(loss, labels, x, margin, squared=True)
            want = reference(labels, x, margin, True)
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_triplet_losses_hand_worked():
    # 1-D points: class 0 at 0 and 1, class 1 at 1.5 and 5; margin 0.5.
    labels = np.array([0, 0, 1, 1], np.int32)
    x = np.array([[0.0], [1.0], [1.5], [5.0]], np.float32)
    # Semi-hard terms: (0,1)->n=1.5: 0; (1,0)->n=4: 0; (2,3)->none farther, farthest 1.5: 2.5;
    # (3,2)->n=4: 0.
    assert as_float(losses.triplet_semi_hard(labels, x, margin=0.5)) == pytest.approx(2.5 / 4)
    # Batch-hard per anchor: 0, 1.0, 3.5, 0.
    assert as_float(losses.triplet_batch_hard(labels, x, margin=0.5)) == pytest.approx(4.5 / 4)
    # Batch-all: 8 valid triplets, positive terms 1.0, 2.5, 3.5.
    assert as_float(losses.triplet_batch_all(labels, x, margin=0.5)) == pytest.approx(7 / 3)
    assert as_float(losses.triplet_active_fraction(labels, x, margin=0.5)) == pytest.approx(3 / 8)


def test_hard_cluster_matches_naive_loop():
    for layout, size, seed in BATCHES:
        labels, x = make_batch(layout, size, seed)
        for margin in (0.2, 5.0):
            got = label_loss_value(losses.hard_cluster, labels, x, margin)
            want = ref_hard_cluster(labels, x, margin)
            np.testing.assert_allclose(
                got, want, rtol=RTOL, atol=ATOL, err_msg=f"{layout} B={size} seed={seed}"
            )


def test_no_positive_pair_or_single_class_gives_zero():
    x = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    for labels in (np.arange(12, dtype=np.int32), np.zeros(12, np.int32)):
        for name in [*TRIPLET_LOSSES, "hard_cluster"]:
            assert as_float(getattr(losses, name)(labels, x)) == 0.0, (name, labels)


def test_contrastive_matches_naive_loop():
    rng = np.random.default_rng(1)
    for n in (1, 7, 40):
        same = rng.integers(0, 2, size=n)
        distance = rng.uniform(0, 2, size=n).astype(np.float32)
        for margin in (0.5, 1.0):
            for same_input in (same.astype(bool), same.astype(np.float32)):
                got = as_float(losses.contrastive(same_input, distance, margin=margin))
                want = ref_contrastive(same, distance, margin)
                np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_nt_xent_matches_naive_loop():
    rng = np.random.default_rng(2)
    for n, dim, temperature in [(1, 8, 0.1), (6, 8, 0.5), (12, 8, 1.0)]:
        z_a, z_b = rng.normal(size=(2, n, dim)).astype(np.float32)
        got = as_float(losses.nt_xent(z_a, z_b, temperature=temperature))
        np.testing.assert_allclose(got, ref_nt_xent(z_a, z_b, temperature), rtol=RTOL, atol=ATOL)


def test_barlow_twins_matches_naive_loop():
    rng = np.random.default_rng(3)
    for n, dim, lambd in [(6, 8, 5e-3), (12, 8, 0.5)]:
        z_a, z_b = rng.normal(size=(2, n, dim)).astype(np.float32)
        z_b[:, 0] = z_a[:, 0] * 2 + 1  # one perfectly correlated feature
        got = as_float(losses.barlow_twins(z_a, z_b, lambd=lambd))
        np.testing.assert_allclose(got, ref_barlow_twins(z_a, z_b, lambd), rtol=RTOL, atol=ATOL)


def test_prototypical_matches_naive_loop():
    rng = np.random.default_rng(4)
    for n_way, shot, n_query, dim in [(3, 2, 2, 8), (20, 1, 1, 8)]:
        centres = rng.normal(size=(n_way, 1, dim)) * 1.5
        support = (centres + rng.normal(size=(n_way, shot, dim))).astype(np.float32)
        query = (centres + rng.normal(size=(n_way, n_query, dim))).astype(np.float32)
        loss, accuracy = losses.prototypical(support, query)
        want_loss, want_accuracy = ref_prototypical(support, query)
        np.testing.assert_allclose(as_float(loss), want_loss, rtol=RTOL, atol=ATOL)
        assert as_float(accuracy) == pytest.approx(want_accuracy)


def test_clip_matches_naive_loop():
    rng = np.random.default_rng(6)
    for n, dim, scale in [(1, 8, 1 / 0.07), (6, 8, 100.0), (12, 8, 1.0)]:
        images, texts = rng.normal(size=(2, n, dim)).astype(np.float32)
        got = as_float(losses.clip(images, texts, scale))
        np.testing.assert_allclose(got, ref_clip(images, texts, scale), rtol=RTOL, atol=ATOL)


def test_clip_with_shared_captions_matches_naive_loop():
    rng = np.random.default_rng(7)
    for n in (1, 6, 12):
        images, texts = rng.normal(size=(2, n, 8)).astype(np.float32)
        image_ids, caption_ids = rng.integers(0, 3, n), rng.integers(0, 4, n)  # repeats in both
        positives = (image_ids[:, None] == image_ids[None]) | (caption_ids[:, None] == caption_ids[None])
        got = as_float(losses.clip(images, texts, 10.0, positives=positives))
        np.testing.assert_allclose(got, ref_clip(images, texts, 10.0, positives), rtol=RTOL, atol=ATOL)
        identity = as_float(losses.clip(images, texts, 10.0, positives=np.eye(n, dtype=bool)))
        np.testing.assert_allclose(identity, as_float(losses.clip(images, texts, 10.0)), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- gradients


LABEL_LOSSES = ["triplet_batch_all", "triplet_batch_hard", "triplet_semi_hard", "hard_cluster"]


@pytest.mark.parametrize("name", LABEL_LOSSES)
def test_label_loss_gradients_finite_on_edge_cases(name, value_and_grad):
    loss = getattr(losses, name)
    cases = [make_batch(layout, 12, 0) for layout in LAYOUTS]
    labels = np.arange(12, dtype=np.int32) % 3
    cases.append((labels, np.zeros((12, 8), np.float32)))  # all at the origin
    cases.append((labels, np.ones((12, 8), np.float32)))  # all equal
    for labels, x in cases:
        kwargs = {} if name == "hard_cluster" else {"squared": False}
        value, grad = value_and_grad(lambda e: loss(labels, e, **kwargs), x)
        assert np.isfinite(value), (name, labels)
        assert np.all(np.isfinite(grad)), (name, labels)


@pytest.mark.parametrize("name", LABEL_LOSSES)
def test_label_loss_gradients_match_finite_differences(name, value_and_grad):
    # Generic points (no ties, no kink within eps), so the loss is differentiable there.
    rng = np.random.default_rng(8)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 3], np.int32)
    x = rng.normal(size=(12, 8)).astype(np.float32)
    if name == "hard_cluster":
        fn, reference = losses.hard_cluster, lambda e: ref_hard_cluster(labels, e, 0.2)
    else:
        reference_loss = TRIPLET_LOSSES[name]
        fn, reference = getattr(losses, name), lambda e: reference_loss(labels, e, 0.2, False)
    _, grad = value_and_grad(lambda e: fn(labels, e), x)
    np.testing.assert_allclose(grad, numeric_grad(reference, x), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["nt_xent", "barlow_twins", "clip"])
def test_two_view_gradients_match_finite_differences(name, value_and_grad):
    rng = np.random.default_rng(9)
    z_a, z_b = rng.normal(size=(2, 6, 8)).astype(np.float32)
    fn = {
        "nt_xent": lambda a: losses.nt_xent(a, z_b, temperature=0.5),
        "barlow_twins": lambda a: losses.barlow_twins(a, z_b),
        "clip": lambda a: losses.clip(a, z_b, 2.0),
    }[name]
    reference = {
        "nt_xent": lambda a: ref_nt_xent(a, z_b, 0.5),
        "barlow_twins": lambda a: ref_barlow_twins(a, z_b, 5e-3),
        "clip": lambda a: ref_clip(a, z_b, 2.0),
    }[name]
    _, grad = value_and_grad(fn, z_a)
    np.testing.assert_allclose(grad, numeric_grad(reference, z_a), rtol=2e-3, atol=1e-4)


def test_prototypical_gradient_finite_with_query_on_prototype(value_and_grad):
    support = np.zeros((3, 2, 8), np.float32)
    support[1] += 1.0
    query = np.zeros((3, 2, 8), np.float32)  # class 0 queries sit exactly on their prototype
    _, grad = value_and_grad(lambda q: losses.prototypical(support, q)[0], query)
    assert np.all(np.isfinite(grad))


# ---------------------------------------------------------------- mixed precision, compilation


def rounded(x, dtype):
    """x stored in `dtype` and read back as float32: what a mixed-precision layer hands over."""
    return ops.convert_to_numpy(ops.cast(ops.cast(x, dtype), "float32"))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_inputs_give_float32_reference_values(dtype):
    labels, x = make_batch("pk", 12, 0)
    x_low, x_ref = ops.cast(x, dtype), rounded(x, dtype)
    z_a, z_b = x[:6], x[6:]
    za_low, zb_low = ops.cast(z_a, dtype), ops.cast(z_b, dtype)
    za_ref, zb_ref = rounded(z_a, dtype), rounded(z_b, dtype)
    distance = np.abs(x[:, 0])
    episode_low, episode_ref = ops.reshape(x_low, (3, 4, 8)), x_ref.reshape(3, 4, 8)
    cases = [
        (losses.triplet_batch_all(labels, x_low), ref_batch_all(labels, x_ref, 0.2, False)),
        (losses.triplet_batch_hard(labels, x_low), ref_batch_hard(labels, x_ref, 0.2, False)),
        (losses.triplet_semi_hard(labels, x_low), ref_semi_hard(labels, x_ref, 0.2, False)),
        (losses.hard_cluster(labels, x_low), ref_hard_cluster(labels, x_ref, 0.2)),
        (losses.nt_xent(za_low, zb_low), ref_nt_xent(za_ref, zb_ref, 0.1)),
        (losses.barlow_twins(za_low, zb_low), ref_barlow_twins(za_ref, zb_ref, 5e-3)),
        (losses.clip(za_low, zb_low, 1 / 0.07), ref_clip(za_ref, zb_ref, 1 / 0.07)),
        (
            losses.prototypical(episode_low[:, :2], episode_low[:, 2:])[0],
            ref_prototypical(episode_ref[:, :2], episode_ref[:, 2:])[0],
        ),
        (
            losses.contrastive(labels % 2, ops.cast(distance, dtype)),
            ref_contrastive(labels % 2, rounded(distance, dtype), 1.0),
        ),
    ]
    for got, want in cases:
        assert keras.backend.standardize_dtype(got.dtype) == "float32"
        np.testing.assert_allclose(as_float(got), want, rtol=1e-5, atol=1e-5)


def test_compiled_losses_match_eager():
    labels, x = make_batch("random", 24, 1)
    z_a, z_b = x[:12], x[12:]

    def all_losses(labels, x, z_a, z_b):
        return ops.stack(
            [
                losses.triplet_batch_all(labels, x),
                losses.triplet_batch_hard(labels, x),
                losses.triplet_semi_hard(labels, x),
                losses.triplet_active_fraction(labels, x),
                losses.hard_cluster(labels, x),
                losses.nt_xent(z_a, z_b),
                losses.barlow_twins(z_a, z_b),
                losses.clip(z_a, z_b, 10.0),
            ]
        )

    eager = ops.convert_to_numpy(all_losses(labels, x, z_a, z_b))
    jitted = ops.convert_to_numpy(compiled(all_losses)(labels, x, z_a, z_b))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


def test_dynamic_batch_size_on_tensorflow():
    # fit() on TensorFlow may trace with an unknown batch dimension.
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow-only tracing mode")
    import tensorflow as tf

    signature = [tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 8], tf.float32)]
    labels, x = make_batch("random", 16, 2)
    for loss in (losses.triplet_batch_all, losses.triplet_semi_hard, losses.hard_cluster):
        traced = tf.function(lambda lab, emb, loss=loss: loss(lab, emb), input_signature=signature)
        np.testing.assert_allclose(
            traced(labels, x).numpy(), as_float(loss(labels, x)), rtol=1e-6, atol=1e-6
        )


# ---------------------------------------------------------------- every registered loss of labelled batches


def test_every_label_loss_has_an_oracle():
    assert sorted(ORACLES) == losses.label_losses()


CENTRES_SEED = 11


def loss_inputs(name, labels, x):
    """The inputs that loss `name` declares, as numpy, for a batch: labels made 0..C-1 (so they index the C
    class centres), the embeddings, every ordered pair of the batch, (C, D) centres drawn from a seeded normal."""
    labels = np.unique(labels, return_inverse=True)[1].astype(np.int32)
    made = {"labels": labels, "embeddings": x}
    made["same"], made["distance"] = ordered_pairs(labels, x)
    made["centres"] = np.random.default_rng(CENTRES_SEED).normal(size=(labels.max() + 1, x.shape[1])).astype(np.float32)
    return {k: made[k] for k in losses.get_loss(name).inputs}


def registered_value(name, inputs, options):
    """The registered loss on `inputs` (dict, declared order) with `options`, as a float; on JAX through one
    cached jit per (loss, options), as `label_loss_value`."""
    fn = losses.get_loss(name).fn
    if keras.backend.backend() != "jax":
        return as_float(fn(*inputs.values(), **options))
    import jax

    key = (name, tuple(sorted(options.items())))
    if key not in _JITTED:
        _JITTED[key] = jax.jit(lambda *args: fn(*args, **options))
    return as_float(_JITTED[key](*inputs.values()))


def oracle_value(name, inputs, options):
    oracle = ORACLES[name][0]
    return oracle(*inputs.values(), **losses.get_loss(name).resolve(options))


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_label_loss_matches_its_oracle(name):
    for layout, size, seed in BATCHES:
        labels, x = make_batch(layout, size, seed)
        if size < 2 and {"same", "distance"} & set(losses.get_loss(name).inputs):
            continue  # a batch of one image has no pair
        inputs = loss_inputs(name, labels, x)
        for options in [{}, *ORACLES[name][1]]:
            got = registered_value(name, inputs, options)
            want = oracle_value(name, inputs, options)
            np.testing.assert_allclose(
                got, want, rtol=RTOL, atol=ATOL, err_msg=f"{layout} B={size} seed={seed} {options}"
            )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(ORACLES))
def test_label_loss_under_mixed_precision_gives_the_float32_oracle(name, dtype):
    labels, x = make_batch("pk", 12, 0)
    inputs = loss_inputs(name, labels, x)
    low = {k: v if k == "labels" else ops.cast(v, dtype) for k, v in inputs.items()}
    read_back = {k: v if k == "labels" else rounded(v, dtype) for k, v in inputs.items()}
    got = losses.get_loss(name).fn(*low.values())
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(as_float(got), oracle_value(name, read_back, {}), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_label_loss_compiled_matches_eager(name):
    labels, x = make_batch("random", 24, 1)
    inputs = loss_inputs(name, labels, x)
    fn = losses.get_loss(name).fn
    eager = as_float(fn(*inputs.values()))
    np.testing.assert_allclose(as_float(compiled(fn)(*inputs.values())), eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_label_loss_traces_with_a_dynamic_batch_on_tensorflow(name):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow-only tracing mode")
    import tensorflow as tf

    labels, x = make_batch("random", 16, 2)
    inputs = loss_inputs(name, labels, x)
    fixed = {"centres"}  # weights: their shape is known when fit() traces
    signature = [tf.TensorSpec(v.shape if k in fixed else [None, *v.shape[1:]], v.dtype) for k, v in inputs.items()]
    fn = losses.get_loss(name).fn
    traced = tf.function(lambda *args: fn(*args), input_signature=signature)
    np.testing.assert_allclose(traced(*inputs.values()).numpy(), as_float(fn(*inputs.values())), rtol=1e-6, atol=1e-6)


def gradient_inputs(name, labels, x):
    """(inputs, the float one to differentiate): the embeddings, or the pairs' distances for a pair loss."""
    inputs = loss_inputs(name, labels, x)
    return inputs, "embeddings" if "embeddings" in inputs else "distance"


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_label_loss_gradients_finite_on_edge_cases_of_every_registered_loss(name, value_and_grad):
    fn = losses.get_loss(name).fn
    cases = [make_batch(layout, 12, 0) for layout in LAYOUTS]
    labels = np.arange(12, dtype=np.int32) % 3
    cases.append((labels, np.zeros((12, 8), np.float32)))  # all at the origin
    cases.append((labels, np.ones((12, 8), np.float32)))  # all equal
    for labels, x in cases:
        inputs, wrt = gradient_inputs(name, labels, x)
        value, grad = value_and_grad(lambda v: fn(*{**inputs, wrt: v}.values()), inputs[wrt])
        assert np.isfinite(value), (name, labels)
        assert np.all(np.isfinite(grad)), (name, labels)


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_label_loss_gradient_matches_finite_differences_of_its_oracle(name, value_and_grad):
    # Generic points (no ties, no kink within eps), so the loss is differentiable there.
    rng = np.random.default_rng(8)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 3], np.int32)
    x = rng.normal(size=(12, 8)).astype(np.float32)
    inputs, wrt = gradient_inputs(name, labels, x)
    fn, options = losses.get_loss(name).fn, losses.get_loss(name).options
    _, grad = value_and_grad(lambda v: fn(*{**inputs, wrt: v}.values()), inputs[wrt])
    want = numeric_grad(lambda v: ORACLES[name][0](*{**inputs, wrt: v}.values(), **options), inputs[wrt])
    np.testing.assert_allclose(grad, want, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- bad input


# The registered losses of a labelled batch (labels, embeddings first), and a triplet loss's metric.
BATCH_LOSSES = ["triplet_active_fraction",
                *(n for n in sorted(ORACLES) if losses.get_loss(n).inputs[:2] == ("labels", "embeddings"))]
CENTRES = np.zeros((3, 3), np.float32)  # (C, D) class centres of the width D = 3 of the valid embeddings below


@pytest.mark.parametrize(
    "labels, embeddings, centres, message",
    [
        (np.zeros((4, 1), np.int32), np.zeros((4, 3), np.float32), None, "rank-1"),
        (np.zeros(4, np.int32), np.zeros(4, np.float32), None, "rank-2"),
        (np.zeros(4, np.int32), np.zeros((4, 3, 1), np.float32), None, "rank-2"),
        (np.zeros(5, np.int32), np.zeros((4, 3), np.float32), None, "same batch size"),
        (np.zeros(4, np.float32), np.zeros((4, 3), np.float32), None, "integer dtype"),
        (np.zeros(4, np.int32), np.zeros((4, 3), np.float32), np.zeros((3, 2), np.float32), "centres"),
        (np.zeros(4, np.int32), np.zeros((4, 3), np.float32), np.zeros(3, np.float32), "centres"),
    ],
)
@pytest.mark.parametrize("name", BATCH_LOSSES)
def test_label_losses_reject_bad_input(name, labels, embeddings, centres, message):
    registered = losses.LOSSES.get(name)
    takes_centres = registered is not None and "centres" in registered.inputs
    if centres is not None and not takes_centres:
        pytest.skip("a case of the losses with class centres")
    fn = getattr(losses, name) if registered is None else registered.fn
    args = (labels, embeddings, CENTRES if centres is None else centres) if takes_centres else (labels, embeddings)
    with pytest.raises(ValueError, match=message):
        fn(*args)


def test_pair_losses_reject_bad_input():
    a, b = np.zeros((4, 3), np.float32), np.zeros((5, 3), np.float32)
    for loss in (losses.nt_xent, losses.barlow_twins):
        with pytest.raises(ValueError, match="same shape"):
            loss(a, b)
        with pytest.raises(ValueError, match="rank-2"):
            loss(a[0], a[0])
    with pytest.raises(ValueError, match="same shape"):
        losses.clip(a, np.zeros((4, 2), np.float32), 10.0)
    with pytest.raises(ValueError, match="same shape"):
        losses.contrastive(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="rank-3"):
        losses.prototypical(np.zeros((3, 4)), np.zeros((3, 1, 4)))
    with pytest.raises(ValueError, match="number of classes"):
        losses.prototypical(np.zeros((3, 2, 4)), np.zeros((2, 1, 4)))
    with pytest.raises(ValueError, match="embedding size"):
        losses.prototypical(np.zeros((3, 2, 4)), np.zeros((3, 1, 5)))
