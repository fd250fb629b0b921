"""Retrain the `clip` entry, a small image-text dual encoder on emoji names and COCO captions, and `clip_lit`, its
locked-image tuning on the emoji's CLDR names and keywords and their categories.

    python recipes/clip.py            # 24 epochs (about 25 min on 2 CPU cores), publishes exports/clip
    python recipes/clip.py --smoke    # seconds, publishes into runs/smoke-exports

The published `clip` trained 150 epochs of a 4-stage image tower on a GPU machine without TensorFlow (2 min on
one H200, JAX backend), then was evaluated and published here:

    KERAS_BACKEND=jax python recipes/clip.py --epochs 150 --widths 32-64-128-256 --train-only \
        --workdir runs/gpu/clip
    python recipes/clip.py --epochs 150 --widths 32-64-128-256 --trained runs/gpu/clip

`clip_lit` starts from it (LiT, Zhai et al. 2022: "locked-image text tuning"): its image tower stays locked but
for its last stage and linear layer (`--tuned-stages 1`), which train with a new text tower on more text per
image (the Unicode name, the CLDR short name, the CLDR keywords, the category, the subcategory: `--captions`; with
`--label-prompts` the category and subcategory written in one of the zero-shot prompt templates, as UniCL turns
labels into text, so the category names are in the training text of the train images) and on style views of
each image (`--styles`: `zoo.data.augment.icon_styles`; the locked part computes `--views` of each image once, so
an epoch costs the text tower and the tuned stage, which 2 CPU cores afford). Its text tower is a bag of hashed
byte n-grams (`--text-tower ngrams`: `backbones.text_ngrams`, fastText's subwords): the test names are unseen
word combinations, which the byte transformer of `clip` does not learn to read from 1,500 captions.

    python recipes/clip.py --init clip --lock-image true --styles true --captions \
        name+cldr+keywords+category+subcategory --label-prompts true --views 4 --epochs 60 --batch-size 256 \
        --learning-rate 5e-3 --text-tower ngrams --tuned-stages 1 --name clip_lit

Each epoch shows every training image once with one of its captions drawn at random (`CaptionSampler`); rows
that share an image or a caption (a category name) are matches in the loss (UniCL, `losses.clip(positives=)`).
Trains on the emoji train split plus COCO mini (each image with its five captions). Evaluates on the emoji test
split, never trained on (neither its images nor its names or annotations): image<->text recall@1/5/10 among the
test names, zero-shot top-1 over the 10 categories and over the subcategories with prompt ensembles of their
names (and, for the categories, also with each category described by its subcategory names), and a linear probe
on the image tower. `recipes/clip_shift.py` measures the entries under changes of art style.
"""

from dataclasses import dataclass

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras
import numpy as np

import zoo.data
from zoo import backbones, protocols
from zoo.backbones import embedder_from
from zoo.data.augment import icon_styles, square_crops
from zoo.data.samplers import CaptionSampler
from zoo.export import publish
from zoo.methods.clip import CLIP
from zoo.data.kits import EMOJI_PREPROCESSING
from zoo.finetune import parent_record, user_card, user_data
from zoo.training import Stopwatch, embed, load_towers, parse_config, print_metrics, train
from zoo.runtime import OnnxCLIP, Tokenizer


@dataclass
class Config:
    name: str = "clip"
    seed: int = 0
    image_size: int = 64
    embedding_dim: int = 128
    widths: str = "32-64-128"
    context_length: int = 64
    text_width: int = 128
    text_depth: int = 2
    text_heads: int = 4
    text_tower: str = "transformer"  # or "ngrams": hashed byte n-grams and an MLP (backbones.text_ngrams)
    text_buckets: int = 8192  # with text_tower ngrams: hash buckets of the n-gram table
    batch_size: int = 128
    epochs: int = 24
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    use_coco: bool = True
    crop_scale: float = 0.5  # random square crops of this much of the area and more (0: no augmentation)
    limit: int = 0  # keep only this many training pairs (0: all); --smoke uses a few
    captions: str = "name"  # "+"-joined caption sources of an emoji: name cldr keywords category subcategory
    styles: bool = False  # icon_styles views (colour, background, outline, grey, blur) instead of square crops
    lock_image: bool = False  # LiT: the --init entry's image tower stays locked but for its last (linear) layer
    views: int = 8  # with lock_image: views of each image (the first as it is) embedded once by the locked tower
    tuned_stages: int = 0  # with lock_image: this many last stages of the image tower train too
    label_prompts: bool = False  # category and subcategory captions in a prompt template (one of TEMPLATES per image)


