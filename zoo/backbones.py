"""Encoders of the zoo: conv4, a small ResNet, projection heads, a small text transformer and a text n-gram bag.

Every encoder takes raw inputs (pixels 0..255 or int32 token ids) and does its own
preprocessing, so the exported graphs need nothing but the raw data. Custom layers are
registered under the "zoo" package, so `.keras` files load with `safe_mode=True`.
"""

import keras
from keras import layers, ops

register = keras.saving.register_keras_serializable(package="zoo")

# Input polarity: Omniglot stores paper as 255 and ink as 0; scale=-1/255, offset=1 maps ink to 1.
INK_BRIGHT = {"scale": -1.0 / 255.0, "offset": 1.0}
UNIT_RANGE = {"scale": 1.0 / 255.0, "offset": 0.0}
SYMMETRIC_RANGE = {"scale": 1.0 / 127.5, "offset": -1.0}


@register
class FusedBatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training step runs TensorFlow's fused kernel on the TF backend.

    Keras 3 normalises with separate ops (moments, then scale and shift) whose gradient makes many
    passes over the activations, a large share of a conv4 training step on the TensorFlow CPU
    backend in a profile of the peers' workload (`benchmarks/training.py --peers`). Where the fused kernel applies
    (TensorFlow backend, training, a rank-4 input normalised over its last axis, no mask, renorm or
    `synchronized`), this layer computes the same function with `FusedBatchNormV3` and its fused
    gradient; everywhere else (inference, exported graphs, JAX, torch) it is Keras' layer. Same
    weights, config and moving averages (updated with the biased batch variance, as Keras does).

    Reference:
        Ioffe, Szegedy 2015, Batch Normalization: Accelerating Deep Network Training by Reducing
        Internal Covariate Shift.
    """

    def call(self, inputs, training=None, mask=None):
        if (keras.backend.backend() != "tensorflow" or not (training and self.trainable) or mask is not None
                or self.renorm or self.synchronized or len(inputs.shape) != 4 or self.axis not in (-1, 3)):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # the TF backend is running: the fused kernel is TensorFlow's

        x = tf.cast(inputs, "float32")  # statistics in float32, as Keras does under mixed precision
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones((channels,))
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros((channels,))
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        count = tf.cast(tf.size(x) // channels, "float32")  # values per channel, B * H * W
        variance = variance * (count - 1.0) / count  # the kernel returns the unbiased variance
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)


@register
class TiledMaxPooling2D(layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` that, on JAX, takes the max of non-overlapping windows by a reshape.

    Keras' JAX max pooling is `lax.reduce_window`, whose gradient XLA's CPU backend computes with
    index tensors as large as the input: in a profile of conv4 on the peers' workload
    (`benchmarks/training.py --peers`) it was the largest cost of a JAX training step after the convolutions. Where
    the windows tile the input (`strides == pool_size`, "valid" padding, channels last), this layer
    reshapes (B, H, W, C) to (B, H/p, p, W/q, q, C) and takes the max over the window axes: the same
    values, and the same gradient except where a window holds several equal maxima (the gradient is
    then shared among them instead of going to one; after a ReLU such ties are zeros, whose gradient
    the ReLU drops). Elsewhere (other backends, overlapping windows) it is Keras' layer.
    """

    def call(self, inputs):
        pool, strides = tuple(self.pool_size), tuple(self.strides)
        h, w = inputs.shape[1], inputs.shape[2]
        if (keras.backend.backend() != "jax" or pool != strides or self.padding != "valid"
                or self.data_format != "channels_last" or len(inputs.shape) != 4 or h is None or w is None):
            return super().call(inputs)
        rows, cols = h // pool[0], w // pool[1]
        x = inputs[:, :rows * pool[0], :cols * pool[1], :]  # "valid": a partial window at the edge is dropped
        x = ops.reshape(x, (-1, rows, pool[0], cols, pool[1], inputs.shape[3]))
        return ops.max(x, axis=(2, 4))


