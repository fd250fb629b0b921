"""Developer script: turn the MTCNN weights of the PyPI `mtcnn` 0.1.1 wheel into three ONNX graphs.

    .venv/bin/python zoo/runtime/mtcnn/build_onnx.py /path/to/mtcnn/data/mtcnn_weights.npy

writes pnet.onnx, rnet.onnx and onet.onnx next to this file, then checks each graph against the
same network rebuilt with Keras layers (TensorFlow backend) on random inputs. Not imported at run
time: `zoo.runtime.faces` only reads the .onnx files. See PROVENANCE.md.

Orientation. The weights descend from the authors' Caffe/MATLAB model, whose images were stored
column-major, so the Keras networks expect every image transposed (axis 1 = image x, axis 2 =
image y). A convolution of a transposed image equals the transposed convolution of the image with
spatially transposed kernels, and max pooling with square windows and equal strides commutes with
the transpose, so the graphs written here take images the ordinary way, NCHW with H = image rows:
each kernel gets its two spatial axes swapped, and the rows of the first Dense layer after a
Flatten are re-ordered from Keras' (image x, image y, channel) flattening to the (channel,
image y, image x) order that flattening an NCHW tensor gives. The outputs mean exactly what the
Keras networks' outputs mean (box offsets as dx1, dy1, dx2, dy2; landmarks as 5 x then 5 y), and
the PNet maps come out un-transposed (N, C, rows, cols).

Graphs (opset 17, float32, batch dimension "N"); inputs are RGB scaled as (pixel - 127.5) / 128:
  pnet: image (N, 3, H, W), any H, W >= 12 -> prob (N, 2, h, w), bbox (N, 4, h, w),
        h = (ceil((H - 2) / 2) - 4), one cell per 12x12 window with stride 2
  rnet: image (N, 3, 24, 24) -> prob (N, 2), bbox (N, 4)
  onet: image (N, 3, 48, 48) -> prob (N, 2), bbox (N, 4), landmarks (N, 10)
prob[:, 1] is the face probability.
"""

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
OPSET = 17


class _Graph:
    """Collects nodes and initialisers while the layers are added in order."""

    def __init__(self, name):
        self.name = name
        self.nodes = []
        self.inits = []
        self.count = 0

    def _fresh(self, kind):
        self.count += 1
        return f"{kind}{self.count}"

    def const(self, array, kind):
        name = self._fresh(kind)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(self, op, inputs, n_out=1, **attrs):
        outs = [self._fresh(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self._fresh(op + "_"), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, kernel, bias):
        # Keras kernel (kh, kw, cin, cout) acts on transposed images, so kh runs along image x:
        # ONNX wants (cout, cin, k_rows, k_cols) = (cout, cin, kw, kh).
        w = self.const(np.transpose(kernel, (3, 2, 1, 0)), "W")
        return self.node("Conv", [x, w, self.const(bias, "B")], kernel_shape=list(kernel.shape[:2][::-1]))

    def prelu(self, x, alpha, spatial):
        # Keras PReLU(shared_axes=[1, 2]) keeps one slope per channel, shape (1, 1, C).
        slope = np.reshape(alpha, (-1, 1, 1)) if spatial else np.reshape(alpha, (-1,))
        return self.node("PRelu", [x, self.const(slope, "slope")])

    def maxpool(self, x, size, stride, pads=None, ceil=False):
        attrs = dict(kernel_shape=[size, size], strides=[stride, stride])
        if pads:
            attrs["pads"] = pads
        if ceil:
            attrs["ceil_mode"] = 1
        return self.node("MaxPool", [x], **attrs)

    def dense(self, x, kernel, bias):
        return self.node("Gemm", [x, self.const(kernel, "W"), self.const(bias, "B")])

    def model(self, inputs, outputs):
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="zoo.runtime.mtcnn.build_onnx")
        m.ir_version = 8  # the IR of opset 17; keeps older onnxruntime builds happy
        onnx.checker.check_model(m, full_check=True)
        return m


def _flatten_rows_for_nchw(kernel, cells, channels):
    """Dense kernel rows ordered (image x, image y, c) by Keras -> ordered (c, image y, image x)."""
    k = kernel.reshape(cells, cells, channels, -1)          # (x, y, c, out)
    return np.transpose(k, (2, 1, 0, 3)).reshape(cells * cells * channels, -1)