SMOKE = {"epochs": 2, "limit": 64, "batch_size": 32, "widths": "16-32", "text_width": 32, "text_depth": 1,
         "text_heads": 2, "embedding_dim": 32, "context_length": 32, "views": 2}

# Prompt ensembles for zero-shot classification, averaged in embedding space.
TEMPLATES = ("{}", "an emoji of {}", "a picture of {}", "{} emoji")

CARD = {
    "method": "CLIP", "protocol": "zero_shot", "primary_metric": "image_to_text_recall@5",
    "dataset": "emoji (Noto) train + COCO mini train",
    "splits": {"train": "emoji/train + coco_mini/train", "test": "emoji/test"}, "preprocessing": EMOJI_PREPROCESSING,
    "data_license": "Noto Emoji: Apache-2.0 (images), Unicode names; COCO: CC BY 4.0 annotations, Flickr image "
                    "licences",
    "anchor": "chance recall@5 = 5 / test captions; CLIP (Radford et al. 2021) is trained on 400M pairs",
    "paper": "Radford et al. 2021, arXiv:2103.00020",
}
CLDR_LICENSE = "; CLDR annotations (short names, keywords): Unicode-3.0, via emojibase-data (MIT)"
LIT_PAPER = "; Zhai et al. 2022 (LiT), arXiv:2111.07991; Yang et al. 2022 (UniCL), arXiv:2204.03610"


def resize(images, size):
    """(N, H, W, C) uint8 -> (N, size, size, C) float32 0..255, antialiased bilinear."""
    if images.shape[1] == size:
        return images.astype("float32")
    out = keras.ops.image.resize(images.astype("float32"), (size, size), antialias=True)
    return np.clip(keras.ops.convert_to_numpy(out), 0, 255)


def emoji_captions(data, sources, templates=("{}",), seed=0):
    """Each emoji's captions from `sources` ("+"-joined): its Unicode `name`, its CLDR short name (`cldr`), its
    CLDR `keywords` in one line, its `category` and its `subcategory` in words, each of these two written in one
    of `templates` drawn per image (UniCL's labels as prompts); repeats dropped. list of lists."""
    known = {"name", "cldr", "keywords", "category", "subcategory"}
    sources = sources.split("+")
    if not sources or set(sources) - known:
        raise ValueError(f"--captions {'+'.join(sources)!r}: expected '+'-joined sources among {sorted(known)}")
    template = np.random.default_rng(seed).integers(0, len(templates), (len(data["images"]), 2))
    out = []
    for i in range(len(data["images"])):
        texts = {"name": str(data["captions"][i]),
                 "cldr": str(data.get("cldr_names", data["captions"])[i]),
                 "keywords": ", ".join(str(data.get("keywords", data["captions"])[i]).split("|")),
                 "category": protocols.words(data["category_names"][data["labels"][i]]) if "category_names" in data
                 else "",
                 "subcategory": protocols.words(data["subcategory"][i]) if "subcategory" in data else ""}
        for j, key in enumerate(("category", "subcategory")):
            texts[key] = texts[key] and templates[template[i, j]].format(texts[key])
        out.append(list(dict.fromkeys(t for t in (texts[k] for k in sources) if t)))
    return out


def locked_views(trunk, images, augment, views, batch_size=128):
    """() -> (V, N, ...) features of the locked trunk: view 0 of the images as they are, the others augmented."""
    def compute():
        out = np.zeros((views, len(images), *trunk.output_shape[1:]), np.float32)
        for v in range(views):
            for i in range(0, len(images), batch_size):
                x = images[i:i + batch_size]
                x = x if v == 0 else augment(x, training=True)
                out[v, i:i + batch_size] = keras.ops.convert_to_numpy(trunk(x, training=False))
            print(f"[clip] locked image tower: view {v + 1}/{views} of {len(images)} images embedded")
        return out
    return compute


