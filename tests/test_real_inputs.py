"""Real inputs: the preprocessing contract (numpy) against Pillow and the bundled arrays, file decoding, faces
found and aligned anywhere in a photo, and every entry's files through the runtime against Keras on the arrays."""

import json

import numpy as np
import pytest
from PIL import Image

import zoo
import zoo.data
from zoo import registry
from zoo.cli import main
from zoo.data.build_npz import LFW_BOX
from zoo.data.originals import emoji_rgba, lfw_photo
from zoo.runtime import OnnxEmbedder, read_image
from zoo.runtime import images as ops
from zoo.runtime.contract import prepare

ENTRIES = registry.list_models()
FACE_ENTRY = "facenet_triplet"


# --- the contract's image operations are Pillow's, bit for bit -------------------------------


@pytest.mark.parametrize("method", ["box", "bilinear"])
@pytest.mark.parametrize("shape, size", [((105, 105, 1), (28, 28)), ((112, 112, 3), (48, 48)), ((37, 91, 3), (64, 64)),
                                         ((480, 640, 3), (112, 112)), ((20, 30, 1), (64, 48))])
def test_resize_is_pillows(shape, size, method):
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    filters = {"box": Image.BOX, "bilinear": Image.BILINEAR}
    expected = np.asarray(Image.fromarray(x[..., 0] if shape[2] == 1 else x).resize(size[::-1], filters[method]))
    np.testing.assert_array_equal(ops.resize(x, size, method), expected.reshape(*size, shape[2]))


