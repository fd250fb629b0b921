"""Self-supervised methods: SimCLR, Barlow Twins, MICLe, context prediction.

Their objectives against the numpy references written from the papers, the geometry of the
context patches, and a short run that learns without collapsing (TensorFlow only, for time).
Round trips, two fit() steps and the embedder's contents: test_methods.py.
"""

import numpy as np
import pytest

import keras
from keras import ops

import zoo.data
from zoo.backbones import conv4
from zoo.data.augment import characters
from zoo.data.samplers import TwoViewSampler
from zoo.methods.barlow_twins import BarlowTwins
from zoo.methods.context_prediction import ContextPrediction
from zoo.methods.micle import MICLe
from zoo.methods.simclr import SimCLR

from references import ref_barlow_twins, ref_cross_entropy, ref_nt_xent


@pytest.fixture(scope="module")
def omniglot():
    data = zoo.data.load("omniglot", "background")
    rows = np.random.default_rng(0).choice(len(data["images"]), 256, replace=False)
    return data["images"][rows].astype(np.float32), data["labels"][rows]


def build(kind, filters=16, seed=0):
    keras.utils.set_random_seed(seed)
    encoder = conv4((28, 28, 1), filters=filters)
    if kind == "simclr":
        return SimCLR(encoder, characters(28), temperature=0.2, projection="32-16")
    if kind == "micle":
        return MICLe(encoder, characters(28), temperature=0.2, projection="32-16")
    if kind == "barlow_twins":
        return BarlowTwins(encoder, characters(28), lambd=0.02, projection="64-64")
    if kind == "context_prediction":
        return ContextPrediction(encoder, cell=36, jitter=4, hidden=32)
    raise ValueError(kind)


def sampler(kind, images, labels, batch_size, steps, seed=0):
    groups = labels if kind == "micle" else None
    return TwoViewSampler(images, batch_size, steps, seed=seed, groups=groups)


@pytest.mark.multibackend
@pytest.mark.parametrize("kind, reference", [("simclr", "nt_xent"), ("micle", "nt_xent"),
                                             ("barlow_twins", "barlow_twins")])
def test_two_view_objective_pairs_each_image_with_its_own_views(kind, reference, omniglot):
    images, _ = omniglot
    model = build(kind)
    x_a, x_b = images[:6], images[6:12]
    # Inference mode: no augmentation and batch-norm moving statistics, so each view can be
    # encoded alone and the pairing checked against the loss on separately computed projections.
    features, z_a, z_b = model((x_a, x_b), training=False)
    project = lambda x: ops.convert_to_numpy(model.projector(model.encoder(x, training=False), training=False))
    p_a, p_b = project(x_a), project(x_b)
    np.testing.assert_allclose(ops.convert_to_numpy(z_a), p_a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(z_b), p_b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(features),
                               ops.convert_to_numpy(model.encoder(x_a, training=False)), rtol=1e-4, atol=1e-5)
    if reference == "nt_xent":
        expected = ref_nt_xent(p_a, p_b, model.temperature)
    else:
        expected = ref_barlow_twins(p_a, p_b, model.lambd)
    loss = model.compute_loss(y_pred=(features, z_a, z_b))
    np.testing.assert_allclose(float(ops.convert_to_numpy(loss)), expected, rtol=2e-4)


@pytest.mark.multibackend
def test_views_are_drawn_per_image_in_training_only(omniglot):
    images, _ = omniglot
    model = build("simclr")
    x = images[:4]
    _, z_a, z_b = model((x, x), training=True)
    # Twin copies of one image get different random views, hence different projections.
    assert np.min(np.abs(ops.convert_to_numpy(z_a) - ops.convert_to_numpy(z_b)).max(axis=1)) > 1e-4
    first, second = (ops.convert_to_numpy(model(x)) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)


