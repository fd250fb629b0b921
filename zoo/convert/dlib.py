"""dlib's serialised DNN (`.dat`) -> a Keras model of the zoo's layers, without dlib.

    from zoo.convert import dlib
    network = dlib.read_network("dlib_face_recognition_resnet_model_v1.dat")   # parsed, checked layer by layer
    encoder = dlib.face_resnet(network)     # zoo.backbones.dlib_face_resnet with the file's weights

How dlib writes a network (dlib/dnn/core.h, layers.h, input.h, loss.h, tensor.h, serialize.h): a network is a
type, `loss<layer<layer<...<input>>>>`, and its file is that type's `serialize`. The loss layer writes its version
and its own fields, then its sub-network; every other wrapper writes its version, then its sub-network, then its
own fields (`add_layer`: the layer's details, three flags and cached tensors; `add_tag_layer`/`add_skip_layer`:
nothing). So the file holds the wrappers' versions from the output down to the input, the input layer, then
each layer's details from the input up. Tags and skips leave no name in the file and `add_prev_` does not say
which tag it adds, so the file alone does not give the graph: like dlib's own `deserialize`, the reader follows
the network's type (`FACE_RESNET`, written from dnn_face_recognition_ex.cpp) and checks every name, version and
size the file holds against it.

Primitive encodings: an integer is a control byte (bit 7: negative; bits 0-3: how many little-endian bytes
follow) and its bytes; a bool is the ASCII byte '1' or '0'; a string is its length (an integer) and its bytes;
a float is `float_details`, a mantissa and an exponent (two integers, value = mantissa * 2^exponent; exponents
32000-32002 stand for inf, -inf and NaN); a tensor is version, num_samples, k, nr, nc and its values (version 1:
one float each; version 2: little-endian IEEE float32), in NCHW order.

Reference:
    King 2009, "Dlib-ml: A Machine Learning Toolkit", JMLR 10; dlib's examples/dnn_face_recognition_ex.cpp.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["DlibFormatError", "FACE_RESNET", "read_network", "face_resnet", "face_resnet_layers"]

# float_details' special exponents (dlib/float_details.h).
_INF, _NINF, _NAN = 32000, 32001, 32002
_CONV_MODE = 0  # dlib's layer_mode: affine over channels (CONV_MODE) or over every value (FC_MODE)
_FC_NO_BIAS = 1  # dlib's fc_bias_mode: FC_HAS_BIAS = 0, FC_NO_BIAS = 1


class DlibFormatError(ValueError):
    """A dlib file that does not hold what the network's type says it should."""


