"""The LiteRT exporter: every tower of every entry ships `<role>.tflite`, equal to its ONNX graph (1e-4),
run with the ai-edge-litert interpreter alone; the batch stays dynamic."""

import numpy as np
import onnxruntime as ort
import pytest

import zoo
from zoo import registry
from zoo.export import litert
from test_zoo_entries import tower_inputs  # random pixels or byte-token rows of a tower

ENTRIES = registry.list_models()
ATOL = litert.PARITY_ATOL


@pytest.mark.parametrize("name", ENTRIES)
def test_every_tower_ships_a_tflite_equal_to_its_onnx(name):
    card = zoo.info(name)
    folder = registry.exports_dir() / name
    with np.load(folder / "golden.npz") as golden:
        for role, spec in card.towers.items():
            assert spec["tflite"] == f"{role}.tflite" and spec["tflite"] in card.files
            session = ort.InferenceSession(str(folder / spec["onnx"]), providers=["CPUExecutionProvider"])
            for x in (golden[f"{role}__inputs"], tower_inputs(spec, 1, seed=1), tower_inputs(spec, 5, seed=2)):
                got = litert.run(folder / spec["tflite"], spec["input"], x)
                expected = session.run(["embeddings"], {spec["input"]: x})[0]
                assert got.shape == expected.shape
                assert np.abs(got - expected).max() <= ATOL, f"{name}/{role}: {np.abs(got - expected).max():.2e}"


def test_the_interpreter_runs_without_tensorflow(tmp_path):
    """What the README's Deploy section promises: ai-edge-litert and numpy, no TensorFlow import."""
    import subprocess
    import sys

    name = next(n for n in ENTRIES if zoo.info(n).towers.get("embedder"))
    path = registry.exports_dir() / name / "embedder.tflite"
    script = (f"import sys, numpy as np\nfrom ai_edge_litert.interpreter import Interpreter\n"
              f"runner = Interpreter(model_path={str(path)!r}).get_signature_runner()\n"
              f"x = np.zeros((2, {', '.join(map(str, zoo.info(name).input_shape))}), np.float32)\n"
              f"print(runner(images=x)['embeddings'].shape, 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "False" and f"(2, {zoo.info(name).embedding_dim})" in done.stdout
