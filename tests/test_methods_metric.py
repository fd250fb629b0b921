"""MetricLearning: every registered loss of labelled batches trained through the one method; the inputs it hands a
loss (in-batch pairs, the class-centre head, a teacher's embeddings) and its loss against the numpy oracles; the
heads it owns are saved and not published; Triplet as MetricLearning; argument checks.

The oracles are those of tests/test_losses.py (`ORACLES`: one line per registered loss), so a loss added there is
trained and checked here without a line of its own. Round trips and the embedder of the default case:
test_methods.py.
"""

import keras
import numpy as np
import pytest
from keras import ops

from zoo import losses
from zoo.methods.metric import ClassCentres, MetricLearning, in_batch_pairs
from zoo.methods.triplet import Triplet

from references import ordered_pairs, ref_cross_entropy, ref_hard_cluster
from test_losses import ORACLES
from test_methods_supervised import encoder, separable

LABEL_LOSSES = losses.label_losses()
N_CLASSES = 4


def method(loss, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return MetricLearning(encoder(), loss=loss, num_classes=N_CLASSES, **kwargs)


def numpy_inputs(model, labels, embeddings):
    """The inputs the model's loss declares, made in numpy from the batch and the model's own heads."""
    made = {"labels": labels, "embeddings": embeddings}
    made["same"], made["distance"] = ordered_pairs(labels, embeddings)
    if model.centres is not None:
        made["centres"] = ops.convert_to_numpy(model.centres.kernel)
    return [made[k] for k in model.loss_spec.inputs]


def ids(variables):
    return {id(v) for v in variables}


@pytest.mark.multibackend
@pytest.mark.parametrize("loss", LABEL_LOSSES)
def test_every_label_loss_trains_through_the_one_method(loss):
    images, labels = separable()
    model = method(loss)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = [ops.convert_to_numpy(w) for w in model.trainable_weights]
    history = model.fit(images, labels, batch_size=8, epochs=16, shuffle=False, verbose=0).history
    curve = history["loss"]
    assert np.all(np.isfinite(curve)) and curve[-1] < 0.5 * curve[0], curve
    np.testing.assert_allclose(history[model.loss_spec.term], curve, rtol=1e-5, atol=1e-6)  # the loss alone
    for name in model.loss_spec.metrics:
        assert np.all(np.isfinite(history[name]))
    moved = [not np.allclose(a, ops.convert_to_numpy(b)) for a, b in zip(before, model.trainable_weights)]
    assert all(moved), [w.path for w, m in zip(model.trainable_weights, moved) if not m]  # centres too


@pytest.mark.multibackend
@pytest.mark.parametrize("loss", LABEL_LOSSES)
def test_the_method_loss_is_the_oracle_plus_its_cluster_and_softmax_terms(loss):
    images, labels = separable()
    model = method(loss, hard_cluster_weight=0.5, cluster_margin=0.1, classifier_weight=2.0)
    outputs = model(images)
    embeddings = ops.convert_to_numpy(outputs["embeddings"])
    oracle = ORACLES[loss][0](*numpy_inputs(model, labels, embeddings), **model.loss_options)
    expected = (oracle + 0.5 * ref_hard_cluster(labels, embeddings, 0.1)
                + 2.0 * ref_cross_entropy(ops.convert_to_numpy(outputs["logits"]), labels))
    got = float(ops.convert_to_numpy(model.compute_loss(x=images, y=labels, y_pred=outputs)))
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("loss", LABEL_LOSSES)
def test_keras_round_trip_keeps_the_loss_its_options_and_its_heads(loss, tmp_path):
    images, labels = separable()
    model = method(loss, loss_options={}, classifier_weight=1.0)
    model.save(tmp_path / "method.keras")
    loaded = keras.saving.load_model(tmp_path / "method.keras", safe_mode=True)
    assert type(loaded) is MetricLearning and loaded.loss_name == loss
    assert loaded.loss_options == model.loss_options == losses.get_loss(loss).options
    for restored, saved in zip(loaded.weights, model.weights, strict=True):  # the heads' weights too
        np.testing.assert_array_equal(ops.convert_to_numpy(restored), ops.convert_to_numpy(saved))
    got = loaded.compute_loss(x=images, y=labels, y_pred=loaded(images))
    want = model.compute_loss(x=images, y=labels, y_pred=model(images))
    np.testing.assert_allclose(ops.convert_to_numpy(got), ops.convert_to_numpy(want), rtol=1e-6)
    heads = [part for part in (model.head, model.centres) if part is not None]
    assert heads and all(ids(part.variables).isdisjoint(ids(model.embedder.variables)) for part in heads)
    assert ids(model.embedder.variables) == ids(model.encoder.variables)


@pytest.mark.multibackend
@pytest.mark.parametrize("size", [2, 5, 12])
def test_in_batch_pairs_are_every_ordered_pair(size):
    rng = np.random.default_rng(size)
    labels = rng.integers(0, 3, size).astype(np.int32)
    x = rng.normal(size=(size, 4)).astype(np.float32)
    same, distance = (ops.convert_to_numpy(t) for t in in_batch_pairs(labels, x))
    want_same, want_distance = ordered_pairs(labels, x)
    np.testing.assert_array_equal(same, want_same)
    np.testing.assert_allclose(distance, want_distance, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- heads a loss declares: centres, a teacher


def centre_softmax(labels, embeddings, centres, scale=4.0):
    """A loss of this file's own: softmax cross-entropy over scale * cos(embedding, centre)."""
    from zoo.ops import l2_normalize

    logits = scale * ops.matmul(l2_normalize(ops.cast(embeddings, "float32")),
                                ops.transpose(l2_normalize(ops.cast(centres, "float32"))))
    return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))