def tuned_part(image_tower, stages):
    """The tensor of `image_tower` (a `backbones.small_resnet`) where its tuned part starts: the input of its
    last linear layer, or of the first (strided) 3x3 conv of its last `stages` stages. Before it, LiT keeps the
    tower locked."""
    starts = [layer.input for layer in image_tower.layers if isinstance(layer, keras.layers.Conv2D)
              and layer.kernel_size == (3, 3) and layer.strides == (2, 2)]
    if not 0 <= stages <= len(starts):
        raise ValueError(f"--tuned-stages {stages}: expected 0..{len(starts)} (the image tower's stages after "
                         f"its first)")
    return starts[-stages] if stages else image_tower.layers[-1].input


def build(config, train=None, parent=None):
    """The compiled CLIP model of `config`, its training pairs and no callbacks; the pairs of the user's
    captions.csv folder when `train` is given. With `config.lock_image` (LiT), the image tower is `parent`'s
    (`zoo.finetune.parent_entry`), locked; the model then trains the tower's last layer and its last
    `config.tuned_stages` stages on the locked part's features (computed once, for `config.views` views of each
    image) with the text tower, and keeps the whole image tower as `model.image_tower`."""
    keras.utils.set_random_seed(config.seed)
    tokenizer = Tokenizer(config.context_length)
    # Each emoji image with its captions; each COCO image with its five.
    emoji_train = zoo.data.load("emoji", "train") if train is None else train
    images = [resize(emoji_train["images"], config.image_size)]
    captions = emoji_captions(emoji_train, config.captions, TEMPLATES if config.label_prompts else ("{}",),
                              config.seed) if train is None else \
        [[str(c)] for c in emoji_train["captions"]]
    # Identical pictures under different names (11 groups in the emoji set) are one image to the loss.
    groups = [np.unique(emoji_train["images"].reshape(len(emoji_train["images"]), -1), axis=0,
                        return_inverse=True)[1].ravel()]
    if config.use_coco and train is None:
        coco = zoo.data.load("coco_mini", "train")
        images.append(resize(coco["images"], config.image_size))
        captions += [[str(c) for c in five] for five in coco["captions"]]
        groups.append(groups[0].max() + 1 + np.arange(len(coco["images"])))
    images, groups = np.concatenate(images), np.concatenate(groups)
    order = np.random.default_rng(config.seed).permutation(len(images))
    if config.limit:
        order = order[: config.limit]
    images, groups, captions = images[order], groups[order], [captions[i] for i in order]
    texts = sorted({t for c in captions for t in c})
    row = {t: i for i, t in enumerate(texts)}
    caption_ids = [[row[t] for t in c] for c in captions]

    widths = tuple(int(w) for w in config.widths.split("-"))
    image_tower = backbones.small_resnet((config.image_size, config.image_size, 3), widths=widths,
                                         output_dim=config.embedding_dim, name="image_tower")
    if config.text_tower not in ("transformer", "ngrams"):
        raise ValueError(f"--text-tower {config.text_tower!r}: expected 'transformer' or 'ngrams'")
    text_tower = backbones.text_ngrams(config.context_length, config.text_buckets, config.text_width,
                                       output_dim=config.embedding_dim, name="text_tower") \
        if config.text_tower == "ngrams" else \
        backbones.text_transformer(Tokenizer.vocab_size, config.context_length, config.text_width,
                                   config.text_depth, config.text_heads, output_dim=config.embedding_dim,
                                   name="text_tower")
    augment = icon_styles(config.image_size, seed=config.seed) if config.styles else \
        square_crops(config.image_size, scale=(config.crop_scale, 1.0), seed=config.seed) if config.crop_scale \
        else None
    inputs = images
    if config.tuned_stages and not config.lock_image:
        raise ValueError("--tuned-stages tunes the last stages of a locked image tower: pass --lock-image true too")
    if config.lock_image:
        if parent is None:
            raise ValueError("--lock-image keeps a trained image tower locked: pass --init ENTRY (e.g. --init clip)")
        # The parent's text tower too where it is of the same kind; an n-gram text tower starts afresh.
        same_text = parent["card"].training["config"].get("text_tower", "transformer") == config.text_tower
        load_towers(parent["folder"], parent["card"], {"image_encoder": embedder_from(image_tower),
                                                       **({"text_encoder": embedder_from(text_tower)}
                                                          if same_text else {})}, "--init", some=True)
        cut = tuned_part(image_tower, config.tuned_stages)
        trunk = keras.Model(image_tower.inputs[0], cut, name="locked_image_tower")
        trunk.trainable = False
        inputs = locked_views(trunk, images, augment, config.views)
        model = CLIP(keras.Model(cut, image_tower.outputs[0], name="image_head"), text_tower)
        model.image_tower = image_tower  # tracked: its weights are saved and restored with the model's
    else:
        model = CLIP(image_tower, text_tower, augment=augment)
    pairs = CaptionSampler(inputs, caption_ids, tokenizer.encode(texts), config.batch_size, groups=groups,
                           seed=config.seed)
    steps = config.epochs * len(pairs)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=config.learning_rate,
                                                      warmup_steps=max(1, steps // 20))
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay))
    return model, pairs, []