def _tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def build_pnet(w):
    g = _Graph("mtcnn_pnet")
    x = g.conv("image", w[0], w[1])
    x = g.prelu(x, w[2], True)
    # Keras 'same' 2x2/2 pooling pads one row/column at the end of an odd axis; ceil_mode gives
    # the same windows (the last one starts inside the input and is cut short).
    x = g.maxpool(x, 2, 2, ceil=True)
    x = g.prelu(g.conv(x, w[3], w[4]), w[5], True)
    x = g.prelu(g.conv(x, w[6], w[7]), w[8], True)
    prob = g.node("Softmax", [g.conv(x, w[9], w[10])], axis=1)
    bbox = g.conv(x, w[11], w[12])
    g.nodes.append(helper.make_node("Identity", [prob], ["prob"]))
    g.nodes.append(helper.make_node("Identity", [bbox], ["bbox"]))
    return g.model([_tensor("image", ["N", 3, "H", "W"])],
                   [_tensor("prob", ["N", 2, "h", "w"]), _tensor("bbox", ["N", 4, "h", "w"])])


def build_rnet(w):
    g = _Graph("mtcnn_rnet")
    x = g.prelu(g.conv("image", w[0], w[1]), w[2], True)           # 22x22
    x = g.maxpool(x, 3, 2, pads=[0, 0, 1, 1])                      # Keras 'same' on 22: pad end -> 11
    x = g.prelu(g.conv(x, w[3], w[4]), w[5], True)                 # 9
    x = g.maxpool(x, 3, 2)                                         # 'valid' -> 4
    x = g.prelu(g.conv(x, w[6], w[7]), w[8], True)                 # 3x3x64
    x = g.node("Flatten", [x], axis=1)
    x = g.prelu(g.dense(x, _flatten_rows_for_nchw(w[9], 3, 64), w[10]), w[11], False)
    prob = g.node("Softmax", [g.dense(x, w[12], w[13])], axis=1)
    bbox = g.dense(x, w[14], w[15])
    g.nodes.append(helper.make_node("Identity", [prob], ["prob"]))
    g.nodes.append(helper.make_node("Identity", [bbox], ["bbox"]))
    return g.model([_tensor("image", ["N", 3, 24, 24])],
                   [_tensor("prob", ["N", 2]), _tensor("bbox", ["N", 4])])


def build_onet(w):
    g = _Graph("mtcnn_onet")
    x = g.prelu(g.conv("image", w[0], w[1]), w[2], True)           # 46
    x = g.maxpool(x, 3, 2, pads=[0, 0, 1, 1])                      # 'same' on 46: pad end -> 23
    x = g.prelu(g.conv(x, w[3], w[4]), w[5], True)                 # 21
    x = g.maxpool(x, 3, 2)                                         # 'valid' -> 10
    x = g.prelu(g.conv(x, w[6], w[7]), w[8], True)                 # 8
    x = g.maxpool(x, 2, 2)                                         # 'same' on 8 needs no pad -> 4
    x = g.prelu(g.conv(x, w[9], w[10]), w[11], True)               # 3x3x128
    x = g.node("Flatten", [x], axis=1)
    x = g.prelu(g.dense(x, _flatten_rows_for_nchw(w[12], 3, 128), w[13]), w[14], False)
    prob = g.node("Softmax", [g.dense(x, w[15], w[16])], axis=1)
    bbox = g.dense(x, w[17], w[18])
    marks = g.dense(x, w[19], w[20])
    for src, dst in ((prob, "prob"), (bbox, "bbox"), (marks, "landmarks")):
        g.nodes.append(helper.make_node("Identity", [src], [dst]))
    return g.model([_tensor("image", ["N", 3, 48, 48])],
                   [_tensor("prob", ["N", 2]), _tensor("bbox", ["N", 4]), _tensor("landmarks", ["N", 10])])


# ---- reference: the networks rebuilt with Keras layers, fed transposed NHWC images -------------