def to_teacher(embeddings, teacher):
    """A loss of this file's own: mean squared distance of each embedding to its teacher's."""
    return ops.mean(ops.sum(ops.square(embeddings - teacher), axis=1))


@pytest.fixture
def registered():
    """Registers the two losses above for one test (one file each would do the same in zoo/losses)."""
    losses.register_loss("test_centre_softmax", inputs=("labels", "embeddings", "centres"))(centre_softmax)
    losses.register_loss("test_to_teacher", inputs=("embeddings", "teacher"))(to_teacher)
    yield
    del losses.LOSSES["test_centre_softmax"], losses.LOSSES["test_to_teacher"]


@pytest.mark.multibackend
def test_a_centre_loss_gets_the_weights_of_a_head_the_method_owns(registered, tmp_path):
    images, labels = separable()
    model = method("test_centre_softmax", loss_options={"scale": 3.0})
    assert isinstance(model.centres, ClassCentres) and tuple(model.centres.kernel.shape) == (N_CLASSES, 8)
    outputs = model(images)
    e, c = ops.convert_to_numpy(outputs["embeddings"]), ops.convert_to_numpy(model.centres.kernel)
    cosines = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T
    got = float(ops.convert_to_numpy(model.compute_loss(x=images, y=labels, y_pred=outputs)))
    assert got == pytest.approx(ref_cross_entropy(3.0 * cosines, labels), rel=1e-5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert not np.allclose(c, ops.convert_to_numpy(model.centres.kernel))  # trained with the loss
    assert ids(model.centres.variables).isdisjoint(ids(model.embedder.variables))  # not published
    model.save(tmp_path / "method.keras")
    loaded = keras.saving.load_model(tmp_path / "method.keras", safe_mode=True)
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded.centres.kernel),
                                  ops.convert_to_numpy(model.centres.kernel))