class _Reader:
    """A cursor over the file's bytes with dlib's primitive decoders; every error names the file and offset."""

    def __init__(self, data: bytes, path):
        self.data, self.pos, self.path = data, 0, str(path)

    def fail(self, what):
        raise DlibFormatError(f"{self.path}: at byte {self.pos}: {what}")

    def take(self, n):
        if self.pos + n > len(self.data):
            self.fail(f"the file ends {self.pos + n - len(self.data)} bytes early (needed {n} more bytes)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def integer(self):
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            self.fail(f"expected an integer, found the control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def boolean(self):
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            self.fail(f"expected a bool ('0' or '1'), found {byte!r}")
        return byte == b"1"

    def string(self):
        return self.take(self.integer()).decode("latin-1")

    def real(self):
        if self.data[self.pos:self.pos + 1] and self.data[self.pos] & 0x70:
            self.fail("found a float in dlib's old text format, which this reader does not read")
        mantissa, exponent = self.integer(), self.integer()
        if exponent < _INF:
            return math.ldexp(float(mantissa), exponent)
        return {_INF: math.inf, _NINF: -math.inf}.get(exponent, math.nan)

    def tensor(self):
        version = self.integer()
        shape = tuple(self.integer() for _ in range(4))  # (num_samples, k, nr, nc)
        count = int(np.prod(shape))
        if version == 2:
            return np.frombuffer(self.take(4 * count), "<f4").astype(np.float32).reshape(shape)
        if version == 1:
            return np.array([self.real() for _ in range(count)], np.float32).reshape(shape)
        self.fail(f"expected a tensor of version 1 or 2, found version {version}")

    def alias(self):
        version = self.integer()
        if version != 1:
            self.fail(f"expected an alias_tensor of version 1, found version {version}")
        return tuple(self.integer() for _ in range(4))

    def name(self, expected, what):
        start, found = self.pos, self.string()
        if found not in expected:
            self.pos = start
            self.fail(f"expected {what} ({' or '.join(map(repr, expected))}), found {found!r}: this is not the "
                      "network this converter reads (dlib's dnn_face_recognition_ex), or a dlib version it does "
                      "not know")
        return found


# ---- the network's type ------------------------------------------------------------------------------------
# One dict per dlib layer, input first: kind and the template arguments of dnn_face_recognition_ex's `anet_type`.

def _con(filters, size, stride):
    return {"kind": "con", "filters": filters, "size": size, "stride": stride}


def _block(width, stride):  # block<N, affine, stride>: affine<con<N,3,3,1,1,relu<affine<con<N,3,3,s,s,...>>>>>
    return [_con(width, 3, stride), {"kind": "affine"}, {"kind": "relu"}, _con(width, 3, 1), {"kind": "affine"}]


def _ares(width):  # relu<add_prev1<block<N,affine,1,tag1<...>>>>
    return [{"kind": "tag", "id": 1}, *_block(width, 1), {"kind": "add_prev", "tag": 1}, {"kind": "relu"}]


def _ares_down(width):  # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<...>>>>>>>
    return [{"kind": "tag", "id": 1}, *_block(width, 2), {"kind": "tag", "id": 2}, {"kind": "skip", "tag": 1},
            {"kind": "avg_pool", "size": 2, "stride": 2}, {"kind": "add_prev", "tag": 2}, {"kind": "relu"}]


def _face_resnet_type(side=150):
    from zoo.backbones import DLIB_FACE_LEVELS

    layers = [{"kind": "input", "side": side}, _con(32, 7, 2), {"kind": "affine"}, {"kind": "relu"},
              {"kind": "max_pool", "size": 3, "stride": 2}]
    for level, (width, blocks) in enumerate(DLIB_FACE_LEVELS):
        for block in range(blocks):
            layers += _ares_down(width) if level > 0 and block == 0 else _ares(width)
    return layers + [{"kind": "avg_pool", "size": 0, "stride": 1}, {"kind": "fc", "outputs": 128, "bias": False},
                     {"kind": "loss_metric"}]


FACE_RESNET = _face_resnet_type()


# ---- reading -----------------------------------------------------------------------------------------------

def _padding(size, stride):
    """dlib's default padding of a conv or pooling window: size // 2 at stride 1, else none."""
    return size // 2 if stride == 1 else 0


def _read_window(r, layer, version):
    """The fields of max_pool_2 / avg_pool_2: nr, nc, stride_y, stride_x, padding_y, padding_x."""
    nr, nc, sy, sx, py, px = (r.integer() for _ in range(6))
    want = (layer["size"], layer["size"], layer["stride"], layer["stride"], _padding(layer["size"], layer["stride"]),
            _padding(layer["size"], layer["stride"]))
    if (nr, nc, sy, sx, py, px) != want:
        r.fail(f"{version}: window {nr}x{nc}, stride {sy}x{sx}, padding {py}x{px}; the network has {want[0]}x"
               f"{want[1]}, stride {want[2]}x{want[3]}, padding {want[4]}x{want[5]}")
    return {}


def _read_details(r, layer) -> dict:
    """One layer's own fields (its `serialize`), checked against the network's type; returns its weights."""
    kind = layer["kind"]
    if kind == "con":
        r.name(("con_4",), "a conv layer")
        params = r.tensor().ravel()
        filters, nr, nc, sy, sx, py, px = (r.integer() for _ in range(7))
        shape, bias_shape = r.alias(), r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers (training only)
            r.real()
        want = (layer["filters"], layer["size"], layer["size"], layer["stride"], layer["stride"],
                _padding(layer["size"], layer["stride"]), _padding(layer["size"], layer["stride"]))
        if (filters, nr, nc, sy, sx, py, px) != want:
            r.fail(f"con_4 with {filters} filters of {nr}x{nc}, stride {sy}x{sx}, padding {py}x{px}; the network "
                   f"has {want[0]} of {want[1]}x{want[2]}, stride {want[3]}x{want[4]}, padding {want[5]}x{want[6]}")
        size = int(np.prod(shape))
        if shape[0] != filters or bias_shape != (1, filters, 1, 1) or len(params) != size + filters:
            r.fail(f"con_4 parameters {len(params)} values for filters {shape} and biases {bias_shape}")
        return {"filters": params[:size].reshape(shape), "biases": params[size:]}
    if kind == "affine":
        version = r.name(("affine_", "affine_2"), "an affine layer")
        params = r.tensor().ravel()
        gamma, beta = r.alias(), r.alias()
        mode = r.integer()
        disabled = r.boolean() if version == "affine_2" else False
        channels = gamma[1]
        if mode != _CONV_MODE or gamma != (1, channels, 1, 1) or beta != gamma or len(params) != 2 * channels:
            r.fail(f"{version}: expected a per-channel affine (CONV_MODE) of 2 x C values, found mode {mode}, "
                   f"gamma {gamma}, beta {beta}, {len(params)} values")
        if disabled:  # a disabled affine passes its input through
            return {"gamma": np.ones(channels, np.float32), "beta": np.zeros(channels, np.float32)}
        return {"gamma": params[:channels], "beta": params[channels:]}
    if kind == "relu":
        r.name(("relu_",), "a relu layer")
        return {}
    if kind == "add_prev":
        r.name(("add_prev_",), "an add_prev layer")
        return {}
    if kind in ("max_pool", "avg_pool"):
        version = r.name((f"{kind}_2",), f"a {kind} layer")
        return _read_window(r, layer, version)
    if kind == "fc":
        r.name(("fc_2",), "an fc layer")
        outputs, inputs = r.integer(), r.integer()
        params = r.tensor().ravel()
        weights, biases = r.alias(), r.alias()
        bias_mode = r.integer()
        for _ in range(4):
            r.real()
        if outputs != layer["outputs"] or (bias_mode == _FC_NO_BIAS) == layer["bias"]:
            r.fail(f"fc_2 with {outputs} outputs and bias mode {bias_mode}; the network has {layer['outputs']} "
                   f"outputs {'with' if layer['bias'] else 'without'} bias")
        if weights != (inputs, outputs, 1, 1) or len(params) != inputs * outputs:
            r.fail(f"fc_2 weights {weights} and {len(params)} values for {inputs} inputs x {outputs} outputs")
        return {"weights": params.reshape(inputs, outputs)}
    raise AssertionError(f"no reader for {kind!r}")


def _read_input(r, layer) -> dict:
    r.name(("input_rgb_image_sized",), "the input layer")
    mean = [r.real() for _ in range(3)]
    nr, nc = r.integer(), r.integer()
    if (nr, nc) != (layer["side"], layer["side"]):
        r.fail(f"input_rgb_image_sized of {nr}x{nc} pixels; the network takes {layer['side']}x{layer['side']}")
    return {"mean": mean, "side": nr}


def _read_add_layer_tail(r, first, version):
    """What `add_layer` writes after its details: three flags and its cached tensors (empty in a saved model)."""
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output_and_gradient_input_disabled
        r.boolean()
    for _ in range(2):  # x_grad, cached_output
        r.tensor()
    if first:
        r.tensor()  # grad_final
        if version >= 3:
            r.integer()  # _sample_expansion_factor
    elif version >= 2:
        r.tensor()  # params_grad


def read_network(path, layers=None) -> list[dict]:
    """Parse a dlib DNN file against the network's type; returns one dict per layer (input first), each the
    type's dict with the weights read ("filters", "biases", "gamma", "beta", "weights") or the input's "mean",
    and the loss's "margin" and "distance_threshold".

    Args:
        path: str | Path. the .dat file (uncompressed, as the face_recognition_models package ships it).
        layers: list | None. the network's type, input first (default `FACE_RESNET`).

    Raises:
        DlibFormatError: naming the file and the byte offset, where the file does not hold that network.
    """
    path = Path(path)
    layers = FACE_RESNET if layers is None else layers
    r = _Reader(path.read_bytes(), path)
    if layers[0]["kind"] != "input" or layers[-1]["kind"] != "loss_metric" or layers[1]["kind"] in ("tag", "skip"):
        raise ValueError("layers must run from an input layer, through an add_layer, to loss_metric")
    out = [dict(layer) for layer in layers]
    version = r.integer()
    if version != 1:
        r.fail(f"expected add_loss_layer version 1 (the file's first field), found {version}")
    r.name(("loss_metric_2",), "the loss layer")
    out[-1].update(margin=r.real(), distance_threshold=r.real())
    versions = {}
    for i in range(len(layers) - 2, 0, -1):  # the wrappers' versions, from the output down to the input
        kind, start, found = layers[i]["kind"], r.pos, r.integer()
        allowed = (1,) if kind in ("tag", "skip") else (2, 3) if i == 1 else (1, 2)
        if found not in allowed:
            r.pos = start
            wrapper = {"tag": "add_tag_layer", "skip": "add_skip_layer"}.get(kind, "add_layer")
            r.fail(f"layer {i} ({kind}): expected {wrapper} version {' or '.join(map(str, allowed))}, found {found}")
        versions[i] = found
    out[0].update(_read_input(r, layers[0]))
    for i in range(1, len(layers) - 1):  # each layer's details, from the input up
        if layers[i]["kind"] in ("tag", "skip"):
            continue
        try:
            out[i].update(_read_details(r, layers[i]))
        except DlibFormatError as err:
            raise DlibFormatError(f"{err} (layer {i} of the network, a {layers[i]['kind']})") from None
        _read_add_layer_tail(r, first=i == 1, version=versions[i])
    if r.pos != len(r.data):
        r.fail(f"{len(r.data) - r.pos} bytes left after the network")
    return out


# ---- to Keras ----------------------------------------------------------------------------------------------

def face_resnet_layers(network) -> dict:
    """Keras layer name -> its weights (Keras layouts) for `zoo.backbones.dlib_face_resnet`, from a parsed
    network: conv filters (F, C, kh, kw) -> (kh, kw, C, F), the fc matrix (in, out) as Dense's kernel."""
    weights, convs = {}, 0
    for layer in network:
        if layer["kind"] == "con":
            convs += 1
            weights[f"conv_{convs:02d}"] = [np.transpose(layer["filters"], (2, 3, 1, 0)), layer["biases"]]
        elif layer["kind"] == "affine":
            weights[f"affine_{convs:02d}"] = [layer["gamma"], layer["beta"]]
        elif layer["kind"] == "fc":
            weights["fc"] = [layer["weights"]]
    return weights


def face_resnet(network, name="dlib_face_resnet"):
    """`zoo.backbones.dlib_face_resnet` holding a parsed network's weights (its input means included): raw RGB
    150x150 chips, 0..255 -> (B, 128) dlib descriptors.

    Args:
        network: list. `read_network`'s result.
        name: str. model name.
    """
    from zoo.backbones import dlib_face_resnet

    model = dlib_face_resnet(side=network[0]["side"], mean=np.float32(network[0]["mean"]).tolist(),
                             embedding_dim=next(l["outputs"] for l in network if l["kind"] == "fc"), name=name)
    weights = face_resnet_layers(network)
    held = {layer.name for layer in model.layers if layer.weights}
    if held != set(weights):
        raise DlibFormatError(f"the Keras network's layers with weights {sorted(held ^ set(weights))} have no "
                              "counterpart in the dlib file (or the other way round)")
    for layer_name, values in weights.items():
        layer = model.get_layer(layer_name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [v.shape for v in values]:
            raise DlibFormatError(f"{layer_name}: the dlib file holds {[v.shape for v in values]}, the Keras layer "
                                  f"{shapes}")
        layer.set_weights(values)
    return model
