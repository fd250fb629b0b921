"""Every method of zoo.methods through the same checks, on every backend.

Config and .keras round trips, two fit() steps that move the weights, and a published embedder
that holds the encoder's weights and none of the training-only parts (heads, projectors,
augmentation). What is particular to a method (its loss against numpy, mining, patches) is
tested in test_methods_*.py and test_clip.py.
"""

import json
from typing import NamedTuple

import keras
import numpy as np
import pytest
from keras import ops

import zoo.methods
from zoo import backbones
from zoo.data.augment import square_crops
from zoo.runtime import Tokenizer

pytestmark = pytest.mark.multibackend

SIZE, CHANNELS = 16, 1  # conv4's four 2x2 pools take 16x16 to 1x1: F = filters
N = 8  # images per case: two fit() steps of 4


class Case(NamedTuple):
    model: keras.Model
    x: object  # fit() inputs
    y: object  # fit() targets, or None
    heads: tuple  # attribute names of the sub-models outside the (image) embedder


def images(make_images, channels=CHANNELS):
    """(N, SIZE, SIZE, channels) raw pixels, 4 classes x 2 images in class-major order, and their labels (N,)."""
    return make_images(N, SIZE, channels), np.repeat(np.arange(4), 2).astype("int32")


def conv4():
    return backbones.conv4((SIZE, SIZE, CHANNELS), filters=4)


def siamese(make_images):
    x, labels = images(make_images)
    a, b = x, np.roll(x, 1, axis=0)  # pairs (i, i - 1): half of them within a class
    same = (labels == np.roll(labels, 1)).astype("float32")
    return Case(zoo.methods.Siamese(conv4(), augment=square_crops(SIZE, seed=0)), (a, b), same, ("augment",))


def triplet(make_images):
    x, labels = images(make_images)
    model = zoo.methods.Triplet(conv4(), mining="batch_hard", num_classes=4, augment=square_crops(SIZE, seed=0))
    return Case(model, x, labels, ("head", "augment"))


def metric_learning(make_images):
    x, labels = images(make_images)
    model = zoo.methods.MetricLearning(conv4(), loss="contrastive", num_classes=4, classifier_weight=0.5,
                                       augment=square_crops(SIZE, seed=0))
    return Case(model, x, labels, ("head", "augment"))


def classifier(make_images):
    x, labels = images(make_images)
    model = zoo.methods.Classifier(conv4(), num_classes=4, label_smoothing=0.1, augment=square_crops(SIZE, seed=0))
    return Case(model, x, labels, ("head", "augment"))


def protonet(make_images):
    x, labels = images(make_images)  # two episodes of 2 classes x (1 support + 1 query)
    return Case(zoo.methods.ProtoNet(conv4(), way=2, shot=1, queries=1), x, labels, ())


def simclr(make_images):
    x, _ = images(make_images)
    model = zoo.methods.SimCLR(conv4(), square_crops(SIZE, seed=0), temperature=0.2, projection="8-4")
    return Case(model, (x, x), None, ("projector", "augment"))


def barlow_twins(make_images):
    x, _ = images(make_images)
    model = zoo.methods.BarlowTwins(conv4(), square_crops(SIZE, seed=0), lambd=0.02, projection="8-8")
    return Case(model, (x, x), None, ("projector", "augment"))


def micle(make_images):
    x, _ = images(make_images)
    model = zoo.methods.MICLe(conv4(), square_crops(SIZE, seed=0), temperature=0.2, projection="8-4")
    return Case(model, (x, np.roll(x, 1, axis=0)), None, ("projector", "augment"))  # two images per pair


def context_prediction(make_images):
    x, _ = images(make_images)
    model = zoo.methods.ContextPrediction(conv4(), image_shape=(SIZE, SIZE, CHANNELS), cell=20, jitter=2, hidden=8)
    return Case(model, (x, x), None, ("head",))


def clip(make_images):
    x, _ = images(make_images, channels=3)
    tokens = Tokenizer(8).encode([f"caption {i}" for i in range(N)])  # (N, 8) int32
    image_tower = backbones.small_resnet((SIZE, SIZE, 3), widths=(4,), output_dim=8)
    text_tower = backbones.text_transformer(Tokenizer.vocab_size, 8, width=8, depth=1, heads=2, output_dim=8)
    model = zoo.methods.CLIP(image_tower, text_tower, augment=square_crops(SIZE, seed=0))
    return Case(model, (x, tokens), None, ("text_encoder", "augment"))