@pytest.mark.multibackend
def test_a_teacher_loss_gets_the_frozen_teachers_embeddings_of_the_same_images(registered):
    from zoo.backbones import embedder_from

    images, _ = separable()
    keras.utils.set_random_seed(1)
    teacher = embedder_from(encoder())
    model = method("test_to_teacher", teacher=teacher)
    outputs = model(images)
    want = ops.convert_to_numpy(teacher(images))
    np.testing.assert_allclose(ops.convert_to_numpy(outputs["teacher"]), want, rtol=1e-6, atol=1e-6)
    e = ops.convert_to_numpy(outputs["embeddings"])
    got = float(ops.convert_to_numpy(model.compute_loss(x=images, y=None, y_pred=outputs)))  # no labels needed
    assert got == pytest.approx(np.mean(np.sum((e - want) ** 2, axis=1)), rel=1e-5)
    frozen = [ops.convert_to_numpy(w) for w in teacher.weights]
    before = [ops.convert_to_numpy(w) for w in model.encoder.trainable_weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(images, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert all(np.array_equal(a, ops.convert_to_numpy(b)) for a, b in zip(frozen, teacher.weights))
    assert all(not np.allclose(a, ops.convert_to_numpy(b)) for a, b in zip(before, model.encoder.trainable_weights))
    assert ids(teacher.variables).isdisjoint(ids(model.embedder.variables))


# ---------------------------------------------------------------- Triplet, arguments


@pytest.mark.multibackend
@pytest.mark.parametrize("mining", ["semi_hard", "batch_hard", "batch_all"])
def test_triplet_is_metric_learning_with_the_miners_loss(mining):
    images, labels = separable()
    triplet = Triplet(encoder(), mining=mining, margin=0.3, squared=True, hard_cluster_weight=0.5,
                      num_classes=N_CLASSES, classifier_weight=2.0)
    same = MetricLearning(encoder(), loss=mining, loss_options={"margin": 0.3, "squared": True},
                          hard_cluster_weight=0.5, num_classes=N_CLASSES, classifier_weight=2.0)
    same.set_weights(triplet.get_weights())
    got, want = (float(ops.convert_to_numpy(m.compute_loss(x=images, y=labels, y_pred=m(images))))
                 for m in (triplet, same))
    assert got == pytest.approx(want, rel=1e-6)
    config = triplet.get_config()
    assert {"mining", "margin", "squared"} <= set(config) and not {"loss", "loss_options"} & set(config)
    assert (config["mining"], config["margin"], config["squared"]) == (mining, 0.3, True)


def test_a_triplet_config_written_before_metric_learning_still_loads():
    # The keys Triplet.get_config wrote before it was a MetricLearning (no trainable, no dtype).
    config = {"name": "triplet", "encoder": keras.saving.serialize_keras_object(encoder()), "head": None,
              "augment": None, "mining": "batch_hard", "margin": 0.3, "squared": False, "hard_cluster_weight": 0.0,
              "cluster_margin": 0.2, "num_classes": None, "classifier_weight": 1.0}
    model = Triplet.from_config(config)
    assert (model.mining, model.loss_name, model.loss_options) == ("batch_hard", "batch_hard",
                                                                   {"margin": 0.3, "squared": False})
    assert model.head is None and model.trainable and model.dtype_policy.name == "float32"


@pytest.mark.parametrize("make, match", [
    (lambda: MetricLearning(encoder(), loss="hardest"), "unknown loss 'hardest'; registered losses: .*semi_hard"),
    (lambda: MetricLearning(encoder(), loss="semi_hard", loss_options={"scale": 2.0}), "no option scale"),
    (lambda: MetricLearning(encoder(), loss="semi_hard", classifier_weight=1.0), "give num_classes"),
    (lambda: MetricLearning(encoder(), loss="test_centre_softmax"), "one centre per training class"),
    (lambda: MetricLearning(encoder(), loss="test_to_teacher"), "give the method a teacher"),
    (lambda: MetricLearning(encoder(), loss="semi_hard", teacher=encoder()), "teacher given, but loss"),
    (lambda: MetricLearning(encoder(), loss="semi_hard", centres=ClassCentres(3, 8)), "centres given, but loss"),
    (lambda: MetricLearning(encoder(), loss="semi_hard", num_classes=1), "num_classes"),
    (lambda: MetricLearning(encoder(), loss="semi_hard", hard_cluster_weight=-1.0), ">= 0"),
])
def test_bad_arguments_raise_clear_errors(registered, make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_label_loss_without_labels_is_refused():
    images, _ = separable()
    model = MetricLearning(encoder(), loss="semi_hard")
    with pytest.raises(ValueError, match="needs y = labels"):
        model.compute_loss(x=images, y=None, y_pred=model(images))