def test_luma_and_alpha_composite_are_pillows():
    rng = np.random.default_rng(1)
    rgb, rgba = rng.integers(0, 256, (30, 20, 3), np.uint8), rng.integers(0, 256, (30, 20, 4), np.uint8)
    np.testing.assert_array_equal(ops.luma(rgb)[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
    white = Image.new("RGBA", (20, 30), (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, Image.fromarray(rgba)).convert("RGB"))
    np.testing.assert_array_equal(ops.flatten_alpha(rgba, (255, 255, 255)), expected)


def test_similarity_transform_recovers_a_known_one():
    points = np.random.default_rng(2).uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([4.0, -9.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    np.testing.assert_allclose(ops.similarity_transform(points, points @ rotation.T + shift),
                               np.concatenate([rotation, shift[:, None]], axis=1), atol=1e-9)


# --- original files through the contract give the bundled arrays ------------------------------


def test_omniglot_105_through_the_contract_gives_the_bundled_28():
    contract = zoo.info("protonet").preprocessing
    rows = np.random.default_rng(0).choice(13180, 300, replace=False)
    big = zoo.data.load("omniglot", "evaluation", size=105)["images"][rows]
    small = zoo.data.load("omniglot", "evaluation")["images"][rows]
    prepared = np.stack([prepare(x, contract, (28, 28, 1)) for x in big])
    np.testing.assert_array_equal(prepared, small)
    # Light ink on dark paper (as MNIST) is turned round first; another aspect ratio is padded with paper.
    inverted = np.stack([prepare(255 - x, contract, (28, 28, 1)) for x in big[:20]])
    np.testing.assert_array_equal(inverted, small[:20])
    wide = np.pad(big[0], ((0, 0), (10, 11), (0, 0)), constant_values=255)
    np.testing.assert_array_equal(prepare(wide[:, :, 0], contract, (28, 28, 1)),
                                  ops.resize(ops.pad_to_square(wide, [255]), (28, 28)))


def test_lfw_fixed_crop_is_the_bundled_conversion():
    """`align=False` cuts the LFW box and BOX-resizes it, as build_npz.py made the 48x48 crops."""
    photo = np.random.default_rng(3).integers(0, 256, (250, 250, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(photo).crop(LFW_BOX).resize((48, 48), Image.BOX))
    np.testing.assert_array_equal(prepare(photo, zoo.info(FACE_ENTRY).preprocessing, (48, 48, 3), align=False),
                                  expected)


def test_rgba_is_flattened_onto_white_as_the_training_images():
    images = zoo.data.load("emoji", "test")["images"][:50]
    contract = zoo.info("clip").preprocessing
    np.testing.assert_array_equal(np.stack([prepare(x, contract, (64, 64, 3)) for x in emoji_rgba(images)]), images)


# --- decoding files ------------------------------------------------------------------------


def test_read_image_decodes_every_mode(tmp_path):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (12, 9, 3), np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=8)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    decoded = read_image(tmp_path / "palette.png")
    assert decoded.shape == (12, 9, 4) and set(np.unique(decoded[..., 3])) <= {0, 255}
    grey16 = rng.integers(0, 65536, (7, 5)).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey16.png")[..., 0], np.rint(grey16 / 257).astype(np.uint8))
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert read_image(tmp_path / "cmyk.jpg").shape == (12, 9, 3)
    Image.fromarray(rgb[..., 0] > 128).save(tmp_path / "bits.png")
    assert set(np.unique(read_image(tmp_path / "bits.png"))) <= {0, 255}
    Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), np.dstack([rgb[..., 0], rgb[..., 1]]))
    # EXIF orientation 6: the camera was turned; the decoded picture is turned back (90 degrees clockwise).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "turned.png", exif=exif)
    np.testing.assert_array_equal(read_image(tmp_path / "turned.png"), np.rot90(rgb, k=-1))


# --- faces --------------------------------------------------------------------------------


def in_picture(photo, scale, top, left, size=(400, 520), seed=0):
    """`photo` scaled and pasted at (top, left) in a picture of smooth coloured noise."""
    noise = np.random.default_rng(seed).integers(0, 256, (size[0] // 40, size[1] // 40, 3), dtype=np.uint8)
    canvas = ops.resize(noise, size, "bilinear").copy()
    small = ops.resize(photo, (round(photo.shape[0] * scale), round(photo.shape[1] * scale)), "bilinear")
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return canvas


@pytest.fixture(scope="module")
def faces():
    test = zoo.data.load("lfw", "test")
    rows = [0, 100, 200, 300, 400, 500]
    return OnnxEmbedder(registry.exports_dir() / FACE_ENTRY), test["images"][rows]


def test_a_face_anywhere_in_a_picture_gives_the_embedding_of_its_crop(faces):
    embedder, crops = faces
    photos = [lfw_photo(c) for c in crops]
    reference = embedder.embed(crops)  # the bundled crops, as the card's metrics were measured
    aligned = embedder.embed(photos)
    elsewhere = embedder.embed([in_picture(p, s, t, l, seed=i) for i, (p, s, t, l) in
                                enumerate(zip(photos, [0.7, 1.3, 0.9, 1.5, 0.8, 1.1], [5, 20, 130, 10, 90, 0],
                                              [240, 0, 60, 130, 300, 200]))])
    # Alignment turns and scales each face onto the template where the fixed crop did not, so single faces move
    # (benchmarks/real_inputs.py measures that verification accuracy does not); where the photo lies does not.
    assert np.sum(aligned * reference, axis=1).mean() > 0.75
    assert np.sum(elsewhere * aligned, axis=1).min() > 0.95
    # Without alignment, the fixed box of a pasted picture misses the face.
    fixed = embedder.embed([in_picture(photos[0], 0.7, 5, 240)], align=False)
    assert float(fixed[0] @ aligned[0]) < 0.9


def test_several_faces_the_largest_first_or_the_one_asked_for(faces):
    embedder, crops = faces
    big, small = lfw_photo(crops[0]), lfw_photo(crops[1])
    group = in_picture(big, 1.0, 10, 10, size=(300, 480))
    group[40:165, 300:425] = ops.resize(small, (125, 125), "bilinear")
    alone = embedder.embed([big, small])
    first, second = embedder.embed(group), embedder.embed(group, face_index=1)
    assert float(first[0] @ alone[0]) > 0.95 and float(second[0] @ alone[1]) > 0.9
    with pytest.raises(ValueError, match="image 0: face 5 asked for, but 2 found"):
        embedder.embed(group, face_index=5)


def test_no_face_is_one_clear_line_naming_the_file(faces, tmp_path, monkeypatch, capsys):
    embedder, crops = faces
    Image.fromarray(np.full((200, 300, 3), 120, np.uint8)).save(tmp_path / "wall.jpg")
    Image.fromarray(lfw_photo(crops[0])).save(tmp_path / "face.jpg")
    assert main(["verify", FACE_ENTRY, str(tmp_path / "face.jpg"), str(tmp_path / "wall.jpg")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'wall.jpg'}: no face found" in err
    assert main(["verify", FACE_ENTRY, str(tmp_path / "face.jpg"), str(tmp_path / "face.jpg"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"same": True, "distance": 0.0,
                                                   "threshold": embedder.threshold}


def test_detector_finds_orl_faces_with_plausible_landmarks():
    from zoo.runtime.contract import face_detector

    detector = face_detector(zoo.info(FACE_ENTRY).preprocessing["face"])
    for image in zoo.data.load("orl", "all")["images"][::40]:  # 10 people, grey 112x92
        faces = detector.detect(image)
        assert faces, "no face found in an ORL photo"
        (le, re, nose, ml, mr) = faces[0]["landmarks"]
        assert le[0] < re[0] and ml[0] < mr[0] and max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])


def test_a_card_naming_other_detector_graphs_is_refused():
    from zoo.runtime.contract import face_detector

    spec = dict(zoo.info(FACE_ENTRY).preprocessing["face"])
    spec["detector_sha256"] = {**spec["detector_sha256"], "onet.onnx": "0" * 64}
    with pytest.raises(ValueError, match="is not this runtime's"):
        face_detector(spec)


def test_detector_refuses_tampered_weights(tmp_path):
    import shutil
    from pathlib import Path

    from zoo.runtime import faces
    from zoo.runtime.faces import FaceDetector

    folder = tmp_path / "mtcnn"
    shutil.copytree(Path(faces.__file__).parent / "mtcnn", folder)
    data = bytearray((folder / "rnet.onnx").read_bytes())
    data[-1] ^= 1
    (folder / "rnet.onnx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="rnet.onnx: sha256"):
        FaceDetector(folder)


# --- every entry: files through the runtime = arrays through Keras ----------------------------


def original_files(card, folder):
    """8 held-out images of the entry's test split as files in their original format, and the arrays the model
    was evaluated on: Omniglot 105x105 PNGs, emoji RGBA PNGs, LFW crops as PNGs; for a face entry at another
    side than the bundled crops (dlib_resnet), the rebuilt photos and the same photos through its contract."""
    from zoo.data import originals

    dataset, split = card.splits["test"].split("/")
    if dataset == "omniglot":
        files, arrays = zoo.data.load(dataset, split, size=105)["images"][:160:20], \
            zoo.data.load(dataset, split)["images"][:160:20]
    elif zoo.data.load(dataset, split)["images"].shape[1:] != card.input_shape:
        rows = np.arange(0, 160, 20)
        files = originals.photos(dataset, split, rows)["images"]
        arrays = originals.prepared(dataset, split, card.preprocessing, card.input_shape, rows)["images"]
    else:
        arrays = zoo.data.load(dataset, split)["images"][:160:20]
        files = emoji_rgba(arrays) if dataset == "emoji" else arrays
    paths = []
    for i, x in enumerate(files):
        paths.append(folder / f"{i}.png")
        Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).save(paths[-1])
    return paths, arrays


@pytest.mark.parametrize("name", ENTRIES)
def test_files_through_the_runtime_match_keras_on_the_bundled_arrays(name, tmp_path):
    card = zoo.info(name)
    assert card.preprocessing, f"{name}: the card states no preprocessing contract"
    paths, arrays = original_files(card, tmp_path)
    expected = np.asarray(zoo.load(name).predict(arrays.astype(np.float32), verbose=0))
    got = OnnxEmbedder(registry.exports_dir() / name).embed_files(paths)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_zero_shot_cli_on_rgba_files_against_the_runtime(tmp_path, capsys):
    from zoo.runtime import OnnxCLIP

    images = zoo.data.load("emoji", "test")["images"][:3]
    paths = []
    for i, x in enumerate(emoji_rgba(images)):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(x).save(paths[-1])
    classes = ["smileys and emotion", "animals and nature", "food and drink"]
    assert main(["zero-shot", "clip", *paths, "--classes", ",".join(classes), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    clip = OnnxCLIP(registry.exports_dir() / "clip")
    predictions, probabilities = clip.zero_shot(images, classes, clip.card["extras"]["templates"])
    assert [r["class"] for r in results] == [classes[i] for i in predictions]
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in results], probabilities, atol=1e-5)