def conv4(input_shape=(28, 28, 1), filters=64, scale=INK_BRIGHT["scale"], offset=INK_BRIGHT["offset"],
          pooling="flatten", name="conv4"):
    """Four blocks of 3x3 conv, batch norm, ReLU and 2x2 max-pool (Snell et al. 2017).

    Args:
        input_shape: tuple. (H, W, C) of the raw images.
        filters: int. Channels of every block.
        scale: float. Pixel scale of the built-in preprocessing (`x * scale + offset`).
        offset: float. Pixel offset of the built-in preprocessing.
        pooling: str. "flatten" (the paper: 28x28 gives 64 features) or "avg" (global average).
        name: str. Model name.

    Reference:
        Snell et al. 2017, Prototypical Networks for Few-shot Learning: "four convolutional blocks.
        Each block comprises a 64-filter 3x3 convolution, batch normalization layer, a ReLU
        nonlinearity and a 2x2 max-pooling layer."
    """
    images = keras.Input(input_shape, name="images")
    x = layers.Rescaling(scale, offset)(images)
    for _ in range(4):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = FusedBatchNormalization()(x)
        x = layers.ReLU()(x)
        x = TiledMaxPooling2D(2)(x)
    if pooling == "flatten":
        x = layers.Flatten()(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D()(x)
    else:
        raise ValueError(f"pooling must be 'flatten' or 'avg', got {pooling!r}")
    return keras.Model(images, x, name=name)


def _residual_block(x, filters, stride):
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = FusedBatchNormalization()(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = FusedBatchNormalization()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = FusedBatchNormalization()(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def small_resnet(input_shape=(48, 48, 3), widths=(32, 64, 128, 256), blocks_per_stage=1, output_dim=None,
                 scale=SYMMETRIC_RANGE["scale"], offset=SYMMETRIC_RANGE["offset"], name="small_resnet"):
    """A ResNet of basic blocks for 32-96 pixel images: 3x3 stem, one stage per width, global pooling.

    Args:
        input_shape: tuple. (H, W, C) of the raw images.
        widths: tuple of int. Channels of each stage; every stage after the first halves H and W.
        blocks_per_stage: int. Basic blocks per stage.
        output_dim: int or None. A final linear layer to this many features (None: the pooled features).
        scale: float. Pixel scale of the built-in preprocessing.
        offset: float. Pixel offset of the built-in preprocessing.
        name: str. Model name.

    Reference:
        He et al. 2016, Deep Residual Learning for Image Recognition (basic blocks, CIFAR-style stem).
    """
    images = keras.Input(input_shape, name="images")
    x = layers.Rescaling(scale, offset)(images)
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False)(x)
    x = FusedBatchNormalization()(x)
    x = layers.ReLU()(x)
    for stage, filters in enumerate(widths):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _residual_block(x, filters, stride)
    x = layers.GlobalAveragePooling2D()(x)
    if output_dim:
        x = layers.Dense(output_dim)(x)
    return keras.Model(images, x, name=name)


def projection_head(spec, name="projection_head"):
    """An MLP from a spec like "256-256-128": Dense + BatchNorm + ReLU between, a linear last layer.

    Args:
        spec: str. Widths separated by "-"; the last one is the output dimension.
        name: str. Model name.

    Reference:
        Chen et al. 2020 (SimCLR), Zbontar et al. 2021 (Barlow Twins): the projector used only in training.
    """
    try:
        widths = [int(w) for w in str(spec).split("-")]
    except ValueError:
        raise ValueError(f"projection spec must look like '256-256-128', got {spec!r}") from None
    if not widths or min(widths) <= 0:
        raise ValueError(f"projection spec must hold positive widths, got {spec!r}")
    head = keras.Sequential(name=name)
    for width in widths[:-1]:
        head.add(layers.Dense(width, use_bias=False))
        head.add(layers.BatchNormalization())
        head.add(layers.ReLU())
    head.add(layers.Dense(widths[-1]))
    return head


@register
class TokenAndPositionEmbedding(layers.Layer):
    """Token embedding plus a learned position embedding.

    Args:
        vocab_size: int. Number of token ids.
        context_length: int. Sequence length L.
        width: int. Embedding width.
    """

    def __init__(self, vocab_size, context_length, width, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.context_length, self.width = vocab_size, context_length, width
        self.token = layers.Embedding(vocab_size, width)
        self.position = layers.Embedding(context_length, width)

    def build(self, input_shape):
        self.token.build(input_shape)
        self.position.build((self.context_length,))

    def call(self, token_ids):  # (B, L) -> (B, L, W)
        positions = ops.arange(ops.shape(token_ids)[-1])
        return self.token(token_ids) + self.position(positions)[None]

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "context_length": self.context_length, "width": self.width}


@register
class TransformerBlock(layers.Layer):
    """Pre-norm transformer block: self-attention over non-pad tokens, then an MLP.

    Args:
        width: int. Model width.
        heads: int. Attention heads.
        mlp_ratio: int. Hidden width of the MLP relative to `width`.
        causal: bool. Causal attention (as CLIP's text tower) instead of full attention.
    """

    def __init__(self, width, heads, mlp_ratio=4, causal=False, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads, self.mlp_ratio, self.causal = width, heads, mlp_ratio, causal
        self.norm1 = layers.LayerNormalization(epsilon=1e-5)
        self.attention = layers.MultiHeadAttention(heads, width // heads)
        self.norm2 = layers.LayerNormalization(epsilon=1e-5)
        # SiLU, x * sigmoid(x), is close to CLIP's QuickGELU and exports to ONNX (exact GELU lowers to Erfc).
        self.hidden = layers.Dense(width * mlp_ratio, activation="silu")
        self.out = layers.Dense(width)

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.norm2.build(input_shape)
        self.hidden.build(input_shape)
        self.out.build(tuple(input_shape[:-1]) + (self.width * self.mlp_ratio,))

    def call(self, x, token_ids):  # x (B, L, W), token_ids (B, L); id 0 is padding
        attention_mask = ops.not_equal(token_ids, 0)[:, None, :]  # (B, 1, L): every query sees every real token
        y = self.norm1(x)
        x = x + self.attention(y, y, attention_mask=attention_mask, use_causal_mask=self.causal)
        return x + self.out(self.hidden(self.norm2(x)))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "heads": self.heads,
                "mlp_ratio": self.mlp_ratio, "causal": self.causal}


@register
class MaskedMeanPool(layers.Layer):
    """Mean of the token features over the non-pad positions (pad id 0); (B, L, W) -> (B, W)."""

    def call(self, x, token_ids):
        mask = ops.cast(ops.not_equal(token_ids, 0), x.dtype)[..., None]  # (B, L, 1)
        return ops.sum(x * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)


def text_transformer(vocab_size=258, context_length=32, width=128, depth=2, heads=4, output_dim=None,
                     causal=False, name="text_transformer"):
    """A small transformer text encoder, mean-pooled over the real tokens.

    Args:
        vocab_size: int. Number of token ids (the byte tokenizer of zoo.runtime has 258; id 0 is padding).
        context_length: int. Fixed sequence length L.
        width: int. Model width.
        depth: int. Transformer blocks.
        heads: int. Attention heads.
        output_dim: int or None. A final linear layer to this many features.
        causal: bool. Causal attention instead of full attention.
        name: str. Model name.

    Reference:
        Vaswani et al. 2017; Radford et al. 2021 (CLIP's text encoder, here mean-pooled and small).
    """
    token_ids = keras.Input((context_length,), dtype="int32", name="token_ids")
    x = TokenAndPositionEmbedding(vocab_size, context_length, width)(token_ids)
    for _ in range(depth):
        x = TransformerBlock(width, heads, causal=causal)(x, token_ids)
    x = layers.LayerNormalization(epsilon=1e-5)(x)
    x = MaskedMeanPool()(x, token_ids)
    if output_dim:
        x = layers.Dense(output_dim)(x)
    return keras.Model(token_ids, x, name=name)


@register
class HashedNgramEmbedding(layers.Layer):
    """Mean embedding of a text's hashed byte n-grams, fastText's subword bag: (B, L) token ids -> (B, W).

    Each text is read with a space before it (its end token closes the last word), so the n-grams of a word
    include its boundaries (" cat", "cat ") as fastText's "<cat>". An n-gram of token ids t_1..t_n goes to
    bucket h_n, with h_0 = n and h_k = (h_{k-1} * 258 + t_k) mod buckets (int32 throughout: buckets <= 2**22);
    n-grams that reach into the padding (id 0) are left out of the mean. Words shared by a training and an
    unseen caption share their n-grams, and so does a word's inflection ("smiling", "smile"), which a byte
    transformer trained on 1,500 captions does not learn to see.

    Args:
        buckets: int. Hash buckets (rows of the embedding table).
        width: int. Embedding width W.
        sizes: tuple of int. The n-gram lengths n.

    Reference:
        Bojanowski et al. 2017, Enriching Word Vectors with Subword Information (arXiv:1607.04606);
        Joulin et al. 2017, Bag of Tricks for Efficient Text Classification (arXiv:1607.01759).
    """

    space = 32 + 2  # the byte tokenizer's id of " "

    def __init__(self, buckets, width, sizes=(1, 2, 3, 4, 5), **kwargs):
        super().__init__(**kwargs)
        if not 0 < buckets <= 2 ** 22:
            raise ValueError(f"buckets must be in 1..2**22 (int32 hashing), got {buckets}")
        self.buckets, self.width, self.sizes = int(buckets), int(width), tuple(int(n) for n in sizes)
        self.table = layers.Embedding(self.buckets, self.width)

    def build(self, input_shape):
        self.table.build((None,))

    def call(self, token_ids):
        ids = ops.cast(token_ids, "int32")
        ids = ops.concatenate([ops.full_like(ids[:, :1], self.space), ids], axis=1)  # (B, L + 1)
        length = ids.shape[1]
        total, count = 0.0, 0.0
        for n in self.sizes:
            windows = [ids[:, k:length - n + 1 + k] for k in range(n)]  # n x (B, L + 2 - n)
            bucket = ops.full_like(windows[0], n)
            real = ops.ones_like(windows[0], dtype="bool")
            for t in windows:
                bucket = ops.mod(bucket * 258 + t, self.buckets)
                real = ops.logical_and(real, ops.not_equal(t, 0))
            real = ops.cast(real, self.compute_dtype)[..., None]  # (B, L + 2 - n, 1)
            total = total + ops.sum(self.table(bucket) * real, axis=1)
            count = count + ops.sum(real, axis=1)
        return total / ops.maximum(count, 1.0)  # (B, W)

    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets, "width": self.width, "sizes": list(self.sizes)}


def text_ngrams(context_length=32, buckets=8192, width=128, output_dim=None, sizes=(1, 2, 3, 4, 5),
                name="text_ngrams"):
    """A text encoder of hashed byte n-grams (fastText's subword bag) and an MLP: (B, L) token ids -> (B, D).

    Args:
        context_length: int. Fixed sequence length L of the byte tokenizer's ids.
        buckets: int. Hash buckets of the n-gram table.
        width: int. Width of the n-gram embeddings and of the MLP.
        output_dim: int or None. A final linear layer to this many features.
        sizes: tuple of int. The n-gram lengths.
        name: str. Model name.
    """
    token_ids = keras.Input((context_length,), dtype="int32", name="token_ids")
    x = HashedNgramEmbedding(buckets, width, sizes)(token_ids)
    x = layers.LayerNormalization(epsilon=1e-5)(x)
    x = x + layers.Dense(width)(layers.Dense(width * 4, activation="silu")(x))
    x = layers.LayerNormalization(epsilon=1e-5)(x)
    if output_dim:
        x = layers.Dense(output_dim)(x)
    return keras.Model(token_ids, x, name=name)


def embedder_from(encoder, name="embedder"):
    """The published embedder: `encoder` followed by L2 normalisation, with the encoder's input name.

    Args:
        encoder: keras.Model. Raw inputs -> (B, D) features.
        name: str. Model name.
    """
    spec = encoder.inputs[0]
    inputs = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype, name=encoder.input_names[0] if hasattr(encoder, "input_names") else spec.name)
    embeddings = layers.UnitNormalization(axis=-1, name="embeddings")(encoder(inputs))
    return keras.Model(inputs, embeddings, name=name)


def face_resnet(widths, embedding_dim):
    """The small ResNet of the LFW entries (48x48 RGB), its last layer a linear map to `embedding_dim`.

    Args:
        widths: str. stage widths, e.g. "16-32-64-128".
        embedding_dim: int. D.
    """
    return small_resnet((48, 48, 3), widths=tuple(int(w) for w in widths.split("-")), output_dim=embedding_dim,
                        name="face_encoder")


# dlib's face ResNet (`dnn_face_recognition_ex`): its input layer subtracts these channel means (R, G, B) and divides
# by 256; the converter reads them from the model file and checks them against these.
DLIB_FACE_MEAN = (122.782, 117.001, 104.298)
DLIB_FACE_SIDE = 150
# (width, residual blocks) of each level, input side first; every level after the first starts with a block that
# halves the map (dlib's `ares_down`).
DLIB_FACE_LEVELS = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))


