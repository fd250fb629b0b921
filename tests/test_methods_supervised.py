"""Siamese, Triplet and Classifier: fit() on every backend, .keras round-trips, metrics against numpy."""

import itertools

import keras
import numpy as np
import pytest

from zoo.backbones import conv4
from zoo.methods.classifier import Classifier
from zoo.methods.siamese import Siamese
from zoo.methods.triplet import Triplet

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
def trained(request):
    """A method fitted for one epoch of two steps, then 15 more epochs: weights and losses along the way."""
    name, build, (x, y) = request.param
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    initial = [np.array(w) for w in model.encoder.trainable_weights]
    batch_size = (len(y) + 1) // 2  # two steps per epoch
    first = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    after_two_steps = [np.array(w) for w in model.encoder.trainable_weights]
    rest = model.fit(x, y, batch_size=batch_size, epochs=15, shuffle=False, verbose=0)
    return {"model": model, "initial": initial, "after_two_steps": after_two_steps,
            "losses": first.history["loss"] + rest.history["loss"]}


@pytest.mark.multibackend
def test_two_training_steps_change_every_weight(trained):
    assert np.isfinite(trained["losses"][0])
    assert all(not np.allclose(a, b) for a, b in zip(trained["initial"], trained["after_two_steps"]))


@pytest.mark.multibackend
def test_loss_falls_on_a_separable_problem(trained):
    losses = trained["losses"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.multibackend
def test_keras_round_trip_gives_identical_embeddings(trained, tmp_path):
    model = trained["model"]
    images = separable(seed=1)[0]
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(np.array(loaded.embed(images)), np.array(model.embed(images)))
    np.testing.assert_array_equal(np.array(loaded.embedder(images)), np.array(model.embedder(images)))
    hyper = {k: v for k, v in model.get_config().items() if k not in model.NESTED}
    assert {k: loaded.get_config()[k] for k in hyper} == hyper


def naive_active_fraction(embeddings, labels, margin):
    """Share of valid (a, p, n) with margin + d(a, p) - d(a, n) > 0, by a triple loop."""
    active = valid = 0
    for a, p, n in itertools.product(range(len(labels)), repeat=3):
        if a != p and labels[a] == labels[p] and labels[n] != labels[a]:
            valid += 1
            d_ap = np.linalg.norm(embeddings[a] - embeddings[p])
            d_an = np.linalg.norm(embeddings[a] - embeddings[n])
            active += margin + d_ap - d_an > 0
    return active / valid


@pytest.mark.multibackend
def test_triplet_active_fraction_is_logged_and_matches_a_triple_loop():
    keras.utils.set_random_seed(0)
    images, labels = separable()
    model = Triplet(encoder(), mining="batch_hard", margin=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # weights stay: the logged batch is reproducible
    history = model.fit(images, labels, batch_size=len(labels), epochs=1, shuffle=False, verbose=0)
    embeddings = np.array(model(images, training=True)["embeddings"])  # batch statistics, as in the step
    expected = naive_active_fraction(embeddings, labels, 0.5)
    assert 0 < expected < 1
    assert history.history["active_fraction"][0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.multibackend
def test_siamese_predicts_the_distance_of_normalised_embeddings():
    images, labels = separable()
    (a, b), _ = pairs(images, labels)
    model = Siamese(encoder())
    distance = np.array(model((a, b)))
    ea, eb = np.array(model.embed(a)), np.array(model.embed(b))
    np.testing.assert_allclose(distance, np.linalg.norm(ea - eb, axis=1), atol=1e-5)
    assert np.all(distance[np.all(a == b, axis=(1, 2, 3))] == 0)


@pytest.mark.multibackend
def test_classifier_accuracy_metric_matches_argmax():
    keras.utils.set_random_seed(0)
    images, labels = separable()
    model = Classifier(encoder(), num_classes=4)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    history = model.fit(images, labels, batch_size=len(labels), epochs=1, shuffle=False, verbose=0)
    logits = np.array(model(images, training=True)["logits"])
    assert history.history["accuracy"][0] == pytest.approx(np.mean(logits.argmax(1) == labels))


def test_embedder_drops_training_heads_and_augmentation():
    from zoo.data.augment import characters

    model = Triplet(encoder(), num_classes=4, augment=characters(SIZE, seed=0))
    images = separable()[0]
    # Inference skips the augmentation: the embedder equals the normalised encoder features.
    features = np.array(model.encoder(images))
    expected = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(np.array(model.embedder(images)), expected, atol=1e-6)
    assert model.embedder.count_params() == model.encoder.count_params()


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


def numpy_cross_entropy(logits, labels, smoothing=0.0):
    """Mean cross-entropy with label smoothing: targets (1 - s) one-hot + s / C."""
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    targets = np.eye(logits.shape[1])[labels] * (1 - smoothing) + smoothing / logits.shape[1]
    return float(np.mean(-np.sum(targets * log_p, axis=1)))


@pytest.mark.multibackend
def test_classifier_loss_is_the_smoothed_cross_entropy():
    images, labels = separable()
    model = Classifier(encoder(), num_classes=4, label_smoothing=0.2)
    outputs = model(images)
    loss = float(model.compute_loss(x=images, y=labels, y_pred=outputs))
    assert loss == pytest.approx(numpy_cross_entropy(np.array(outputs["logits"]), labels, 0.2), rel=1e-5)


@pytest.mark.multibackend
def test_triplet_loss_sums_its_terms_with_their_weights():
    from zoo import losses

    images, labels = separable()
    model = Triplet(encoder(), mining="batch_hard", margin=0.3, hard_cluster_weight=0.5, cluster_margin=0.1,
                    num_classes=4, classifier_weight=2.0)
    outputs = model(images)
    embeddings = np.array(outputs["embeddings"])
    expected = (float(losses.triplet_batch_hard(labels, embeddings, 0.3))
                + 0.5 * float(losses.hard_cluster(labels, embeddings, 0.1))
                + 2.0 * numpy_cross_entropy(np.array(outputs["logits"]), labels))
    loss = float(model.compute_loss(x=images, y=labels, y_pred=outputs))
    assert loss == pytest.approx(expected, rel=1e-5)
