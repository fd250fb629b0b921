"""The entries on files: each held-out protocol run from image files through the preprocessing contract
(zoo.runtime: Pillow decoding, then numpy and onnxruntime), beside the same protocol on the bundled arrays.

    python benchmarks/real_inputs.py [--quick] [--out benchmarks/results/real_inputs.json]

- Faces (facenet_triplet, deepface_softmax): LFW test identities (32 people, 641 photos, never trained on).
  The original 250x250 LFW JPEGs are not in the project (the bundled set keeps only the 48x48 crops of the
  box (69, 72)-(181, 184)), so each photo is rebuilt from its crop: the crop enlarged (bilinear) to the
  112-pixel box and set at the box's place in a 250x250 frame whose outside repeats the crop's edges,
  saved as JPEG (quality 95). Verification accuracy (10 folds) and AUC of
    arrays     the bundled 48x48 crops (the card's number);
    frames     the 250x250 JPEGs, face detected (MTCNN) and aligned onto the card's template;
    fixed      the same JPEGs, fixed LFW box (`align=False`);
    pasted     each frame scaled by a seeded factor in [0.6, 1.8] and pasted at a seeded place in a
               640x480 picture of smooth coloured noise, detected and aligned.
  Where no face is found the photo falls back to the fixed box (counted in `no_face`). Also the share of
  photos with a face found, the alignment error (mean distance, in 48x48 output pixels, between where the
  aligned and the fixed crop put the box's corners) and seconds per photo.
- ORL (40 people x 10 grey 92x112 PGMs): the share with a face found, as files and pasted as above.
- protonet: Lake's 20 one-shot runs from 105x105 PNGs (the dataset's original format) vs the card.
- clip: the emoji test split as RGBA PNGs (alpha 0 where the picture is white, colour 0 there): cosine
  between their embeddings and the white-background arrays', with the contract and with alpha dropped.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import zoo.data
from zoo import protocols, registry
from zoo.data.build_npz import LFW_BOX
from zoo.data.originals import emoji_rgba, lfw_photo
from zoo.runtime import OnnxEmbedder, cpu_features
from zoo.runtime import images as ops
from zoo.runtime.contract import face_detector



def pasted(photo, rng, size=(480, 640)) -> tuple[np.ndarray, float, tuple]:
    """`photo` scaled by a factor in [0.6, 1.8] and pasted at a random place in smooth coloured noise."""
    scale = float(rng.uniform(0.6, 1.8))
    h, w = (max(1, round(n * scale)) for n in photo.shape[:2])
    canvas = ops.resize(rng.integers(0, 256, (size[0] // 40, size[1] // 40, 3), dtype=np.uint8), size, "bilinear")
    canvas = canvas.copy()
    small = ops.resize(photo if photo.shape[-1] == 3 else np.repeat(photo, 3, -1), (h, w), "bilinear")
    h, w = min(h, size[0]), min(w, size[1])
    top, left = int(rng.integers(0, size[0] - h + 1)), int(rng.integers(0, size[1] - w + 1))
    canvas[top : top + h, left : left + w] = small[:h, :w]
    return canvas, scale, (top, left)


def save(images, folder, suffix, **options) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:05d}{suffix}"
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path, **options)
        paths.append(path)
    return paths


def embed_or_fixed(embedder, paths) -> tuple[np.ndarray, int, float]:
    """Embed files with detection and alignment; those without a face with the fixed box. (emb, no_face, s/img)"""
    rows, missing, start = [], 0, time.perf_counter()
    for path in paths:
        try:
            rows.append(embedder.embed_files([path])[0])
        except ValueError:
            missing += 1
            rows.append(embedder.embed_files([path], align=False)[0])
    return np.stack(rows), missing, (time.perf_counter() - start) / len(paths)


def alignment_error(photos, spec) -> tuple[float, float]:
    """(share with a face, mean corner distance in output pixels between the aligned and the fixed LFW crop)."""
    x1, y1, x2, y2 = LFW_BOX
    template = np.asarray(spec["template"])
    corners = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]], np.float64)  # frame pixels
    fixed = corners - [x1, y1]  # where the fixed crop puts them, in the 112 frame
    errors = []
    for photo in photos:
        faces = face_detector(spec).detect(photo)
        if faces:
            m = ops.similarity_transform(faces[0]["landmarks"], template)
            aligned = corners @ m[:, :2].T + m[:, 2]
            errors.append(np.linalg.norm(aligned - fixed, axis=1).mean() * 48 / (x2 - x1))
    return len(errors) / len(photos), float(np.mean(errors)) if errors else float("nan")


def faces(name, tmp, quick, rng) -> dict:
    embedder = OnnxEmbedder(registry.exports_dir() / name)
    test = zoo.data.load("lfw", "test")
    if quick:
        keep = np.isin(test["labels"], np.unique(test["labels"])[:8])
        test = {k: v[keep] for k, v in test.items() if k in ("images", "labels")}
    frames = [lfw_photo(c) for c in test["images"]]
    result = {"photos": len(frames), "card": registry.info(name).metrics["verification_accuracy"]}

    def verify(embeddings):
        m = protocols.verification(lambda _: embeddings, test)
        return {"verification_accuracy": m["verification_accuracy"], "auc": m["auc"]}

    result["arrays"] = verify(embedder.embed(test["images"]))
    frame_files = save(frames, tmp / name / "frames", ".jpg", quality=95)
    emb, missing, seconds = embed_or_fixed(embedder, frame_files)
    result["frames"] = {**verify(emb), "no_face": missing, "seconds_per_photo": seconds}
    result["fixed"] = verify(embedder.embed_files(frame_files, align=False))
    pictures = [pasted(f, rng)[0] for f in frames]
    emb, missing, seconds = embed_or_fixed(embedder, save(pictures, tmp / name / "pasted", ".jpg", quality=95))
    result["pasted"] = {**verify(emb), "no_face": missing, "seconds_per_photo": seconds}
    found, error = alignment_error(frames, embedder.preprocessing["face"])
    result["detection"] = {"found": found, "alignment_error_px48": error}
    return result


def orl(quick, rng) -> dict:
    photos = zoo.data.load("orl", "all")["images"][: 40 if quick else None]
    spec = registry.info("facenet_triplet").preprocessing["face"]
    detector = face_detector(spec)
    found = np.mean([bool(detector.detect(np.repeat(p, 3, -1))) for p in photos])
    found_pasted = np.mean([bool(detector.detect(pasted(p, rng)[0])) for p in photos])
    return {"photos": int(len(photos)), "found": float(found), "found_pasted": float(found_pasted)}


def protonet(tmp) -> dict:
    embedder = OnnxEmbedder(registry.exports_dir() / "protonet")
    runs = zoo.data.omniglot_oneshot_runs(size=105)
    shape = runs["train_images"].shape  # (20, 20, 105, 105, 1)
    embedded = {}
    for key in ("train_images", "test_images"):
        files = save(runs[key].reshape(-1, *shape[2:]), tmp / "omniglot" / key, ".png")
        embedded[key] = embedder.embed_files(files).reshape(*shape[:2], -1)
    from zoo import metrics

    accuracy = metrics.oneshot_runs(embedded["train_images"], embedded["test_images"], runs["answers"])["accuracy"]
    return {"lake_oneshot_runs_from_105_png": accuracy, "card": registry.info("protonet").metrics["lake_oneshot_runs"]}


def clip(tmp) -> dict:
    embedder = OnnxEmbedder(registry.exports_dir() / "clip")
    images = zoo.data.load("emoji", "test")["images"]  # (N, 64, 64, 3) on white
    rgba = emoji_rgba(images)
    files = save(rgba, tmp / "emoji", ".png")
    reference = embedder.embed(images)
    contract = np.sum(embedder.embed_files(files) * reference, axis=1)
    dropped = np.sum(embedder.embed(rgba[..., :3]) * reference, axis=1)
    return {"images": int(len(images)), "min_cosine_rgba_files": float(contract.min()),
            "min_cosine_alpha_dropped": float(dropped.min())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 LFW identities, 40 ORL faces")
    parser.add_argument("--out", default="benchmarks/results/real_inputs.json")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    results = {"cpu": cpu_features(), "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("facenet_triplet", "deepface_softmax"):
            results[name] = faces(name, tmp, args.quick, rng)
            print(name, json.dumps(results[name], indent=1), flush=True)
        results["orl"] = orl(args.quick, rng)
        print("orl", results["orl"], flush=True)
        results["protonet"] = protonet(tmp)
        print("protonet", results["protonet"], flush=True)
        results["clip"] = clip(tmp)
        print("clip", results["clip"], flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
