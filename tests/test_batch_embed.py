"""`zoo batch-embed` on Beam's DirectRunner: Parquet shards equal to `zoo embed` on the same files, failures listed."""

import glob

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import zoo.data
from zoo import registry
from zoo.cli import main
from zoo.data.originals import emoji_rgba, lfw_photo


def _table(pattern) -> pa.Table:
    files = sorted(glob.glob(pattern))
    assert files, f"no shards {pattern}"
    return pa.concat_tables([pq.read_table(f) for f in files])


def _zoo_embed(name, paths, out) -> np.ndarray:
    assert main(["embed", name, *paths, "--out", str(out)]) == 0
    return np.load(out)


def _faces(folder, n=3):
    crops = zoo.data.load("lfw", "test")["images"][[0, 100, 200, 300, 400][:n]]
    paths = []
    for i, crop in enumerate(crops):
        paths.append(str(folder / f"face{i}.jpg"))
        Image.fromarray(lfw_photo(crop)).save(paths[-1], quality=90)  # 250x250: detected and aligned
    return paths


def test_faces_equal_zoo_embed_and_failures_are_listed_not_dropped(tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    faces = _faces(images)
    Image.fromarray(np.full((200, 300, 3), 120, np.uint8)).save(images / "wall.jpg")  # no face
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # a PNG signature, then nothing
    (images / "notes.txt").write_text("not a picture")
    output = str(tmp_path / "out" / "faces")

    status = main(["batch-embed", "facenet_triplet", str(images / "*"), "--output", output, "--batch-size", "2"])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out.startswith(f"wrote {output}-*-of-*.parquet: 3 embeddings of dimension 128")
    assert captured.err.count("\n") == 1
    assert "zoo batch-embed: error: 3 file(s) could not be embedded" in captured.err
    assert f"{output}.errors-*-of-*.parquet" in captured.err

    table = _table(f"{output}-*-of-*.parquet")
    assert table.schema == pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32()))])
    paths = table.column("path").to_pylist()
    assert sorted(paths) == faces  # one row per embeddable file, named as matched
    got = np.array(table.column("embedding").to_pylist(), np.float32)  # (3, 128)
    expected = _zoo_embed("facenet_triplet", paths, tmp_path / "expected.npy")
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert not np.allclose(got[0], got[1], atol=1e-2)  # distinct photos, distinct rows

    errors = {r["path"]: r["error"] for r in _table(f"{output}.errors-*-of-*.parquet").to_pylist()}
    assert set(errors) == {str(images / name) for name in ("wall.jpg", "broken.png", "notes.txt")}
    assert errors[str(images / "wall.jpg")].startswith(f"{images / 'wall.jpg'}: no face found")
    assert errors[str(images / "broken.png")].startswith(f"{images / 'broken.png'}: cannot decode the image")
    assert errors[str(images / "notes.txt")].startswith(f"{images / 'notes.txt'}: not an image file")


def test_clip_embeds_with_its_image_tower_and_no_errors_exit_0(tmp_path, capsys):
    images = zoo.data.load("emoji", "test")["images"][:5]
    paths = []
    for i, x in enumerate(emoji_rgba(images)):  # RGBA files: alpha flattened by the contract
        paths.append(str(tmp_path / f"emoji{i}.png"))
        Image.fromarray(x).save(paths[-1])
    output = str(tmp_path / "out" / "clip")
    assert main(["batch-embed", "clip", str(tmp_path / "emoji*.png"), "--output", output]) == 0
    assert "5 embeddings of dimension 128 (clip, DirectRunner)" in capsys.readouterr().out
    table = _table(f"{output}-*-of-*.parquet")
    order = np.argsort(table.column("path").to_pylist())
    got = np.array(table.column("embedding").to_pylist(), np.float32)[order]
    np.testing.assert_allclose(got, _zoo_embed("clip", paths, tmp_path / "expected.npy"), atol=1e-4)
    assert _table(f"{output}.errors-*-of-*.parquet").num_rows == 0


def test_bad_input_is_refused_with_one_line(tmp_path, capsys):
    faces = _faces(tmp_path, n=1)
    output = str(tmp_path / "out" / "x")
    cases = [
        (["facenet_tripet", faces[0]], "no zoo entry 'facenet_tripet'"),
        (["facenet_triplet", str(tmp_path / "nothing*.jpg")], "nothing*.jpg: no files match"),
        (["facenet_triplet", faces[0], "--projct=p"], "unknown pipeline option(s): --projct (did you mean --project?)"),
        (["facenet_triplet", faces[0], "--batch-size", "0"], "--batch-size must be >= 1"),
    ]
    for argv, message in cases:
        assert main(["batch-embed", *argv, "--output", output]) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)

    # Shards of an earlier run under the prefix would mix with this run's.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x-00000-of-00002.parquet").write_bytes(b"")
    assert main(["batch-embed", "facenet_triplet", faces[0], "--output", output]) == 1
    assert "x-00000-of-00002.parquet: shards of an earlier run are there" in capsys.readouterr().err

    # A graph that is not the card's is refused on the worker, before it embeds anything.
    other = registry.exports_dir() / "protonet" / "embedder.onnx"
    assert main(["batch-embed", "facenet_triplet", faces[0], "--output", str(tmp_path / "y"),
                 "--model-uri", str(other)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"sha256 mismatch for {other}" in err
    assert not glob.glob(str(tmp_path / "y-*.parquet"))

    # Only batch-embed passes unknown options on (to Beam); the other commands still refuse them.
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "facenet_triplet", faces[0], "--out", str(tmp_path / "e.npy"), "--project=p"])
    assert exit_info.value.code == 2
