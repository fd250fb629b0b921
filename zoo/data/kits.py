"""The data kits of the bundled entries: each data set's splits, preprocessing contract, licence and the
training data of the recipes that use it (Omniglot's alphabets, LFW's identities and face template, the
emoji's contract), and, with --data, a user's folder through the same contract."""

import numpy as np

def subset(data, rows=0, classes=0, seed=0):
    """Images and labels of `rows` seeded-random images or of `classes` seeded-random classes (0: all)."""
    images, labels = data["images"], data["labels"]
    rng = np.random.default_rng(seed)
    if rows:
        if rows > len(images):
            raise ValueError(f"asked for {rows} images, the split has {len(images)}")
        keep = np.sort(rng.choice(len(images), rows, replace=False))
        return images[keep], labels[keep]
    if classes:
        names = np.unique(labels)
        if classes > len(names):
            raise ValueError(f"asked for {classes} classes, the split has {len(names)}")
        keep = np.isin(labels, rng.choice(names, classes, replace=False))
        return images[keep], labels[keep]
    return images, labels


OMNIGLOT_SPLITS = {"train": "omniglot/background", "test": "omniglot/evaluation"}


# The preprocessing contracts (`zoo.runtime.contract`) of the bundled sets: how `zoo/data/build_npz.py` made the
# training arrays from the original files, so that files of any size reach the model the same way.
OMNIGLOT_PREPROCESSING = {
    "color": "grey", "background": [255, 255, 255], "ink": "dark", "face": None, "crop": None, "fit": "pad",
    "resize": {"method": "box", "size": [28, 28]},
    "source": "Omniglot 105x105 PNGs, ink 0 on paper 255, resized to 28x28 by Pillow's BOX filter",
}


EMOJI_PREPROCESSING = {
    "color": "rgb", "background": [255, 255, 255], "ink": None, "face": None, "crop": None, "fit": "pad",
    "resize": {"method": "box", "size": [64, 64]},
    "source": "Noto emoji 64x64 RGBA PNGs composited onto white (Pillow's alpha_composite), RGB",
}


OMNIGLOT_LICENSE = "MIT (Omniglot, Lake et al. 2015, github.com/brendenlake/omniglot)"


def omniglot_few_shot(embedder, *, classes=0, episodes=1000, queries=15, seed=0, size=28) -> tuple[dict, dict]:
    """The few-shot protocol (`zoo.protocols.few_shot`) of a Keras embedder on the Omniglot evaluation
    alphabets (`classes` seeded-random characters of them, 0: all 659) with Lake's runs: (metrics, the data)."""
    import zoo.data
    from zoo import protocols
    from zoo.training import embed

    images, labels = subset(zoo.data.load("omniglot", "evaluation", size=size), classes=classes, seed=seed)
    data = {"images": np.asarray(images, np.float32), "labels": labels}
    metrics = protocols.few_shot(lambda x: embed(embedder, x), data, runs=zoo.data.omniglot_oneshot_runs(size=size),
                                 queries=queries, episodes=episodes, seed=seed)
    return metrics, data


def background_views(config, groups=False, train=None):
    """A TwoViewSampler over `config.train_images` seeded background images of Omniglot (0: all 19,280), or over
    the user's `train` images (`omniglot_data`), labels unread; with `groups`, their character ids (class
    labels) group the views (MICLe's positives)."""
    import zoo.data
    from zoo.data.samplers import TwoViewSampler

    data = zoo.data.load("omniglot", "background") if train is None else train
    images, labels = subset(data, rows=config.train_images if train is None else 0, seed=config.seed)
    return TwoViewSampler(images, config.batch_size, config.steps_per_epoch, seed=config.seed,
                          **({"groups": labels} if groups else {}))


def omniglot_data(args, config, min_per_class=1):
    """The Omniglot recipes' own data: None (the bundled background and evaluation alphabets), or with --data
    (train, held_out, record) of the user's folder through the drawings' contract (the parent's with --init)."""
    from zoo.finetune import user_data

    return user_data(args, (28, 28, 1), OMNIGLOT_PREPROCESSING, seed=config.seed, min_per_class=min_per_class)


LFW_SPLITS = {"train": "lfw/train", "test": "lfw/test"}


LFW_LICENSE = "LFW: no license stated; research use (cite Huang et al. 2007)"


LFW_DATASET = "LFW, people with >= 10 photos (48x48 RGB), train identities"


def lfw_splits(identities=0) -> tuple[dict, dict]:
    """LFW train (labels remapped to 0..C-1; the first `identities` of them, 0: all) and test identities."""
    import zoo.data

    train, test = zoo.data.load("lfw", "train"), zoo.data.load("lfw", "test")
    _, labels = np.unique(train["labels"], return_inverse=True)  # global identity ids -> 0..C-1
    keep = labels < identities if identities else slice(None)
    return {"images": train["images"][keep], "labels": labels[keep]}, test