@register
class ChannelAffine(layers.Layer):
    """A per-channel scale and shift, `x * gamma + beta`: dlib's `affine` layer.

    dlib trains with batch normalisation and serves with `affine`, the normalisation's statistics folded into
    gamma and beta; fine-tuning from such weights keeps it as it is (as a frozen batch norm would).

    Reference:
        King 2009, "Dlib-ml: A Machine Learning Toolkit", JMLR 10 (dlib/dnn/layers.h, `affine_`).
    """

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype) + ops.cast(self.beta, x.dtype)


@register
class PaddedAdd(layers.Layer):
    """The sum of two (B, H, W, C) maps of different sizes, the smaller zero-padded at the end of each axis.

    This is how dlib's `add_prev` adds a residual branch to a shortcut of another size: where the stride-2
    branch gives 3x3 and the 2x2 average-pooled shortcut 4x4, or the branch has more channels, the output
    takes the larger size and the missing rows, columns and channels count as zeros.

    Reference:
        King 2009, "Dlib-ml: A Machine Learning Toolkit", JMLR 10 (dlib/dnn/layers.h, `add_prev_`).
    """

    def call(self, inputs):
        a, b = inputs
        target = [max(int(a.shape[i]), int(b.shape[i])) for i in (1, 2, 3)]

        def grow(x):
            pads = [[0, 0]] + [[0, t - int(s)] for t, s in zip(target, x.shape[1:])]
            return ops.pad(x, pads) if any(p[1] for p in pads) else x

        return grow(a) + grow(b)

    def compute_output_shape(self, input_shapes):
        a, b = input_shapes
        return (a[0], *(max(int(x), int(y)) for x, y in zip(a[1:], b[1:])))


