"""View augmentation pipelines from keras layers, for every backend (TF, JAX, torch).

Each pipeline is a `keras.Sequential` of keras core preprocessing layers plus the few small
layers below (registered, no Lambda), taking and returning float32 raw pixel values 0..255,
(B, H, W, C). Augmentation runs when the layer is called with `training=True` (the default
when called directly, and inside `fit()`); with `training=False` (`predict()`) images pass
through unchanged, apart from `RandomResizedCrop` resizing to its output size. With a seed,
a freshly built pipeline gives the same sequence of outputs.

Three gaps in keras 3.15 core are filled here: it has no RandomResizedCrop; its geometric layers
(RandomRotation, RandomZoom, RandomTranslation, RandomShear) set `supports_jit = False`, so any
model holding one trains un-jitted (op by op on JAX), hence `RandomAffine`; and its
`RandomElasticTransform` fails inside a jitted JAX training step (it sizes its kernel from a
traced value), hence `RandomElasticDistortion`.
"""

import math

import keras
import numpy as np
from keras import ops


def _bilinear(images, ys, xs):
    """Sample images (B, H, W, C) at pixel coordinates ys, xs (B, h, w), clamping at the edges."""
    batch = ops.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    ys = ops.clip(ys, 0.0, height - 1.0)
    xs = ops.clip(xs, 0.0, width - 1.0)
    y0, x0 = ops.floor(ys), ops.floor(xs)
    wy, wx = ops.expand_dims(ys - y0, -1), ops.expand_dims(xs - x0, -1)  # (B, h, w, 1)
    y0, x0 = ops.cast(y0, "int32"), ops.cast(x0, "int32")
    y1, x1 = ops.minimum(y0 + 1, height - 1), ops.minimum(x0 + 1, width - 1)
    flat = ops.reshape(images, (-1, channels))  # (B*H*W, C)
    base = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1))

    def at(y, x):
        return ops.take(flat, base + y * width + x, axis=0)  # (B, h, w, C)

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


@keras.saving.register_keras_serializable(package="zoo")
class RandomResizedCrop(keras.layers.Layer):
    """Crop a random area and aspect ratio of each image and resize it to (height, width).

    Area and log aspect ratio are uniform in `scale` and `ratio`; a side that would exceed the
    image is clipped to it (instead of torchvision's rejection sampling). Bilinear sampling.

    Args:
      height: int. Output height.
      width: int. Output width.
      scale: tuple of 2 floats. Range of the crop area, as a fraction of the image area.
      ratio: tuple of 2 floats. Range of the crop aspect ratio (width / height).
      seed: int or None. Seed of the random draws.

    Reference:
      Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (the Inception crop).
    """

    def __init__(self, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {ratio}")
        self.height, self.width = int(height), int(width)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        images = ops.cast(images, self.compute_dtype)
        in_h, in_w = images.shape[1], images.shape[2]
        if not training:
            if (in_h, in_w) == (self.height, self.width):
                return images
            return ops.image.resize(images, (self.height, self.width), antialias=True)
        batch = ops.shape(images)[0]
        area = keras.random.uniform((batch,), *self.scale, seed=self.seed_generator) * (in_h * in_w)
        log_ratio = keras.random.uniform(
            (batch,), math.log(self.ratio[0]), math.log(self.ratio[1]), seed=self.seed_generator
        )
        crop_w = ops.minimum(ops.sqrt(area * ops.exp(log_ratio)), float(in_w))  # (B,)
        crop_h = ops.minimum(ops.sqrt(area / ops.exp(log_ratio)), float(in_h))
        top = keras.random.uniform((batch,), seed=self.seed_generator) * (in_h - crop_h)
        left = keras.random.uniform((batch,), seed=self.seed_generator) * (in_w - crop_w)
        # Output pixel centres mapped into the crop box, in input pixel-index coordinates.
        gy = (ops.arange(self.height, dtype="float32") + 0.5) / self.height  # (h,)
        gx = (ops.arange(self.width, dtype="float32") + 0.5) / self.width  # (w,)
        ys = top[:, None, None] + gy[None, :, None] * crop_h[:, None, None] - 0.5  # (B, h, 1)
        xs = left[:, None, None] + gx[None, None, :] * crop_w[:, None, None] - 0.5  # (B, 1, w)
        shape = (batch, self.height, self.width)
        return _bilinear(images, ops.broadcast_to(ys, shape), ops.broadcast_to(xs, shape))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[3])

    def get_config(self):
        return {
            **super().get_config(),
            "height": self.height,
            "width": self.width,
            "scale": self.scale,
            "ratio": self.ratio,
            "seed": self.seed,
        }


