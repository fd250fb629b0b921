"""Retrain the `clip` entry: a small image-text dual encoder on emoji names and COCO captions.

    python recipes/clip.py            # 24 epochs (about 25 min on 2 CPU cores), publishes exports/clip
    python recipes/clip.py --smoke    # seconds, publishes into runs/smoke-exports

The published entry trained 150 epochs of a 4-stage image tower on a GPU machine without
TensorFlow (2 min on one H200, JAX backend), then was evaluated and published here:

    KERAS_BACKEND=jax python recipes/clip.py --epochs 150 --widths 32-64-128-256 --train-only \
        --workdir runs/gpu/clip
    python recipes/clip.py --epochs 150 --widths 32-64-128-256 --trained runs/gpu/clip

Trains on the emoji train split (image, Unicode name) plus COCO mini (every image with each of
its five captions), from scratch, with random square crops. Evaluates on the emoji test split,
never trained on: image<->text recall@1/5/10 among the test names, zero-shot top-1 over the 10
categories and over the subcategories with prompt ensembles of their names (and, for the
categories, also with each category described by its subcategory names), and a linear probe on
the image tower.
"""

from dataclasses import dataclass

import keras
import numpy as np

import zoo.data
from zoo import backbones, protocols
from zoo.data.augment import square_crops
from zoo.export import publish
from zoo.methods.clip import CLIP
from zoo.recipe import (EMOJI_PREPROCESSING, embed, parent_record, parse_config, print_metrics, train, user_card,
                        user_data)
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
    batch_size: int = 128
    epochs: int = 24
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    use_coco: bool = True
    crop_scale: float = 0.5  # random square crops of this much of the area and more (0: no augmentation)
    limit: int = 0  # keep only this many training pairs (0: all); --smoke uses a few


SMOKE = {"epochs": 2, "limit": 64, "batch_size": 32, "widths": "16-32", "text_width": 32, "text_depth": 1,
         "text_heads": 2, "embedding_dim": 32, "context_length": 32}

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


def resize(images, size):
    """(N, H, W, C) uint8 -> (N, size, size, C) float32 0..255, antialiased bilinear."""
    if images.shape[1] == size:
        return images.astype("float32")
    out = keras.ops.image.resize(images.astype("float32"), (size, size), antialias=True)
    return np.clip(keras.ops.convert_to_numpy(out), 0, 255)


def build(config, train=None):
    """The compiled CLIP model of `config`, its training pairs (images, token_ids) and no callbacks; the pairs of
    the user's captions.csv folder when `train` is given."""
    keras.utils.set_random_seed(config.seed)
    tokenizer = Tokenizer(config.context_length)
    # Training pairs: emoji (image, name) and COCO (image, caption) for each of its 5 captions.
    emoji_train = zoo.data.load("emoji", "train") if train is None else train
    images = [resize(emoji_train["images"], config.image_size)]
    captions = [emoji_train["captions"]]
    if config.use_coco and train is None:
        coco = zoo.data.load("coco_mini", "train")
        coco_images = resize(coco["images"], config.image_size)
        images.append(np.repeat(coco_images, coco["captions"].shape[1], axis=0))
        captions.append(coco["captions"].reshape(-1))
    images, captions = np.concatenate(images), np.concatenate(captions)
    order = np.random.default_rng(config.seed).permutation(len(images))
    if config.limit:
        order = order[: config.limit]
    images, token_ids = images[order], tokenizer.encode(list(captions[order]))

    widths = tuple(int(w) for w in config.widths.split("-"))
    image_tower = backbones.small_resnet((config.image_size, config.image_size, 3), widths=widths,
                                         output_dim=config.embedding_dim, name="image_tower")
    text_tower = backbones.text_transformer(Tokenizer.vocab_size, config.context_length, config.text_width,
                                            config.text_depth, config.text_heads,
                                            output_dim=config.embedding_dim, name="text_tower")
    augment = square_crops(config.image_size, scale=(config.crop_scale, 1.0), seed=config.seed) \
        if config.crop_scale else None
    model = CLIP(image_tower, text_tower, augment=augment)
    steps = config.epochs * int(np.ceil(len(images) / config.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=config.learning_rate,
                                                      warmup_steps=max(1, steps // 20))
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay))
    return model, (images, token_ids), []


def main(argv=None):
    config, args = parse_config(Config, SMOKE, argv, description=__doc__)
    own = user_data(args, (config.image_size, config.image_size, 3), EMOJI_PREPROCESSING, seed=config.seed)
    if own is not None and own[0]["layout"] != "captions":
        raise ValueError(f"--data {args.data}: CLIP trains on image-text pairs; expected DIR/captions.csv "
                         f"(columns image,caption), got a {own[0]['layout']} folder")
    model, pairs, callbacks = build(config, own and own[0])
    towers = {"image_encoder": model.embedder, "text_encoder": model.text_embedder}
    run = train(model, pairs, config, args, images_per_epoch=len(pairs[0]), towers=towers,
                callbacks=callbacks, batch_size=config.batch_size, shuffle=True, argv=argv)
    tokenizer = Tokenizer(config.context_length)
    embed_image, embed_text = (lambda x: embed(model.embedder, x),
                               lambda texts: embed(model.text_embedder, tokenizer.encode(texts)))
    if own is None:
        # Held-out: the emoji test split, never trained on; the linear probe fits on the emoji train split.
        test, emoji_train = zoo.data.load("emoji", "test"), zoo.data.load("emoji", "train")
        test = {**test, "images": resize(test["images"], config.image_size)}
        emoji_train = {**emoji_train, "images": resize(emoji_train["images"], config.image_size)}
        metrics = protocols.zero_shot(embed_image, embed_text, test, templates=TEMPLATES, train=emoji_train)
    else:  # held-out: the image-caption pairs of your folder split off by --test-fraction
        test = own[1]
        metrics = protocols.image_text_retrieval(embed_image, embed_text, test)
    print_metrics(config.name, metrics)
    extras = {"tokenizer": "byte", "context_length": config.context_length,
              "logit_scale": float(keras.ops.convert_to_numpy(model.logit_scale())),
              "image_size": config.image_size, "templates": list(TEMPLATES)}
    golden_tokens = tokenizer.encode(["grinning face", "", "Ünïcödé ✓ 😀", "x" * (3 * config.context_length),
                                      str(test["captions"][0])])
    def retrieval_of(folder):  # with --init: the parent on the same held-out pairs, to see what fine-tuning bought
        clip = OnnxCLIP(folder)
        return protocols.image_text_retrieval(clip.encode_image, clip.encode_text, test)

    parent = parent_record(args, "zero_shot", own and test, measure=retrieval_of)
    card = user_card({**CARD, "recipe": run.command, "extras": extras}, args, own and own[2], parent, metrics)
    return publish(config.name, towers, card=card, metrics=metrics,
                   training=run.record(config, pairs=len(pairs[0]), data=own and own[2]),
                   golden_inputs={"image_encoder": test["images"][:4], "text_encoder": golden_tokens},
                   int8=not (args.smoke or args.data), root=args.root)


if __name__ == "__main__":
    main()
