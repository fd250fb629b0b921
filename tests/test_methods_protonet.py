"""ProtoNet: its loss and accuracy against the paper's formula, evaluate(), bad episodes.

Round trips, fit() and the embedder: test_methods.py.
"""

import keras
import numpy as np
import pytest
from keras import ops

from zoo.backbones import conv4
from zoo.losses import prototypical
from zoo.methods.protonet import ProtoNet

from references import ref_prototypical

WAY, SHOT, QUERIES = 3, 2, 2


def _model(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return ProtoNet(conv4(filters=8), **{"way": WAY, "shot": SHOT, "queries": QUERIES, **kwargs})


def _episode(seed=0):
    """One class-major episode of random 28x28 'characters' (rows c*(SHOT+QUERIES)+j)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (WAY * (SHOT + QUERIES), 28, 28, 1)).astype("float32")
    y = np.repeat(np.arange(WAY), SHOT + QUERIES).astype("int32")
    return x, y


def _reference(features):
    """(loss, accuracy) of the class-major episode's features (WAY * (SHOT + QUERIES), F), one query at a time."""
    episode = features.reshape(WAY, SHOT + QUERIES, -1)
    return ref_prototypical(episode[:, :SHOT], episode[:, SHOT:])


@pytest.mark.multibackend
def test_loss_is_the_prototypical_loss_of_the_episode():
    model = _model()
    x, y = _episode()
    features = model(x, training=False)
    loss = float(ops.convert_to_numpy(model.compute_loss(x, y, features, training=False)))
    features = ops.convert_to_numpy(features)
    expected_loss, expected_accuracy = _reference(features)
    episode = features.reshape(WAY, SHOT + QUERIES, -1)
    library_loss, _ = prototypical(episode[:, :SHOT], episode[:, SHOT:])
    assert loss == pytest.approx(expected_loss, rel=1e-4)
    assert loss == pytest.approx(float(ops.convert_to_numpy(library_loss)), rel=1e-6)
    assert float(ops.convert_to_numpy(model.accuracy_tracker.result())) == pytest.approx(expected_accuracy)


@pytest.mark.multibackend
def test_evaluate_scores_the_episode_with_inference_statistics():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = _episode()
    # evaluate() goes through the same loss, with the batch-norm statistics of inference.
    loss, accuracy = model.evaluate(x, y, batch_size=len(x), verbose=0)
    expected_loss, expected_accuracy = _reference(ops.convert_to_numpy(model(x, training=False)))
    assert loss == pytest.approx(expected_loss, rel=1e-4)
    assert accuracy == pytest.approx(expected_accuracy)


def test_bad_episodes_and_hyper_parameters_are_refused():
    model = _model()
    x, y = _episode()
    with pytest.raises(ValueError, match="way \\* \\(shot \\+ queries\\)"):
        model.compute_loss(x[:-1], y[:-1], model(x[:-1]))
    with pytest.raises(ValueError, match="way must be an int >= 2"):
        ProtoNet(conv4(filters=8), way=1)
    with pytest.raises(ValueError, match="shot must be an int >= 1"):
        ProtoNet(conv4(filters=8), shot=0)