class RandomImageLayer(keras.layers.Layer):
    """The frame of the shape-preserving random layers below: a seed and its generator, float pixels in the
    compute dtype, `transform` in training and the images unchanged otherwise.

    Args:
      seed: int or None. Seed of the random draws.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        images = ops.cast(images, self.compute_dtype)
        return self.transform(images) if training else images

    def transform(self, images):
        """(B, H, W, C) images -> the same shape, drawn anew from `seed_generator`."""
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="zoo")
class RandomAffine(RandomImageLayer):
    """Random rotation, shear, zoom and translation composed into one map, resampled once.

    Each output pixel p is read from the input at c + M (p - c) + t, where c is the image centre,
    M = rotation(theta) @ shear(s) / z and t a shift; theta, s, z - 1 and t are uniform in
    [-rotation, rotation] degrees, [-shear, shear], [-zoom, zoom] and [-translation, translation]
    of the side. z > 1 enlarges the content. Bilinear; pixels from outside take the nearest edge
    value (paper, for centred characters).

    Args:
      rotation: float. Largest rotation, in degrees.
      shear: float. Largest shear factor (tangent of the shear angle).
      zoom: float. Largest relative change of scale, < 1.
      translation: float. Largest shift, as a fraction of the side.
      seed: int or None. Seed of the random draws.
    """

    def __init__(self, rotation=0.0, shear=0.0, zoom=0.0, translation=0.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if min(rotation, shear, zoom, translation) < 0 or zoom >= 1:
            raise ValueError(
                "rotation, shear, zoom, translation must be >= 0 and zoom < 1, got "
                f"{rotation}, {shear}, {zoom}, {translation}"
            )
        self.rotation, self.shear = float(rotation), float(shear)
        self.zoom, self.translation = float(zoom), float(translation)

    def transform(self, images):
        batch, height, width = ops.shape(images)[0], images.shape[1], images.shape[2]

        def draw(limit):
            return keras.random.uniform((batch, 1, 1), -limit, limit, seed=self.seed_generator)

        theta = draw(math.radians(self.rotation))
        shear = draw(self.shear)
        inv_zoom = 1.0 / (1.0 + draw(self.zoom))
        shift_y, shift_x = draw(self.translation) * height, draw(self.translation) * width
        cos, sin = ops.cos(theta) * inv_zoom, ops.sin(theta) * inv_zoom  # (B, 1, 1)
        cy, cx = (height - 1) / 2, (width - 1) / 2
        dy = ops.arange(height, dtype="float32")[None, :, None] - cy  # (1, h, 1)
        dx = ops.arange(width, dtype="float32")[None, None, :] - cx  # (1, 1, w)
        # M = [[cos, cos*shear - sin], [sin, sin*shear + cos]] acting on (x, y).
        xs = cx + cos * dx + (cos * shear - sin) * dy + shift_x  # (B, h, w)
        ys = cy + sin * dx + (sin * shear + cos) * dy + shift_y
        return _bilinear(images, ys, xs)

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation, "shear": self.shear, "zoom": self.zoom,
                "translation": self.translation}


@keras.saving.register_keras_serializable(package="zoo")
class RandomApply(RandomImageLayer):
    """Apply a shape-preserving layer to each image with probability `rate`, else keep it.

    Args:
      layer: keras.layers.Layer. The augmentation, called with training=True.
      rate: float. Probability per image.
      seed: int or None. Seed of the per-image coin.
    """

    def __init__(self, layer, rate, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self.layer = layer
        self.rate = float(rate)

    def transform(self, images):
        changed = ops.cast(self.layer(images, training=True), images.dtype)
        coin = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), seed=self.seed_generator)
        return ops.where(coin < self.rate, changed, images)

    def get_config(self):
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer), "rate": self.rate}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="zoo")
class RandomElasticDistortion(RandomImageLayer):
    """Elastic distortion: a random displacement field, Gaussian-smoothed, scaled by alpha.

    "generating random displacement fields ... uniformly between -1 and +1 ... convolved with a
    Gaussian of standard deviation sigma (in pixels) ... multiplied by a scaling factor alpha."
    The root-mean-square displacement is about 0.16 * alpha / sigma pixels. Pixels pulled from
    outside the image take the nearest edge value.

    Args:
      alpha: float. Scale of the displacement field, in pixels.
      sigma: float. Standard deviation of the smoothing Gaussian, in pixels.
      seed: int or None. Seed of the random field.

    Reference:
      Simard, Steinkraus & Platt, "Best Practices for Convolutional Neural Networks Applied to
      Visual Document Analysis", ICDAR 2003.
    """

    def __init__(self, alpha, sigma, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if alpha < 0 or sigma <= 0:
            raise ValueError(f"alpha must be >= 0 and sigma > 0, got alpha={alpha}, sigma={sigma}")
        self.alpha, self.sigma = float(alpha), float(sigma)

    def transform(self, images):
        batch, height, width = ops.shape(images)[0], images.shape[1], images.shape[2]
        field = keras.random.uniform((batch, height, width, 2), -1.0, 1.0, seed=self.seed_generator)
        # Separable Gaussian as two small matrix products (zero beyond the border, like a conv
        # with "same" padding); it compiles much faster than a wide depthwise convolution.
        field = ops.einsum("ij,bjkc->bikc", self._gaussian_matrix(height), field)
        field = ops.einsum("kl,bjlc->bjkc", self._gaussian_matrix(width), field)
        field = self.alpha * field  # (B, H, W, 2)
        ys = ops.arange(height, dtype=field.dtype)[None, :, None] + field[..., 0]
        xs = ops.arange(width, dtype=field.dtype)[None, None, :] + field[..., 1]
        return _bilinear(images, ys, xs)

    def _gaussian_matrix(self, n):
        """(n, n) matrix of the 1-D Gaussian filter, truncated at 3 sigma."""
        radius = int(math.ceil(3 * self.sigma))
        offsets = np.arange(n)[None, :] - np.arange(n)[:, None]
        weights = np.exp(-0.5 * (offsets / self.sigma) ** 2) * (np.abs(offsets) <= radius)
        norm = np.exp(-0.5 * (np.arange(-radius, radius + 1) / self.sigma) ** 2).sum()
        return ops.convert_to_tensor((weights / norm).astype("float32"))

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "sigma": self.sigma}


@keras.saving.register_keras_serializable(package="zoo")
class RandomStrokeWidth(RandomImageLayer):
    """Thicken or thin dark strokes on a light background by a random fraction of one pixel.

    Per image t ~ U(-factor, factor): t > 0 blends towards a 3x3 minimum filter (dark ink
    spreads: thicker strokes), t < 0 towards a 3x3 maximum filter (thinner strokes), by |t|.
    Polarity: Omniglot as stored, 255 = paper, 0 = ink. For bright ink the two directions swap,
    and since they are drawn with equal probability the layer is still a symmetric jitter.

    Args:
      factor: float. Largest blend towards the filtered image, in [0, 1].
      seed: int or None. Seed of the per-image draw.
    """

    def __init__(self, factor=0.5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0 <= factor <= 1:
            raise ValueError(f"factor must be in [0, 1], got {factor}")
        self.factor = float(factor)

    def transform(self, images):
        t = keras.random.uniform(
            (ops.shape(images)[0], 1, 1, 1), -self.factor, self.factor, seed=self.seed_generator
        )
        thick = -ops.max_pool(-images, pool_size=3, strides=1, padding="same")
        thin = ops.max_pool(images, pool_size=3, strides=1, padding="same")
        return images + ops.relu(t) * (thick - images) + ops.relu(-t) * (thin - images)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="zoo")
class RandomBackground(RandomImageLayer):
    """Paint the near-white background of each image a random colour.

    Per image, a colour c ~ U(0, 255)^3; a pixel takes c by the weight w = clip((m - low) / (255 - low), 0, 1),
    m its smallest channel (1 on pure white, 0 below `low`, so antialiased edges blend). For icons drawn on white
    (emoji as bundled): the same drawing on another background.

    Args:
      low: float. Smallest channel value from which a pixel counts as (partly) background.
      seed: int or None. Seed of the colours.
    """

    def __init__(self, low=230.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0 <= low < 255:
            raise ValueError(f"low must be in [0, 255), got {low}")
        self.low = float(low)

    def transform(self, images):
        colour = keras.random.uniform((ops.shape(images)[0], 1, 1, images.shape[-1]), 0.0, 255.0,
                                      seed=self.seed_generator)
        weight = ops.clip((ops.min(images, axis=-1, keepdims=True) - self.low) / (255.0 - self.low), 0.0, 1.0)
        return images * (1.0 - weight) + colour * weight  # (B, H, W, C)

    def get_config(self):
        return {**super().get_config(), "low": self.low}


def _sequential(layers, name):
    """`keras.Sequential(layers, name=name)` computing in float32 whatever the global dtype policy: under
    mixed precision (a recipe's `--precision`) the views are still made from float32 pixels, and the
    encoder's first layer casts them to its compute dtype."""
    pipeline = keras.Sequential(layers, name=name)
    for layer in pipeline._flatten_layers(include_self=True, recursive=True):
        layer.dtype_policy = "float32"
    return pipeline


def _seeds(seed):
    """A distinct seed per layer (or None for each), so layers draw independently."""
    count = 0
    while True:
        yield None if seed is None else seed + count
        count += 1


def _side(image_size):
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    return size


def simclr_rgb(image_size, strength=1.0, blur=0.5, solarize=0.0, seed=None):
    """SimCLR views of RGB images: crop-resize, flip, colour jitter, grey, blur (, solarize).

    As in the paper's appendix A: random resized crop (area 8-100%, ratio 3/4-4/3), horizontal
    flip, colour jitter with probability 0.8 (brightness, contrast, saturation 0.8s, hue 0.2s for
    strength s; brightness additive as in the authors' TF code), greyscale with probability 0.2,
    Gaussian blur (sigma 0.1-2.0, kernel ~10% of the side) with probability `blur`; BYOL adds
    solarization with probability `solarize` (0.2 on its second view).

    Args:
      image_size: int or (int, int). Output side(s); the input may have any size.
      strength: float. Colour jitter strength s.
      blur: float. Probability of the Gaussian blur (the paper drops it for CIFAR-sized images).
      solarize: float. Probability of solarization.
      seed: int or None. Base seed of the layers.

    Reference:
      Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
      Representations", ICML 2020; Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020.
    """
    height, width = _side(image_size)
    seeds = _seeds(seed)
    jitter_saturation = [m / (1 + m) for m in (max(1 - 0.8 * strength, 0.0), 1 + 0.8 * strength)]
    jitter = keras.layers.RandomColorJitter(
        value_range=(0, 255),
        brightness_factor=min(0.8 * strength, 1.0),
        contrast_factor=min(0.8 * strength, 1.0),
        saturation_factor=tuple(jitter_saturation),  # keras multiplies saturation by f / (1 - f)
        hue_factor=min(0.4 * strength, 1.0),  # keras shifts hue by up to factor / 2 of a turn
        seed=next(seeds),
    )
    kernel = max(3, int(0.1 * min(height, width)) // 2 * 2 + 1)
    layers = [
        RandomResizedCrop(height, width, seed=next(seeds)),
        keras.layers.RandomFlip("horizontal", seed=next(seeds)),
        RandomApply(jitter, 0.8, seed=next(seeds)),
        keras.layers.RandomGrayscale(0.2, seed=next(seeds)),
        keras.layers.RandomGaussianBlur(
            factor=(blur, blur), kernel_size=kernel, sigma=(0.1, 2.0), value_range=(0, 255), seed=next(seeds)
        ),
    ]
    if solarize > 0:
        solar = keras.layers.Solarization(threshold_factor=(0.5, 0.5), value_range=(0, 255), seed=next(seeds))
        layers.append(RandomApply(solar, solarize, seed=next(seeds)))
    return _sequential(layers, name="simclr_rgb")


def characters(image_size, seed=None):
    """Views of handwritten characters (dark ink on white): small affine, elastic, stroke width.

    One affine map (rotation up to 10 degrees, shear up to 0.15, zoom and translation up to
    10%; pixels from outside the frame take the edge value, i.e. paper); elastic distortion
    with Simard et al.'s alpha = 34, sigma = 4 at 28 pixels (sigma scaled with the side, alpha
    with its square, so the displacement keeps its share of the image); stroke-width jitter.
    No flip: a mirrored character is another character.

    Args:
      image_size: int or (int, int). Side(s) of the input and output images.
      seed: int or None. Base seed of the layers.
    """
    height, width = _side(image_size)
    s = min(height, width) / 28
    seeds = _seeds(seed)
    return _sequential(
        [
            RandomAffine(rotation=10, shear=0.15, zoom=0.1, translation=0.1, seed=next(seeds)),
            RandomElasticDistortion(34.0 * s * s, 4.0 * s, seed=next(seeds)),
            RandomStrokeWidth(0.5, seed=next(seeds)),
        ],
        name="characters",
    )


def square_crops(image_size, scale=(0.5, 1.0), seed=None):
    """A random square crop, resized back: CLIP's only augmentation. No flips, which would turn a
    caption's "left" into "right".

    Args:
      image_size: int. Output side; the input may have any size.
      scale: (float, float). Range of the crop's area as a fraction of the image.
      seed: int or None. Seed of the layer.

    Reference:
      Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", 2021:
      "A random square crop from resized images is the only data augmentation used".
    """
    height, width = _side(image_size)
    return _sequential([RandomResizedCrop(height, width, scale=scale, ratio=(1.0, 1.0), seed=seed)],
                       name="square_crops")


def icon_styles(image_size, seed=None):
    """Views of icons drawn on white (emoji) that change the art style, not the content: a square crop, a small
    affine map, another background colour, colour jitter, thicker or thinner outlines, grey, blur. No flips (a
    caption's "left" would become "right") and no colour inversion, which `recipes/clip_shift.py` keeps as an
    unseen shift.

    Args:
      image_size: int. Side of the input and output images.
      seed: int or None. Base seed of the layers.

    Reference:
      Radford et al. 2021 (CLIP's random square crop); Chen et al. 2020 (SimCLR's colour jitter, grey, blur).
    """
    height, width = _side(image_size)
    seeds = _seeds(seed)
    kernel = max(3, int(0.1 * min(height, width)) // 2 * 2 + 1)
    jitter = keras.layers.RandomColorJitter(value_range=(0, 255), brightness_factor=0.3, contrast_factor=0.3,
                                            saturation_factor=(0.3, 0.7), hue_factor=0.2, seed=next(seeds))
    return _sequential(
        [
            RandomResizedCrop(height, width, scale=(0.6, 1.0), ratio=(1.0, 1.0), seed=next(seeds)),
            RandomAffine(rotation=10, shear=0.1, zoom=0.1, translation=0.05, seed=next(seeds)),
            RandomApply(RandomBackground(seed=next(seeds)), 0.3, seed=next(seeds)),
            RandomApply(jitter, 0.8, seed=next(seeds)),
            RandomStrokeWidth(0.5, seed=next(seeds)),
            keras.layers.RandomGrayscale(0.2, seed=next(seeds)),
            keras.layers.RandomGaussianBlur(factor=(0.3, 0.3), kernel_size=kernel, sigma=(0.1, 1.5),
                                            value_range=(0, 255), seed=next(seeds)),
        ],
        name="icon_styles",
    )


def faces(image_size, seed=None):
    """Views of aligned face crops: horizontal flip, mild crop-resize, mild colour jitter.

    Args:
      image_size: int or (int, int). Output side(s); the input may have any size.
      seed: int or None. Base seed of the layers.

    Reference:
      Schroff, Kalenichenko & Philbin, "FaceNet: A Unified Embedding for Face Recognition and
      Clustering", CVPR 2015.
    """
    height, width = _side(image_size)
    seeds = _seeds(seed)
    return _sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=next(seeds)),
            RandomResizedCrop(height, width, scale=(0.7, 1.0), ratio=(0.9, 1.1), seed=next(seeds)),
            keras.layers.RandomColorJitter(
                value_range=(0, 255),
                brightness_factor=0.2,
                contrast_factor=0.2,
                saturation_factor=(0.8 / 1.8, 1.2 / 2.2),  # saturation x 0.8..1.2
                hue_factor=0.05,
                seed=next(seeds),
            ),
        ],
        name="faces",
    )