def _keras_nets(weights):
    import keras
    from keras import layers

    def conv_prelu(x, filters, k):
        x = layers.Conv2D(filters, k, padding="valid")(x)
        return layers.PReLU(shared_axes=[1, 2])(x)

    def dense_head(x, width):
        x = layers.Flatten()(x)
        return layers.PReLU()(layers.Dense(width)(x))

    inp = keras.Input((None, None, 3))
    x = conv_prelu(inp, 10, 3)
    x = layers.MaxPooling2D(2, 2, padding="same")(x)
    x = conv_prelu(conv_prelu(x, 16, 3), 32, 3)
    prob = layers.Softmax(axis=3)(layers.Conv2D(2, 1)(x))
    pnet = keras.Model(inp, [layers.Conv2D(4, 1)(x), prob])

    inp = keras.Input((24, 24, 3))
    x = layers.MaxPooling2D(3, 2, padding="same")(conv_prelu(inp, 28, 3))
    x = layers.MaxPooling2D(3, 2, padding="valid")(conv_prelu(x, 48, 3))
    x = dense_head(conv_prelu(x, 64, 2), 128)
    prob = layers.Softmax(axis=1)(layers.Dense(2)(x))
    rnet = keras.Model(inp, [layers.Dense(4)(x), prob])

    inp = keras.Input((48, 48, 3))
    x = layers.MaxPooling2D(3, 2, padding="same")(conv_prelu(inp, 32, 3))
    x = layers.MaxPooling2D(3, 2, padding="valid")(conv_prelu(x, 64, 3))
    x = layers.MaxPooling2D(2, 2, padding="same")(conv_prelu(x, 64, 3))
    x = dense_head(conv_prelu(x, 128, 2), 256)
    prob = layers.Softmax(axis=1)(layers.Dense(2)(x))
    onet = keras.Model(inp, [layers.Dense(4)(x), layers.Dense(10)(x), prob])

    for net, key in ((pnet, "pnet"), (rnet, "rnet"), (onet, "onet")):
        net.set_weights(weights[key])
    return pnet, rnet, onet


def _check(paths, weights, tol=1e-4):
    """Each ONNX graph on random NCHW images vs the Keras net on the same images transposed."""
    import onnxruntime as ort

    pnet, rnet, onet = _keras_nets(weights)
    rng = np.random.default_rng(0)
    worst = {}
    # PNet: odd and even sizes (the 'same' pooling pads only odd axes), non-square, batch > 1.
    cases = {"pnet": [(2, 12, 12), (1, 13, 17), (1, 31, 24), (2, 57, 90), (1, 250, 187)],
             "rnet": [(5, 24, 24)], "onet": [(7, 48, 48)]}
    for key, keras_net in (("pnet", pnet), ("rnet", rnet), ("onet", onet)):
        sess = ort.InferenceSession(str(paths[key]), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        for n, h, w in cases[key]:
            img = rng.uniform(-1, 1, (n, 3, h, w)).astype(np.float32)
            got = dict(zip(names, sess.run(None, {"image": img})))
            ref = keras_net(np.transpose(img, (0, 3, 2, 1)), training=False)   # NCHW -> N,W,H,C
            ref = [np.asarray(r) for r in ref]
            if key == "pnet":
                # back from (N, w, h, C) to (N, C, h, w)
                ref = [np.transpose(r, (0, 3, 2, 1)) for r in ref]
                pairs = [("bbox", ref[0]), ("prob", ref[1])]
            elif key == "rnet":
                pairs = [("bbox", ref[0]), ("prob", ref[1])]
            else:
                pairs = [("bbox", ref[0]), ("landmarks", ref[1]), ("prob", ref[2])]
            for name, r in pairs:
                if got[name].shape != r.shape:
                    raise AssertionError(f"{key}.{name}: shape {got[name].shape} != Keras {r.shape}")
                err = float(np.max(np.abs(got[name] - r)))
                worst[f"{key}.{name}"] = max(worst.get(f"{key}.{name}", 0.0), err)
    for k, err in worst.items():
        print(f"  {k:16s} max |onnx - keras| = {err:.2e}")
        if err > tol:
            raise AssertionError(f"{k} differs from the Keras reference by {err:.2e} > {tol}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", help="mtcnn/data/mtcnn_weights.npy from the mtcnn 0.1.1 wheel")
    ap.add_argument("--out", default=str(HERE), help="folder for the .onnx files (default: beside this script)")
    ap.add_argument("--no-check", action="store_true", help="skip the Keras comparison")
    args = ap.parse_args(argv)

    # allow_pickle only here: the wheel stores a pickled dict {'pnet', 'rnet', 'onet'} of weight
    # lists rather than plain arrays, and this file is a known, hash-pinned download (PROVENANCE.md).
    weights = np.load(args.weights, allow_pickle=True).item()
    weights = {k: [np.asarray(a, np.float32) for a in v] for k, v in weights.items()}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, build in (("pnet", build_pnet), ("rnet", build_rnet), ("onet", build_onet)):
        paths[key] = out / f"{key}.onnx"
        onnx.save_model(build(weights[key]), str(paths[key]))
        digest = hashlib.sha256(paths[key].read_bytes()).hexdigest()
        print(f"{paths[key]}  sha256 {digest}")
    if not args.no_check:
        _check(paths, weights)
        print("ONNX graphs match the Keras networks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