BUILDERS = {
    "Siamese": siamese,
    "Triplet": triplet,
    "MetricLearning": metric_learning,
    "Classifier": classifier,
    "ProtoNet": protonet,
    "SimCLR": simclr,
    "BarlowTwins": barlow_twins,
    "MICLe": micle,
    "ContextPrediction": context_prediction,
    "CLIP": clip,
}


def test_every_method_is_covered():
    assert set(BUILDERS) == set(zoo.methods.__all__) - {"EmbeddingMethod"}


@pytest.fixture(params=sorted(BUILDERS))
def case(request, make_images):
    keras.utils.set_random_seed(0)
    built = BUILDERS[request.param](make_images)
    assert type(built.model) is getattr(zoo.methods, request.param)
    return built


def embedder_inputs(case):
    """The embedder's input batch: the images (the first of a pair, or CLIP's image half)."""
    return case.x[0] if isinstance(case.x, tuple) else case.x


def outputs(model, x):
    """The published embedders' outputs on x as numpy: (image,) or, for CLIP, (image, text)."""
    if isinstance(model, zoo.methods.CLIP):
        return (ops.convert_to_numpy(model.embedder(x[0])), ops.convert_to_numpy(model.text_embedder(x[1])))
    return (ops.convert_to_numpy(model.embedder(x[0] if isinstance(x, tuple) else x)),)


def canonical(config):
    """A config as its .keras JSON reads back (tuples become lists)."""
    return json.loads(json.dumps(config, sort_keys=True))


def ids(variables):
    return {id(v) for v in variables}


def test_config_round_trip(case):
    model = case.model
    config = model.get_config()
    before = canonical(config)
    rebuilt = type(model).from_config(config)
    assert canonical(config) == before  # from_config leaves the caller's dict intact (Keras' deserialisation
    assert type(rebuilt) is type(model)  # empties nested Functional configs in place)
    assert canonical(rebuilt.get_config()) == canonical(config)
    for key in model.NESTED:  # the sub-models are rebuilt, not shared
        assert getattr(model, key) is None or getattr(rebuilt, key) is not getattr(model, key)
    # Fresh weights: the rebuilt model embeds differently (so the .keras test below can fail).
    assert not np.allclose(outputs(rebuilt, case.x)[0], outputs(model, case.x)[0], atol=1e-4)