def face_template(crops, frame=112) -> tuple[np.ndarray, float]:
    """Where the training crops hold their faces: the mean MTCNN landmarks of `crops`, in pixels of a
    `frame` x `frame` crop; returns (template (5, 2) (x, y), share of crops with a face found).

    Each crop is enlarged to the frame (bilinear) and set in a canvas twice its size (edges repeated),
    so the detector sees the face whole with margin around it.

    Args:
        crops: uint8 (N, h, w, 3). fixed crops of the training photos (the bundled LFW arrays).
        frame: int. side of the crop in the original photos (LFW: the 112-pixel box).
    """
    from zoo.runtime import images as ops
    from zoo.runtime.contract import face_detector

    detector, margin, points = face_detector({"detector": "mtcnn"}), frame // 2, []
    for crop in crops:
        canvas = np.pad(ops.resize(crop, (frame, frame), "bilinear"), ((margin, margin), (margin, margin), (0, 0)),
                        mode="edge")
        faces = detector.detect(canvas)
        if faces:
            points.append(np.asarray(faces[0]["landmarks"], np.float64) - margin)
    if not points:
        raise ValueError(f"no face found in any of the {len(crops)} crops; cannot make a face template")
    return np.mean(points, axis=0), len(points) / len(crops)


def lfw_preprocessing(train_images, count=256, seed=0) -> dict:
    """The LFW entries' contract: MTCNN landmarks aligned onto the template of `count` seeded training crops
    (`face_template`) in the 112x112 frame of the LFW box, then BOX to 48x48; `--no-align` cuts the fixed box."""
    from zoo.data.build_npz import LFW_BOX, LFW_SIZE
    from zoo.protocols import seeded_sample
    from zoo.runtime.faces import MTCNN_SHA256

    frame = LFW_BOX[2] - LFW_BOX[0]
    template, found = face_template(seeded_sample(train_images, count, seed), frame)
    return {
        "color": "rgb", "background": [255, 255, 255], "ink": None,
        "face": {"detector": "mtcnn", "detector_sha256": MTCNN_SHA256, "min_face_size": 20, "select": "largest",
                 "frame": [frame, frame], "template": np.round(template, 3).tolist(),
                 "landmarks": ["left eye", "right eye", "nose", "mouth left", "mouth right"],
                 "template_from": f"mean MTCNN landmarks of {count} seeded LFW training crops (found in "
                                  f"{found:.3f} of them)"},
        "crop": {"frame": [250, 250], "box": list(LFW_BOX)}, "fit": "center_crop",
        "resize": {"method": "box", "size": [LFW_SIZE, LFW_SIZE]},
        "source": "LFW 250x250 JPEGs, box (69, 72)-(181, 184) cut, resized to 48x48 by Pillow's BOX filter",
    }


def face_data(args, config) -> tuple[dict, dict, dict, dict | None]:
    """The face recipes' data: (train, held_out, preprocessing, record). LFW's train and test identities, or
    with --data the user's folder aligned by the contract (the parent's with --init) and split by class."""
    train, test = lfw_splits(config.identities)
    shape = (config.side, config.side, 3)
    if args.parent is not None and args.parent["card"].preprocessing:
        preprocessing = args.parent["card"].preprocessing
    elif config.side != train["images"].shape[1]:
        raise ValueError(f"--side {config.side}: only a parent entry's contract (--init ENTRY, e.g. dlib_resnet) "
                         f"says how photos become {config.side}x{config.side} inputs; the LFW crops are "
                         f"{train['images'].shape[1]}x{train['images'].shape[2]}")
    else:  # files reach the model as the training crops did: faces aligned onto the crops' mean landmarks
        preprocessing = lfw_preprocessing(lfw_splits()[0]["images"], 16 if args.smoke else 256)
    from zoo.finetune import user_data

    own = user_data(args, shape, preprocessing, seed=config.seed)
    if own:
        return own[0], own[1], preprocessing, own[2]
    if shape[0] != train["images"].shape[1]:  # another input size: LFW's photos through the contract
        train = lfw_through("train", preprocessing, shape, config.identities)
        test = lfw_through("test", preprocessing, shape)
    return train, test, preprocessing, None


def lfw_through(split, contract, shape, identities=0) -> dict:
    """LFW's `split` at another input size than the bundled crops: its rows (for train, those of `lfw_splits`:
    the first `identities` identities, 0: all, labels 0..C-1) as rebuilt 250x250 photos through `contract`
    (`zoo.data.originals.prepared`). {"images", "labels"}."""
    import zoo.data
    from zoo.data.originals import prepared

    labels = zoo.data.load("lfw", split)["labels"]
    if split == "train":
        labels = np.unique(labels, return_inverse=True)[1]  # as lfw_splits numbers them
    rows = np.flatnonzero(labels < identities) if identities else np.arange(len(labels))
    return {"images": prepared("lfw", split, contract, shape, rows)["images"], "labels": np.asarray(labels)[rows]}
