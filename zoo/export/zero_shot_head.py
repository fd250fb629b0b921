"""A CLIP entry's zero-shot classifier as one ONNX graph: its image tower plus a fixed matrix of class text
embeddings (the prompt ensemble of `zoo.runtime.OnnxCLIP.class_embeddings`).

    from zoo.runtime import OnnxCLIP
    from zoo.export.zero_shot_head import zero_shot_head
    zero_shot_head(OnnxCLIP("clip"), ["cat", "dog"], ["a photo of {}."], "head.onnx")

Not an exporter of `publish` (it has no ORDER): a head is built on demand for the classes a user names. Needs the
`onnx` package. The file is written atomically and replaces only a zero-shot head written here, and that only
with `overwrite=True`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["zero_shot_head", "HEAD_METADATA_KEY"]

# The metadata_props key that holds the class names; it also marks a file as a head this module wrote.
HEAD_METADATA_KEY = "zoo_classes"


def _check_own(path: Path) -> None:
    """Raise FileExistsError unless `path` is missing or a zero-shot head graph written by `zero_shot_head`."""
    import onnx

    if not path.is_file() or path.is_symlink():
        return  # nothing there, or something `write_file` refuses with its own message
    try:
        model = onnx.load(str(path), load_external_data=False)
        own = HEAD_METADATA_KEY in {p.key for p in model.metadata_props}
    except Exception:  # not an ONNX file at all: protobuf raises its own DecodeError types
        own = False
    if not own:
        raise FileExistsError(f"{path}: exists and is not a zero-shot head written by the zoo; refusing to replace "
                              "it (choose another path)")


def zero_shot_head(clip, class_names, templates, path, *, overwrite=False) -> Path:
    """Write one ONNX classifier: the image tower plus a fixed matrix of class text embeddings.

    The graph takes `images` and returns `logits` (B, C), the cosine similarities, and
    `probabilities` (B, C) = softmax(logit_scale * logits). Class names are stored in
    metadata_props "zoo_classes" (JSON list), the templates in "zoo_templates".

    Args:
        clip: OnnxCLIP. the CLIP entry (its image tower file, card and text tower).
        class_names: list of (str or list[str]). the classes, in output column order.
        templates: sequence[str]. prompt templates, averaged in embedding space.
        path: str | Path. the .onnx file to write (its folder is made if missing).
        overwrite: bool. replace a zero-shot head written here before (anything else is always refused).
    """
    import onnx
    from onnx import helper, numpy_helper

    from zoo.runtime.cards import read_checked, tower_file
    from zoo.runtime.writes import check_file, write_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_file(path, overwrite=overwrite)  # before the work, not after it
    _check_own(path)
    text = clip.class_embeddings(class_names, templates)  # (C, D)
    model = onnx.load_from_string(read_checked(clip.folder, tower_file(clip.card, "images", clip.folder), clip.card,
                                               False))
    graph = model.graph
    embeddings = graph.output[0].name
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.ascontiguousarray(text.T), "zoo_head/class_embeddings"),
            numpy_helper.from_array(np.array(clip.logit_scale, np.float32), "zoo_head/logit_scale"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("MatMul", [embeddings, "zoo_head/class_embeddings"], ["logits"]),
            helper.make_node("Mul", ["logits", "zoo_head/logit_scale"], ["zoo_head/scaled"]),
            helper.make_node("Softmax", ["zoo_head/scaled"], ["probabilities"], axis=-1),
        ]
    )
    del graph.output[:]
    n = len(text)
    graph.output.extend(
        [
            helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", n]),
            helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["batch", n]),
        ]
    )
    helper.set_model_props(
        model,
        {
            **{p.key: p.value for p in model.metadata_props},
            HEAD_METADATA_KEY: json.dumps(list(class_names)),
            "zoo_templates": json.dumps(list(templates)),
        },
    )
    onnx.checker.check_model(model)
    _check_own(path)  # again: a file may have appeared there while the head was built
    return write_file(path, lambda f: f.write(model.SerializeToString()), overwrite=overwrite)
