"""Siamese, Triplet and Classifier: their losses and metrics against the numpy references, learning on a
separable problem, argument checks. Round trips, two fit() steps and the embedder: test_methods.py."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from zoo.backbones import conv4
from zoo.methods.classifier import Classifier
from zoo.methods.siamese import Siamese
from zoo.methods.triplet import Triplet

from references import ref_active_fraction, ref_batch_hard, ref_cross_entropy, ref_hard_cluster

SIZE = 16  # conv4's four 2x2 pools take 16x16 to 1x1


def separable(n_classes=4, per_class=4, seed=0):
    """Images (N, 16, 16, 1) raw 0..255 whose class is a bright quadrant/stripe pattern, plus noise; labels (N,)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class).astype("int32")
    images = rng.uniform(200, 255, (len(labels), SIZE, SIZE, 1)).astype("float32")
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        images[i, r * 8:(r + 1) * 8, q * 8:(q + 1) * 8] -= 180  # dark ink = bright after conv4's INK_BRIGHT
    return images, labels


def encoder(filters=8):
    return conv4((SIZE, SIZE, 1), filters=filters)


def pairs(images, labels):
    """All (i, j), i < j, pairs of the batch: ((a, b), same)."""
    i, j = np.array(list(itertools.combinations(range(len(labels)), 2))).T
    return (images[i], images[j]), (labels[i] == labels[j]).astype("float32")


def methods():
    """(name, builder, (x, y)) for every method and the triplet variants."""
    images, labels = separable()
    return [
        ("siamese", lambda: Siamese(encoder(), margin=1.0), pairs(images, labels)),
        ("semi_hard", lambda: Triplet(encoder(), mining="semi_hard"), (images, labels)),
        ("batch_hard+cluster+ce", lambda: Triplet(encoder(), mining="batch_hard", hard_cluster_weight=0.5,
                                                  num_classes=4), (images, labels)),
        ("batch_all", lambda: Triplet(encoder(), mining="batch_all", squared=True), (images, labels)),
        ("classifier", lambda: Classifier(encoder(), num_classes=4, label_smoothing=0.1), (images, labels)),
    ]


METHODS = methods()


@pytest.fixture(scope="module", params=METHODS, ids=[m[0] for m in METHODS])
def losses_along_training(request):
    """The losses of a method fitted for 16 epochs of two steps each."""
    _, build, (x, y) = request.param
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    batch_size = (len(y) + 1) // 2  # two steps per epoch
    return model.fit(x, y, batch_size=batch_size, epochs=16, shuffle=False, verbose=0).history["loss"]


@pytest.mark.multibackend
def test_loss_falls_on_a_separable_problem(losses_along_training):
    losses = losses_along_training
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.multibackend
def test_triplet_active_fraction_is_logged_and_matches_a_triple_loop():
    keras.utils.set_random_seed(0)
    images, labels = separable()
    model = Triplet(encoder(), mining="batch_hard", margin=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # weights stay: the logged batch is reproducible
    history = model.fit(images, labels, batch_size=len(labels), epochs=1, shuffle=False, verbose=0)
    embeddings = ops.convert_to_numpy(model(images, training=True)["embeddings"])  # batch statistics, as in the step
    expected = ref_active_fraction(labels, embeddings, 0.5, squared=False)
    assert 0 < expected < 1
    assert history.history["active_fraction"][0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.multibackend
def test_siamese_predicts_the_distance_of_normalised_embeddings():
    images, labels = separable()
    (a, b), _ = pairs(images, labels)
    model = Siamese(encoder())
    distance = ops.convert_to_numpy(model((a, b)))
    ea, eb = ops.convert_to_numpy(model.embed(a)), ops.convert_to_numpy(model.embed(b))
    np.testing.assert_allclose(distance, np.linalg.norm(ea - eb, axis=1), atol=1e-5)
    assert np.all(distance[np.all(a == b, axis=(1, 2, 3))] == 0)


@pytest.mark.multibackend
def test_classifier_accuracy_metric_matches_argmax():
    keras.utils.set_random_seed(0)
    images, labels = separable()
    model = Classifier(encoder(), num_classes=4)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    history = model.fit(images, labels, batch_size=len(labels), epochs=1, shuffle=False, verbose=0)
    logits = ops.convert_to_numpy(model(images, training=True)["logits"])
    assert history.history["accuracy"][0] == pytest.approx(np.mean(logits.argmax(1) == labels))


@pytest.mark.parametrize("make,match", [
    (lambda: Triplet(encoder(), mining="hardest"), "mining"),
    (lambda: Triplet(encoder(), margin=0.0), "margin"),
    (lambda: Triplet(encoder(), num_classes=1), "num_classes"),
    (lambda: Siamese(encoder(), margin=-1.0), "margin"),
    (lambda: Classifier(encoder(), num_classes=1), "num_classes"),
    (lambda: Classifier(encoder(), num_classes=3, label_smoothing=1.0), "label_smoothing"),
    (lambda: Classifier(encoder(), num_classes=3, augment="flip"), "augment"),
    (lambda: Siamese(encoder())(separable()[0]), "pair"),
])
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.multibackend
def test_classifier_loss_is_the_smoothed_cross_entropy():
    images, labels = separable()
    model = Classifier(encoder(), num_classes=4, label_smoothing=0.2)
    outputs = model(images)
    loss = float(ops.convert_to_numpy(model.compute_loss(x=images, y=labels, y_pred=outputs)))
    assert loss == pytest.approx(ref_cross_entropy(ops.convert_to_numpy(outputs["logits"]), labels, 0.2), rel=1e-5)


@pytest.mark.multibackend
def test_triplet_loss_sums_its_terms_with_their_weights():
    images, labels = separable()
    model = Triplet(encoder(), mining="batch_hard", margin=0.3, hard_cluster_weight=0.5, cluster_margin=0.1,
                    num_classes=4, classifier_weight=2.0)
    outputs = model(images)
    embeddings = ops.convert_to_numpy(outputs["embeddings"])
    expected = (ref_batch_hard(labels, embeddings, 0.3, squared=False)
                + 0.5 * ref_hard_cluster(labels, embeddings, 0.1)
                + 2.0 * ref_cross_entropy(ops.convert_to_numpy(outputs["logits"]), labels))
    loss = float(ops.convert_to_numpy(model.compute_loss(x=images, y=labels, y_pred=outputs)))
    assert loss == pytest.approx(expected, rel=1e-5)
