"""ProtoNet: episodic fit() on every backend, its loss against the paper's formula, .keras round-trip."""

import numpy as np
import pytest

import keras

from zoo.backbones import conv4
from zoo.losses import prototypical
from zoo.methods.protonet import ProtoNet

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


def _numpy_prototypical(features):
    """The paper's loss, one query at a time: softmax over minus squared distances to class means."""
    episode = features.reshape(WAY, SHOT + QUERIES, -1).astype(np.float64)
    prototypes = [episode[c, :SHOT].mean(axis=0) for c in range(WAY)]
    losses, hits = [], []
    for c in range(WAY):
        for query in episode[c, SHOT:]:
            logits = np.array([-np.sum((query - p) ** 2) for p in prototypes])
            log_p = logits - (logits.max() + np.log(np.sum(np.exp(logits - logits.max()))))
            losses.append(-log_p[c])
            hits.append(np.argmax(logits) == c)
    return np.mean(losses), np.mean(hits)


@pytest.mark.multibackend
def test_loss_is_the_prototypical_loss_of_the_episode():
    model = _model()
    x, y = _episode()
    features = model(x, training=False)
    loss = float(model.compute_loss(x, y, features, training=False))
    features = keras.ops.convert_to_numpy(features)
    expected_loss, expected_accuracy = _numpy_prototypical(features)
    episode = features.reshape(WAY, SHOT + QUERIES, -1)
    library_loss, _ = prototypical(episode[:, :SHOT], episode[:, SHOT:])
    assert loss == pytest.approx(expected_loss, rel=1e-4)
    assert loss == pytest.approx(float(library_loss), rel=1e-6)
    assert float(model.accuracy_tracker.result()) == pytest.approx(expected_accuracy)


@pytest.mark.multibackend
def test_two_training_steps_lower_nothing_to_nan_and_move_the_encoder():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    (x0, y0), (x1, y1) = _episode(0), _episode(1)
    before = [np.copy(w) for w in model.encoder.get_weights()]
    history = model.fit(np.concatenate([x0, x1]), np.concatenate([y0, y1]), batch_size=len(x0),
                        epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert 0.0 <= history.history["accuracy"][0] <= 1.0
    assert int(model.optimizer.iterations.numpy()) == 2
    after = model.encoder.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    # evaluate() goes through the same loss, with the batch-norm statistics of inference.
    features = keras.ops.convert_to_numpy(model(x0, training=False))
    loss, _ = model.evaluate(x0, y0, batch_size=len(x0), verbose=0)
    assert loss == pytest.approx(_numpy_prototypical(features)[0], rel=1e-4)


@pytest.mark.multibackend
def test_keras_round_trip_gives_identical_embeddings(tmp_path):
    model = _model(way=4)
    x, _ = _episode()
    model.save(tmp_path / "protonet.keras")
    loaded = keras.saving.load_model(tmp_path / "protonet.keras", safe_mode=True)
    assert isinstance(loaded, ProtoNet)
    assert (loaded.way, loaded.shot, loaded.queries) == (4, SHOT, QUERIES)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.embed(x)),
                                  keras.ops.convert_to_numpy(model.embed(x)))
    embedder = model.embedder
    embedder.save(tmp_path / "embedder.keras")
    reloaded = keras.saving.load_model(tmp_path / "embedder.keras", safe_mode=True)
    embeddings = reloaded.predict(x, verbose=0)
    np.testing.assert_array_equal(embeddings, embedder.predict(x, verbose=0))
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_bad_episodes_and_hyper_parameters_are_refused():
    model = _model()
    x, y = _episode()
    with pytest.raises(ValueError, match="way \\* \\(shot \\+ queries\\)"):
        model.compute_loss(x[:-1], y[:-1], model(x[:-1]))
    with pytest.raises(ValueError, match="way must be an int >= 2"):
        ProtoNet(conv4(filters=8), way=1)
    with pytest.raises(ValueError, match="shot must be an int >= 1"):
        ProtoNet(conv4(filters=8), shot=0)