def test_keras_round_trip_gives_the_same_embeddings(case, tmp_path):
    model = case.model
    model.save(tmp_path / "method.keras")
    loaded = keras.saving.load_model(tmp_path / "method.keras", safe_mode=True)
    assert type(loaded) is type(model)
    assert canonical(loaded.get_config()) == canonical(model.get_config())
    # Every weight comes back, the training-only parts' too, without a forward pass. (Not the random
    # generators' states: Keras does not save them.)
    for restored, saved in zip(loaded.weights, model.weights, strict=True):  # same order, new names
        np.testing.assert_array_equal(ops.convert_to_numpy(restored), ops.convert_to_numpy(saved), err_msg=saved.path)
    for got, want in zip(outputs(loaded, case.x), outputs(model, case.x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # The embedder alone, as published, round-trips too.
    model.embedder.save(tmp_path / "embedder.keras")
    embedder = keras.saving.load_model(tmp_path / "embedder.keras", safe_mode=True)
    np.testing.assert_allclose(ops.convert_to_numpy(embedder(embedder_inputs(case))), outputs(model, case.x)[0],
                               rtol=1e-6, atol=1e-6)


def test_config_keeps_trainable_and_the_dtype_policy(case):
    config = case.model.get_config()
    assert config["trainable"] is True and keras.dtype_policies.deserialize(config["dtype"]).name == "float32"
    rebuilt = type(case.model).from_config({**config, "trainable": False, "dtype": "mixed_bfloat16"})
    assert rebuilt.trainable is False and rebuilt.dtype_policy.name == "mixed_bfloat16"
    again = rebuilt.get_config()
    assert again["trainable"] is False and keras.dtype_policies.deserialize(again["dtype"]).name == "mixed_bfloat16"


def test_the_embedder_is_built_once(case):
    model = case.model
    assert model.embedder is model.embedder
    if isinstance(model, zoo.methods.CLIP):
        assert model.text_embedder is model.text_embedder
    first = model.embedder
    keras.config.set_dtype_policy("mixed_bfloat16")  # as a recipe's --precision during its fit
    try:
        assert model.embedder is not first  # a policy later: layers of that policy, none of the earlier one's
    finally:
        keras.config.set_dtype_policy("float32")
    assert ids(model.embedder.variables) == ids(first.variables)  # either way the encoder's own weights


def test_compile_with_a_loss_and_fit_with_sample_weights_are_refused(case):
    model = case.model
    with pytest.raises(ValueError, match="computes its own loss: compile it without loss="):
        model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="computes its own loss"):
        model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="computes its own loss"):
        model.compile(optimizer="sgd", loss_weights=[1.0])
    model.compile(optimizer="sgd")
    rows = len(embedder_inputs(case))
    with pytest.raises(ValueError, match="without sample_weight= or class_weight="):
        model.fit(case.x, case.y, sample_weight=np.ones(rows), epochs=1, verbose=0)
    if case.y is not None:
        with pytest.raises(ValueError, match="without sample_weight= or class_weight="):
            model.fit(case.x, case.y, class_weight={0: 1.0, 1: 2.0}, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="without sample_weight= or class_weight="):  # a dataset's own weights
        model.compute_loss(x=case.x, y=case.y, y_pred=model(case.x), sample_weight=np.ones(rows))


def test_two_fit_steps_move_the_encoder_and_the_heads(case):
    model = case.model
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    parts = {"encoder": model.encoder, **{key: getattr(model, key) for key in case.heads}}
    before = {key: [ops.convert_to_numpy(w) for w in part.trainable_weights] for key, part in parts.items()}
    history = model.fit(case.x, case.y, batch_size=N // 2, epochs=1, shuffle=False, verbose=0).history
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 2
    assert np.isfinite(history["loss"][0])
    moved = {key: [not np.allclose(a, ops.convert_to_numpy(b)) for a, b in zip(before[key], part.trainable_weights)]
             for key, part in parts.items()}
    assert moved["encoder"] and all(moved["encoder"])  # every encoder weight gets a gradient
    for key in case.heads:
        assert not before[key] or any(moved[key]), f"{key} did not move"  # augmentation has no weights


def test_embedder_holds_the_encoder_and_no_training_only_part(case):
    model = case.model
    embedder = model.embedder
    assert embedder.inputs[0].name == "images"
    # Variables, not weights: an augmentation pipeline holds only its seed generators' states.
    assert ids(embedder.variables) == ids(model.encoder.variables)
    assert ids(embedder.variables) <= ids(model.variables)
    for key in case.heads:
        head = getattr(model, key)
        assert head.variables, f"{key} has no variables: the check below could not fail"
        assert ids(head.variables) <= ids(model.variables)
        assert ids(head.variables).isdisjoint(ids(embedder.variables)), key
    if isinstance(model, zoo.methods.CLIP):
        assert ids(model.text_embedder.variables) == ids(model.text_encoder.variables)
        assert id(model.log_logit_scale) not in ids(embedder.variables) | ids(model.text_embedder.variables)
    # Inference skips the augmentation: the embedding is the normalised encoder features (on the grid's
    # patches for context prediction).
    x = embedder_inputs(case)
    if isinstance(model, zoo.methods.ContextPrediction):
        patches = ops.convert_to_numpy(model.patches(x, training=False))  # (N, 9, P, P, C)
        features = np.concatenate([ops.convert_to_numpy(model.encoder(patches[:, k], training=False))
                                   for k in range(9)], axis=1)  # (N, 9F)
    else:
        features = ops.convert_to_numpy(model.encoder(x, training=False))  # (N, F)
    embeddings = ops.convert_to_numpy(embedder(x))
    np.testing.assert_allclose(embeddings, features / np.linalg.norm(features, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-5)
