"""ONNX exporter: `<role>.onnx` per tower (tf2onnx, opset 17, graph passes), checked against Keras; the card
goes into every ONNX file's metadata (`zoo_card`) once all exporters have run."""

from __future__ import annotations

import json

import numpy as np

from zoo.export.saved_model import check_parity, serving_function

ORDER = 20
KEY = "onnx"
ONNX_OPSET = 17
PARITY_ATOL = 1e-5  # ONNX vs Keras, both float32
CARD_METADATA_KEY = "zoo_card"


def filename(role, first) -> str:
    return f"{role}.onnx"


def export(folder, card, towers, golden, context):
    """Convert each tower's serving function to ONNX, run the graph passes, check it against Keras."""
    import onnx
    import onnxruntime as ort

    for role, model in towers.items():
        spec = card.towers[role]
        onnx.save(to_onnx(serving_function(model, spec, context)), folder / spec[KEY])
        session = ort.InferenceSession(str(folder / spec[KEY]), providers=["CPUExecutionProvider"])
        got = session.run(["embeddings"], {spec["input"]: golden[role]})[0]
        check_parity("ONNX", role, got, context["keras"][role], PARITY_ATOL)
    return card


def write_card(folder, card) -> None:
    """Put the card (less `files`: a file cannot hold its own hash) into every ONNX file of the entry."""
    import onnx

    metadata = json.dumps({k: v for k, v in card.to_dict().items() if k != "files"})
    paths = [t[KEY] for t in card.towers.values()]
    if card.int8 and card.int8.get("file"):
        paths.append(card.int8["file"])
    for relpath in paths:
        proto = onnx.load(folder / relpath)
        onnx.helper.set_model_props(proto, {CARD_METADATA_KEY: metadata})
        onnx.checker.check_model(proto)
        onnx.save(proto, folder / relpath)


def to_onnx(serve):
    """ONNX ModelProto of a serving tf.function (tf2onnx, opset ONNX_OPSET), after `full_rank_broadcasts`."""
    import tf2onnx

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=ONNX_OPSET)
    return full_rank_broadcasts(proto)


_ELEMENTWISE = {"Add", "Sub", "Mul", "Div"}


def full_rank_broadcasts(proto):
    """Give single-value constants of elementwise ops the rank of the other operand: () -> (1, 1, 1, 1).

    The same numbers, so the same outputs; but onnxruntime 1.32's CPU Mul/Add broadcast a () or (1,)
    constant over a (B, 28, 28, 1) tensor through a slow path, many times slower than a (1, 1, 1, 1)
    one, so the in-graph preprocessing `1 - x / 255` cost a large share of a conv4 forward pass.
    """
    from onnx import numpy_helper

    ranks = {name: len(dims) for name, dims in inferred_shapes(proto).items()}
    constants = {t.name: t for t in proto.graph.initializer}
    added = {}
    for node in proto.graph.node:
        if node.op_type not in _ELEMENTWISE or len(node.input) != 2:
            continue
        for i in (0, 1):
            name, other = node.input[i], node.input[1 - i]
            tensor, rank = constants.get(name), ranks.get(other, 0)
            if tensor is None or other in constants or rank <= len(tensor.dims) or np.prod(tensor.dims) != 1:
                continue
            if (name, rank) not in added:
                value = numpy_helper.to_array(tensor).reshape((1,) * rank)
                added[name, rank] = numpy_helper.from_array(value, f"{name}__rank{rank}")
                proto.graph.initializer.append(added[name, rank])
            node.input[i] = added[name, rank].name
    used = {name for node in proto.graph.node for name in node.input} | {o.name for o in proto.graph.output}
    unused = [t for t in proto.graph.initializer if t.name not in used]
    for tensor in unused:
        proto.graph.initializer.remove(tensor)
    return proto


def inferred_shapes(proto) -> dict:
    """name -> dims of every graph input, intermediate and output whose shape ONNX shape inference finds
    (0 for a symbolic dimension such as the batch)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)
            if v.type.tensor_type.HasField("shape")}
