"""LiteRT exporter: `<role>.tflite` per tower, converted from the serving function with TensorFlow's LiteRT
converter, checked against the ONNX graph on the golden inputs with the `ai-edge-litert` interpreter.

Run it with `ai-edge-litert` alone (no TensorFlow):

    from ai_edge_litert.interpreter import Interpreter
    runner = Interpreter(model_path="exports/protonet/embedder.tflite").get_signature_runner()
    embeddings = runner(images=images)["embeddings"]   # images: float32 (B, H, W, C), pixels 0..255
"""

from __future__ import annotations

from zoo.export.saved_model import check_parity

ORDER = 40
KEY = "tflite"
PARITY_ATOL = 1e-4  # LiteRT's float32 kernels vs onnxruntime's


def filename(role, first) -> str:
    return f"{role}.tflite"


def export(folder, card, towers, golden, context):
    """Convert each tower to LiteRT (float32 builtin ops, dynamic batch) and check it against its ONNX graph."""
    import onnxruntime as ort

    for role, model in towers.items():
        spec = card.towers[role]
        (folder / spec[KEY]).write_bytes(convert(model, spec))
        session = ort.InferenceSession(str(folder / spec["onnx"]), providers=["CPUExecutionProvider"])
        expected = session.run(["embeddings"], {spec["input"]: golden[role]})[0]
        check_parity("LiteRT vs ONNX", role, run(folder / spec[KEY], spec["input"], golden[role]), expected,
                     PARITY_ATOL)
    return card


def convert(model, spec) -> bytes:
    """The `.tflite` bytes of a tower: inputs -> {"embeddings"}, through Keras' ExportArchive (a SavedModel that
    tracks Keras variables; converting a plain tf.function of a Keras 3 model froze its Dense kernels to NaN
    here, TF 2.21) and TensorFlow's LiteRT converter, as `keras.Model.export(format="litert")` does."""
    import tempfile

    import keras
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as scratch:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", lambda x: {"embeddings": tf.cast(model(x, training=False), tf.float32)},
                             input_signature=[tf.TensorSpec([None, *spec["shape"]], spec["dtype"], name=spec["input"])])
        archive.write_out(scratch, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch)
        converter.experimental_enable_resource_variables = True
        return converter.convert()


def run(path, input_name, inputs):
    """Embeddings of `inputs` through a `.tflite` file with the ai-edge-litert interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return runner(**{input_name: inputs})["embeddings"]
