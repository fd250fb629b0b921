"""Nothing lost: every writer of the zoo (zoo index, zoo embed --out, publish, zoo report, batch-embed shards,
a recipe's --fresh) replaces only what it wrote itself, atomically, and refuses anything else with one line.
The command line's edge cases: file names that are not UTF-8 printed as their own bytes, FIFOs, folders,
symlink loops and unreadable files named for what they are (a FIFO never opened), one unreadable gallery file
skipped with a counted warning. Tiny inputs on the published `protonet` entry (28x28 grey)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.cli import main
from zoo.runtime.writes import write_folder

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def zoo_root(monkeypatch):
    monkeypatch.delenv("ZOO_EXPORTS", raising=False)  # the repository's exports/, with protonet


def _gallery(folder, n=4, seed=0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"g{i}.png")
    return sorted(str(p) for p in folder.glob("g*.png"))


def _snapshot(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
            for p in sorted(Path(folder).rglob("*"))}


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _hidden(folder) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


# --- zoo index --out ---------------------------------------------------------------------------------------------


def test_index_into_a_folder_of_other_files_deletes_nothing(tmp_path, capsys):
    pytest.importorskip("faiss")
    _gallery(tmp_path / "gal")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.txt").write_text("x")
    for extra in ([], ["--overwrite"]):
        assert main(["index", "protonet", str(tmp_path / "gal"), "--out", str(notes), *extra]) == 1
        _one_line_error(capsys, "notes: not empty and not a gallery index")
    assert _snapshot(notes) == {"thesis.txt": b"x"} and _hidden(tmp_path) == []


def test_index_onto_its_own_gallery_deletes_no_image(tmp_path, capsys):
    pytest.importorskip("faiss")
    _gallery(tmp_path / "gal")
    before = _snapshot(tmp_path / "gal")
    for extra in ([], ["--overwrite"]):
        assert main(["index", "protonet", str(tmp_path / "gal"), "--out", str(tmp_path / "gal"), *extra]) == 1
        _one_line_error(capsys, "gal: not empty and not a gallery index")
    assert _snapshot(tmp_path / "gal") == before


def test_index_onto_a_file_renames_nothing(tmp_path, capsys):
    pytest.importorskip("faiss")
    _gallery(tmp_path / "gal")
    (tmp_path / "report.txt").write_text("r")
    for extra in ([], ["--overwrite"]):
        assert main(["index", "protonet", str(tmp_path / "gal"), "--out", str(tmp_path / "report.txt"), *extra]) == 1
        _one_line_error(capsys, "report.txt: exists and is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gal", "report.txt"]
    assert (tmp_path / "report.txt").read_text() == "r"


def test_index_replaces_its_own_index_only_with_overwrite(tmp_path, capsys):
    pytest.importorskip("faiss")
    _gallery(tmp_path / "gal", n=3)
    out = tmp_path / "idx"
    out.mkdir()  # an empty folder is written into
    assert main(["index", "protonet", str(tmp_path / "gal"), "--out", str(out)]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    assert sorted(before) == ["index.faiss", "index.json", "paths.json"]
    assert json.loads(before["index.json"])["format"] == "zoo-gallery-index"
    _gallery(tmp_path / "gal", n=4)
    assert main(["index", "protonet", str(tmp_path / "gal"), "--out", str(out)]) == 1
    _one_line_error(capsys, "idx: a gallery index is already there; pass --overwrite")
    assert _snapshot(out) == before
    older = json.loads(before["index.json"])
    del older["format"]  # as indexes were written before the field: still loaded, still recognised
    (out / "index.json").write_text(json.dumps(older))
    assert main(["search", "protonet", "--index", str(out), str(tmp_path / "gal" / "g0.png")]) == 0
    assert main(["index", "protonet", str(tmp_path / "gal"), "--out", str(out), "--overwrite"]) == 0
    assert len(json.loads((out / "paths.json").read_text())) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gal", "idx"]  # nothing aside, no temporary folder


def test_index_with_a_subfolder_in_the_target_is_refused_whole(tmp_path, capsys):
    pytest.importorskip("faiss")
    _gallery(tmp_path / "gal")
    out = tmp_path / "idx"
    assert main(["index", "protonet", str(tmp_path / "gal"), "--out", str(out)]) == 0
    (out / "sub").mkdir()
    (out / "sub" / "keep.txt").write_text("k")
    capsys.readouterr()
    before = _snapshot(out)
    assert main(["index", "protonet", str(tmp_path / "gal"), "--out", str(out), "--overwrite"]) == 1
    _one_line_error(capsys, "idx: holds sub/keep.txt, which is not part of a gallery index")
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gal", "idx"]  # no idx.old, no hidden folder


def test_index_beside_an_existing_dot_old_leaves_it_alone(tmp_path, capsys):
    pytest.importorskip("faiss")
    _gallery(tmp_path / "gal")
    old = tmp_path / "idx.old"
    old.mkdir()
    (old / "mine.txt").write_text("m")
    for extra in ([], ["--overwrite"]):
        assert main(["index", "protonet", str(tmp_path / "gal"), "--out", str(tmp_path / "idx"), *extra]) == 0
    assert _snapshot(old) == {"mine.txt": b"m"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gal", "idx", "idx.old"]


def test_a_failed_write_leaves_the_old_folder_and_no_temporary_one(tmp_path, monkeypatch):
    own = lambda folder: ["a.txt"]  # noqa: E731

    def fill(text):
        return lambda tmp: (tmp / "a.txt").write_text(text)

    def broken(tmp):
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("fill failed")

    write_folder(tmp_path / "out", fill("1"), own, what="a test folder")
    with pytest.raises(RuntimeError, match="fill failed"):
        write_folder(tmp_path / "out", broken, own, what="a test folder")
    renames = []
    real = os.rename

    def second_rename_fails(src, dst):
        renames.append(dst)
        if len(renames) == 2:
            raise OSError("injected rename failure")
        real(src, dst)

    monkeypatch.setattr(os, "rename", second_rename_fails)
    with pytest.raises(OSError, match="injected rename failure"):
        write_folder(tmp_path / "out", fill("2"), own, what="a test folder")
    monkeypatch.undo()
    assert (tmp_path / "out" / "a.txt").read_text() == "1"  # the old one put back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- zoo embed --out ---------------------------------------------------------------------------------------------


def test_embed_out_refuses_an_existing_file_and_writes_no_tmp_npy(tmp_path, capsys):
    image = _gallery(tmp_path / "gal", n=1)[0]
    out = tmp_path / "e.npy"
    users = tmp_path / "e.npy.tmp.npy"  # the name the old writer used for its temporary file
    users.write_bytes(b"user's file")
    assert main(["embed", "protonet", image, "--out", str(out)]) == 0
    assert users.read_bytes() == b"user's file" and np.load(out).shape == (1, 64)
    out.write_bytes(b"keep")
    assert main(["embed", "protonet", image, "--out", str(out)]) == 1
    _one_line_error(capsys, "e.npy: exists; pass --overwrite")
    assert out.read_bytes() == b"keep"
    assert main(["embed", "protonet", image, "--out", str(out), "--overwrite"]) == 0
    assert np.load(out).shape == (1, 64)
    assert main(["embed", "protonet", image, "--out", str(tmp_path / "gal"), "--overwrite"]) == 1
    _one_line_error(capsys, "gal: exists and is not a regular file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "e.npy.tmp.npy", "gal"]


# --- publish, report, batch-embed, --fresh ----------------------------------------------------------------------


def test_publish_refuses_a_folder_that_is_not_a_zoo_entry(tmp_path):
    import keras

    from zoo.export import publish

    images = keras.Input((8, 8, 1), name="images")
    model = keras.Model(images, keras.layers.UnitNormalization()(keras.layers.Dense(4)(keras.layers.Flatten()(images))))
    card = dict(method="m", dataset="synthetic", splits={"test": "synthetic/test"}, primary_metric="accuracy",
                protocol="verification", recipe="pytest", paper="none", data_license="none")
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "notes.txt").write_text("n")
    with pytest.raises(FileExistsError, match="tiny: not a zoo entry"):
        publish("tiny", model, card=card, metrics={"accuracy": 0.5}, int8=False, root=tmp_path)
    (tmp_path / "tiny" / "card.json").write_text(json.dumps({"name": "tiny", "files": {}}))
    with pytest.raises(FileExistsError, match="tiny: holds notes.txt, which is not part of the zoo entry 'tiny'"):
        publish("tiny", model, card=card, metrics={"accuracy": 0.5}, int8=False, root=tmp_path)
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["card.json", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_report_refuses_a_folder_it_did_not_write(tmp_path, monkeypatch, capsys):
    from zoo import report

    # An entry that fails at once (no ONNX file): the report is still written, in a second.
    (tmp_path / "root" / "fake").mkdir(parents=True)
    (tmp_path / "root" / "fake" / "card.json").write_text((REPO / "exports" / "protonet" / "card.json").read_text())
    monkeypatch.setenv("ZOO_EXPORTS", str(tmp_path / "root"))
    foreign = tmp_path / "site"
    foreign.mkdir()
    (foreign / "index.html").write_text("my page")
    assert main(["report", "--out", str(foreign)]) == 1
    _one_line_error(capsys, "site: not empty and not a report of zoo report")
    assert _snapshot(foreign) == {"index.html": b"my page"}
    out = tmp_path / "report"
    for _ in range(2):  # its own report is replaced
        report.run(out=out, quick=True)
        assert sorted(p.name for p in out.iterdir()) == ["index.html", "results.json", "zoo-report.json"]
    (out / "mine.txt").write_text("m")
    with pytest.raises(FileExistsError, match="holds mine.txt, which is not part of a zoo report"):
        report.run(out=out, quick=True)
    assert (out / "mine.txt").read_text() == "m" and _hidden(tmp_path) == []


def test_fresh_removes_only_a_backup_keras_wrote(tmp_path):
    from zoo.training import training_callbacks

    backup = tmp_path / "run" / "backup"
    backup.mkdir(parents=True)
    (backup / "latest.weights.h5").write_bytes(b"w")
    (backup / "thesis.txt").write_text("x")
    for fresh in (True, False):  # resumed, Keras would delete the whole folder once training completes
        with pytest.raises(FileExistsError, match="thesis.txt: not written by Keras' BackupAndRestore"):
            training_callbacks(tmp_path / "run", fresh=fresh)
        assert sorted(p.name for p in backup.iterdir()) == ["latest.weights.h5", "thesis.txt"]
    (backup / "thesis.txt").unlink()
    (backup / "training_metadata.json").write_text('{"epoch": 1}')
    training_callbacks(tmp_path / "run", fresh=True)
    assert not backup.exists()


def test_batch_embed_replaces_earlier_shards_only_with_overwrite(tmp_path, capsys):
    pytest.importorskip("apache_beam")
    _gallery(tmp_path / "gal", n=2)
    glob, output = str(tmp_path / "gal" / "*.png"), str(tmp_path / "out" / "x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x-00000-of-00003.parquet").write_bytes(b"stale")  # an earlier run's shard count
    assert main(["batch-embed", "protonet", glob, "--output", output]) == 1
    _one_line_error(capsys, "x-00000-of-00003.parquet: shards of an earlier run are there", "--overwrite")
    (tmp_path / "out" / "x-final-of-me.parquet").write_bytes(b"mine")  # a match of the glob that Beam never writes
    assert main(["batch-embed", "protonet", glob, "--output", output, "--overwrite"]) == 1
    _one_line_error(capsys, "x-final-of-me.parquet: named like a shard")
    (tmp_path / "out" / "x-final-of-me.parquet").unlink()
    assert main(["batch-embed", "protonet", glob, "--output", output, "--overwrite"]) == 0
    assert "2 embeddings" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x-00000-of-00001.parquet",
                                                                     "x.errors-00000-of-00001.parquet"]


# --- the command line's edge cases -------------------------------------------------------------------------------


def test_non_utf8_file_names_print_as_their_bytes(tmp_path):
    files = _gallery(tmp_path / "gal", n=2)
    odd = os.fsencode(tmp_path / "gal") + b"/\xff.png"
    os.link(files[0], odd)
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict", LC_ALL="C.UTF-8")
    env.pop("ZOO_EXPORTS", None)
    command = [sys.executable, "-m", "zoo.cli", "search", "protonet", files[0], "--gallery", str(tmp_path / "gal")]
    text = subprocess.run(command, capture_output=True, env=env, cwd=REPO, timeout=120)
    assert text.returncode == 0 and odd in text.stdout, text.stderr[-2000:]
    as_json = subprocess.run(command + ["--json"], capture_output=True, env=env, cwd=REPO, timeout=120)
    paths = [n["path"] for n in json.loads(as_json.stdout)[0]["neighbours"]]
    assert odd in [os.fsencode(p) for p in paths]


@pytest.fixture
def alarm():
    """A FIFO opened for reading would wait for a writer forever: fail the test after 30 s instead."""
    def timeout(signum, frame):
        raise TimeoutError("blocked: a FIFO was opened")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_special_files_are_named_for_what_they_are(tmp_path, capsys, monkeypatch, alarm):
    out = str(tmp_path / "e.npy")
    os.mkfifo(tmp_path / "fifo.png")
    os.mkfifo(tmp_path / "fifo.npy")
    (tmp_path / "x.png").mkdir()
    os.symlink("loop.png", tmp_path / "loop.png")
    os.symlink("nowhere.png", tmp_path / "dangling.png")
    cases = {"fifo.png": "fifo.png: is not a regular file (a FIFO)",
             "fifo.npy": "fifo.npy: is not a regular file (a FIFO)",
             "x.png": "x.png: is a directory",
             "loop.png": "loop.png: symlink loop",
             "dangling.png": "dangling.png: no such image file (a symlink to nothing)"}
    for name, message in cases.items():
        assert main(["embed", "protonet", str(tmp_path / name), "--out", out]) == 1, name
        _one_line_error(capsys, message)
    locked = tmp_path / "locked.png"
    _gallery(tmp_path / "one", n=1)
    os.link(tmp_path / "one" / "g0.png", locked)
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads any file: let access() answer as it would for another user
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else access(p, mode, **kw))
    assert main(["embed", "protonet", str(locked), "--out", out]) == 1
    _one_line_error(capsys, "locked.png: permission denied")
    assert not Path(out).exists()


def test_one_unreadable_gallery_file_is_skipped_and_counted(tmp_path, capsys):
    pytest.importorskip("faiss")
    files = _gallery(tmp_path / "gal", n=3)
    (tmp_path / "gal" / "empty.png").write_bytes(b"")
    assert main(["search", "protonet", files[0], "--gallery", str(tmp_path / "gal"), "-k", "5", "--json"]) == 0
    captured = capsys.readouterr()
    assert "warning: skipped 1 of 4 gallery files" in captured.err and "empty.png" in captured.err
    assert [n["path"] for n in json.loads(captured.out)[0]["neighbours"]][0] == files[0]
    assert {n["path"] for n in json.loads(captured.out)[0]["neighbours"]} == set(files)
    assert main(["index", "protonet", str(tmp_path / "gal"), "--out", str(tmp_path / "idx")]) == 0
    assert "skipped 1 of 4" in capsys.readouterr().err
    assert json.loads((tmp_path / "idx" / "paths.json").read_text()) == files
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "empty.png").write_bytes(b"")
    assert main(["search", "protonet", files[0], "--gallery", str(tmp_path / "bad")]) == 1  # all fail: an error
    _one_line_error(capsys, "empty.png: not an image file")