def main(argv=None):
    config, args = parse_config(Config, SMOKE, argv, description=__doc__)
    own = user_data(args, (config.image_size, config.image_size, 3), EMOJI_PREPROCESSING, seed=config.seed)
    if own is not None and own[0]["layout"] != "captions":
        raise ValueError(f"--data {args.data}: CLIP trains on image-text pairs; expected DIR/captions.csv "
                         f"(columns image,caption), got a {own[0]['layout']} folder")
    model, pairs, callbacks = build(config, own and own[0], parent=args.parent)
    image_encoder = embedder_from(model.image_tower) if config.lock_image else model.embedder
    towers = {"image_encoder": image_encoder, "text_encoder": model.text_embedder}
    locked = Stopwatch()
    if config.lock_image and not args.trained:
        with locked:  # the locked tower's features, here in the main thread (fit reads batches in another)
            pairs.views()
    run = train(model, pairs, config, args, images_per_epoch=len(pairs.captions), towers=towers,
                init_towers={} if config.lock_image else None, callbacks=callbacks, argv=argv)
    tokenizer = Tokenizer(config.context_length)
    if own is None:
        # Held-out: the emoji test split, never trained on; the linear probe fits on the emoji train split.
        test, emoji_train = zoo.data.load("emoji", "test"), zoo.data.load("emoji", "train")
        test = {**test, **zoo.data.held_out_extras("emoji/test"), "images": resize(test["images"], config.image_size)}
        emoji_train = {**emoji_train, "images": resize(emoji_train["images"], config.image_size)}
        evaluate = lambda image, text: protocols.zero_shot(image, text, test, templates=TEMPLATES,  # noqa: E731
                                                           train=emoji_train)
    else:  # held-out: the image-caption pairs of your folder split off by --test-fraction
        test = own[1]
        evaluate = lambda image, text: protocols.image_text_retrieval(image, text, test)  # noqa: E731
    metrics = evaluate(lambda x: embed(image_encoder, x),
                       lambda texts: embed(model.text_embedder, tokenizer.encode(texts)))
    print_metrics(config.name, metrics)
    extras = {"tokenizer": "byte", "context_length": config.context_length,
              "logit_scale": float(keras.ops.convert_to_numpy(model.logit_scale())),
              "image_size": config.image_size, "templates": list(TEMPLATES), "captions": config.captions.split("+")}
    golden_tokens = tokenizer.encode(["grinning face", "", "Ünïcödé ✓ 😀", "x" * (3 * config.context_length),
                                      str(test["captions"][0])])

    def parent_metrics(folder):  # with --init: the parent on the same held-out part, to see what fine-tuning bought
        clip = OnnxCLIP(folder)
        return evaluate(clip.encode_image, clip.encode_text)

    parent = parent_record(args, "zero_shot", test, measure=parent_metrics)
    # The emoji's category and subcategory names as captions are its class labels, read in training.
    labels = bool({"category", "subcategory"} & set(config.captions.split("+")))
    card = {**CARD, "recipe": run.command, "extras": extras, "trained_with_labels": labels}
    if "cldr" in config.captions or "keywords" in config.captions:
        card["data_license"] += CLDR_LICENSE
        card["dataset"] = "emoji (Noto) train with CLDR names and keywords + COCO mini train"
    if config.lock_image:
        card["paper"] += LIT_PAPER
    card = user_card(card, args, own and own[2], parent, metrics)
    return publish(config.name, towers, card=card, metrics=metrics,
                   training=run.record(config, pairs=len(pairs.captions), captions=len(pairs.token_ids),
                                       locked_views_minutes=getattr(locked, "seconds", 0) and
                                       round(locked.seconds / 60, 2) or None, data=own and own[2]),
                   golden_inputs={"image_encoder": test["images"][:4], "text_encoder": golden_tokens},
                   int8=not (args.smoke or args.data), root=args.root)


if __name__ == "__main__":
    main()