def _dlib_residual(x, width, down, names):
    """dlib's `ares` (down=False) or `ares_down` block: conv, affine, ReLU, conv, affine, added to the input
    (2x2 average-pooled when `down`), then ReLU. dlib pads a stride-1 3x3 conv by 1 and a stride-2 one not at all."""
    y = layers.Conv2D(width, 3, strides=2 if down else 1, padding="valid" if down else "same", name=next(names))(x)
    y = layers.ReLU()(ChannelAffine(name=next(names))(y))
    y = layers.Conv2D(width, 3, padding="same", name=next(names))(y)
    y = ChannelAffine(name=next(names))(y)
    shortcut = layers.AveragePooling2D(2, strides=2, padding="valid")(x) if down else x
    same = tuple(shortcut.shape[1:]) == tuple(y.shape[1:])
    return layers.ReLU()((layers.Add() if same else PaddedAdd())([shortcut, y]))


def dlib_face_resnet(side=DLIB_FACE_SIDE, mean=DLIB_FACE_MEAN, embedding_dim=128, name="dlib_face_resnet"):
    """The network of dlib's `dnn_face_recognition_ex` (dlib_face_recognition_resnet_model_v1): raw RGB pixels
    0..255 of a 150x150 face chip -> its (B, 128) descriptor, before any normalisation.

    A 7x7/2 conv (no padding), affine, ReLU and 3x3/2 max pooling; 14 residual blocks in five levels (32, 64,
    128, 256, 256 channels; 3, 4, 3, 3, 1 blocks); global average pooling and a 128-unit linear layer without
    bias. The input layer is dlib's `input_rgb_image`: `(pixel - mean) / 256` per channel. Its weights come
    from `zoo.convert.dlib`; the layers that hold weights are named `conv_NN`, `affine_NN` (in dlib's order,
    input first) and `fc`.

    Args:
        side: int. chip side in pixels (dlib's model: 150).
        mean: tuple of 3 floats. the input layer's R, G, B means.
        embedding_dim: int. outputs of the last linear layer (dlib's model: 128).
        name: str. model name.

    Reference:
        King 2017, dlib_face_recognition_resnet_model_v1 (dlib-models; dlib's examples/dnn_face_recognition_ex.cpp):
        "a ResNet network with 29 conv layers ... a version of the ResNet-34 network from the paper Deep Residual
        Learning for Image Recognition by He, Zhang, Ren, and Sun with a few layers removed and the number of
        filters per layer reduced by half".
    """
    import itertools

    counter = itertools.count(1)
    names = (f"{kind}_{i:02d}" for i in counter for kind in ("conv", "affine"))
    images = keras.Input((side, side, 3), name="images")
    x = layers.Rescaling(1.0 / 256.0, [-float(m) / 256.0 for m in mean], name="input_rgb")(images)
    x = layers.Conv2D(DLIB_FACE_LEVELS[0][0], 7, strides=2, padding="valid", name=next(names))(x)
    x = layers.ReLU()(ChannelAffine(name=next(names))(x))
    x = layers.MaxPooling2D(3, strides=2, padding="valid")(x)
    for level, (width, blocks) in enumerate(DLIB_FACE_LEVELS):
        for block in range(blocks):
            x = _dlib_residual(x, width, down=level > 0 and block == 0, names=names)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(embedding_dim, use_bias=False, name="fc")(x)
    return keras.Model(images, x, name=name)