@pytest.mark.multibackend
def test_context_patches_are_jittered_crops_of_the_grid_cells(omniglot):
    images, _ = omniglot
    x = images[:3]
    side, cell, patch = 108, 36, 28
    big = ops.convert_to_numpy(ops.image.resize(x, (side, side)))
    centred = ops.convert_to_numpy(ContextPrediction(conv4((28, 28, 1), filters=8), cell=cell, jitter=0).patches(x))
    for k in range(9):
        top, left = (k // 3) * cell + 4, (k % 3) * cell + 4  # (36 - 28) / 2 = 4 into the cell
        np.testing.assert_allclose(centred[:, k], big[:, top:top + patch, left:left + patch], atol=1e-4)
    jittered = ops.convert_to_numpy(build("context_prediction").patches(x))  # jitter 4
    shifts = set()
    for b in range(3):
        for k in range(9):
            top, left = (k // 3) * cell + 4, (k % 3) * cell + 4
            found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                     if np.allclose(jittered[b, k], big[b, top + dy:top + dy + patch, left + dx:left + dx + patch],
                                    atol=1e-4)]
            assert found, f"patch {k} of image {b} is no crop within 4 pixels of its cell's centre"
            shifts.update(found)
    assert len(shifts) > 5  # shifts are drawn per patch, not once
    # The embedding: the un-jittered grid's patch features, concatenated in grid order, L2-normalised.
    model = build("context_prediction")
    features = [ops.convert_to_numpy(model.encoder(centred[:, k], training=False)) for k in range(9)]
    expected = np.concatenate(features, axis=1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(ops.convert_to_numpy(model.embedder(x)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.multibackend
def test_context_prediction_targets_are_the_neighbour_positions():
    model = build("context_prediction")
    logits = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)  # 2 images x 8 neighbours
    # Row r is neighbour r % 8 of its image: cross-entropy against those targets.
    expected = ref_cross_entropy(logits, np.arange(16) % 8)
    loss = model.compute_loss(y_pred=ops.convert_to_tensor(logits))
    np.testing.assert_allclose(float(ops.convert_to_numpy(loss)), expected, rtol=1e-5)


@pytest.mark.parametrize("kind", ("simclr", "barlow_twins"))
def test_a_short_run_lowers_the_loss_without_collapse(kind, omniglot):
    images, labels = omniglot
    model = build(kind, filters=16)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    spread = lambda: ops.convert_to_numpy(model(images[:128])).std(axis=0).mean()  # per-dimension std
    before = spread()
    history = model.fit(sampler(kind, images, labels, 32, 8), epochs=4, verbose=0).history
    assert history["loss"][-1] < 0.95 * history["loss"][0], history["loss"]
    # Both objectives have a trivial solution, one point for every image (std 0), that their
    # negatives / redundancy term must keep away: the spread may not shrink below half the random encoder's.
    assert spread() > 0.5 * before, (spread(), before)
    assert history["feature_std"][-1] > 0.5 * history["feature_std"][0]


def test_a_short_run_learns_the_positions(omniglot):
    images, labels = omniglot
    model = build("context_prediction", filters=16)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(sampler("context_prediction", images, labels, 16, 8), epochs=4, verbose=0).history
    assert history["loss"][-1] < 0.95 * history["loss"][0], history["loss"]
    assert history["position_accuracy"][-1] > 1.5 / 8  # chance is 1/8; a constant embedding cannot beat it


@pytest.mark.multibackend
def test_bad_arguments_are_refused():
    encoder = conv4((28, 28, 1), filters=8)
    with pytest.raises(ValueError, match="augment must be a keras.Model"):
        SimCLR(encoder, augment=None)
    with pytest.raises(ValueError, match="temperature"):
        SimCLR(encoder, characters(28), temperature=0.0)
    with pytest.raises(ValueError, match="lambd"):
        BarlowTwins(encoder, characters(28), lambd=-1.0)
    with pytest.raises(ValueError, match="cell >= patch"):
        ContextPrediction(encoder, cell=30, jitter=2)
    with pytest.raises(ValueError, match="image_shape"):
        ContextPrediction(encoder, image_shape=(28, 28, 3))
    with pytest.raises(ValueError, match="view pairs"):
        SimCLR(encoder, characters(28))((np.zeros((2, 28, 28, 1), "float32"),) * 3, training=True)
