"""Face detection with MTCNN (Zhang, Zhang, Li, Qiao 2016) on numpy and onnxruntime alone.

    from zoo.runtime.faces import FaceDetector
    det = FaceDetector()
    for face in det.detect(rgb_uint8_image):
        face["box"], face["score"], face["landmarks"]

Three cascaded networks, each reading crops the previous one proposed:
  1. PNet, a 12x12 fully-convolutional detector, slides over a pyramid of the image (each level
     `scale_factor` times the previous, the first scaled so that `min_face_size` pixels become 12)
     and proposes boxes, refined by its own regression and merged by non-maximum suppression;
  2. RNet re-scores 24x24 crops of those boxes and refines them;
  3. ONet re-scores 48x48 crops, refines the boxes once more and places five landmarks.
Boxes are squared before each crop. The networks are the authors' weights as redistributed by the
MIT-licensed PyPI `mtcnn` 0.1.1 wheel, converted to ONNX by `mtcnn/build_onnx.py` (see
mtcnn/PROVENANCE.md); every .onnx is checked against MTCNN_SHA256 before it is loaded.

Coordinates are continuous pixel coordinates: pixel (row i, column j) covers [j, j+1) x [i, i+1),
so a box (x1, y1, x2, y2) spans x2 - x1 pixels. Crops are resampled straight from the image with
area averaging when they shrink and bilinear interpolation when they grow, anything outside the
image reading as black (as in the reference implementation).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import images as ops

__all__ = ["FaceDetector", "MTCNN_SHA256", "DETECT_MAX_SIDE"]

# sha256 of the graphs written by mtcnn/build_onnx.py (also listed in mtcnn/PROVENANCE.md).
MTCNN_SHA256 = {
    "pnet.onnx": "3b9053d32381b84e477fba100e5cbc2a0ec7e743baf14ec3ef44af96f09fb6bb",
    "rnet.onnx": "344c177d7e383421fa4cec422659d2ab9489bf7516187cced0309651873135d9",
    "onet.onnx": "f19f58c8dfbfcef90e3e6438948543b7b13aadfe31edac6c29a576a199ab8acf",
}

_DEFAULT_FOLDER = Path(__file__).resolve().parent / "mtcnn"
# Photos are searched at most this many pixels a side (see FaceDetector's max_side).
DETECT_MAX_SIDE = 1024
_PNET_WINDOW = 12          # PNet sees 12x12 windows ...
_PNET_STRIDE = 2           # ... every 2 pixels of a pyramid level (one 2x2 pooling)
_RNET_SIDE, _ONET_SIDE = 24, 48
# The networks were trained on (pixel - 127.5) / 128.
_CENTER, _SCALE = 127.5, 1.0 / 128.0
# Non-maximum suppression: within one pyramid level, across levels, after RNet (IoU), and after ONet
# (intersection over the smaller box, which also removes a small box nested in a larger one).
_NMS_LEVEL, _NMS_PYRAMID, _NMS_RNET, _NMS_ONET = 0.5, 0.7, 0.7, 0.7


class FaceDetector:
    """MTCNN on onnxruntime.

    folder: holds pnet.onnx, rnet.onnx, onet.onnx (default: the mtcnn/ folder beside this file);
    min_face_size: the smallest face side, in pixels, the pyramid looks for;
    thresholds: face probability each stage (PNet, RNet, ONet) needs to keep a box;
    scale_factor: ratio between successive pyramid levels;
    providers: onnxruntime execution providers (default: CPU);
    max_side: a photo whose longer side is past this is searched on a copy shrunk by area to this side, and
        the boxes and landmarks are mapped back (a face then needs min_face_size pixels in the copy); it bounds
        the memory and time a large photo costs.

    `detect` keeps no state on the instance, so one detector may serve several threads.
    """

    def __init__(self, folder=None, *, min_face_size=20, thresholds=(0.6, 0.7, 0.7), scale_factor=0.709,
                 providers=None, max_side=DETECT_MAX_SIDE):
        if min_face_size <= 0:
            raise ValueError(f"min_face_size must be positive, got {min_face_size}")
        if not 0.0 < scale_factor < 1.0:
            raise ValueError(f"scale_factor must lie in (0, 1), got {scale_factor}")
        if len(thresholds) != 3:
            raise ValueError(f"thresholds needs one value per stage (3), got {thresholds!r}")
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)
        self.max_side = int(max_side)
        folder = Path(folder) if folder is not None else _DEFAULT_FOLDER
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        # detect() alternates short network runs with numpy work; idle onnxruntime workers that
        # busy-wait for the next run would steal the cores that work needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # PNet's input changes size with every pyramid level of every photo: an arena would keep the largest
        # buffer it ever needed for the life of the process.
        options.enable_cpu_mem_arena = False
        sessions = {}
        for name, digest in MTCNN_SHA256.items():
            data = (folder / name).read_bytes()
            if hashlib.sha256(data).hexdigest() != digest:
                raise ValueError(f"{folder / name}: sha256 does not match MTCNN_SHA256[{name!r}]")
            # Built from the verified bytes, so the graph that runs is the one that was checked.
            sessions[name] = ort.InferenceSession(data, options, providers=providers)
        self._pnet, self._rnet, self._onet = (sessions[n] for n in ("pnet.onnx", "rnet.onnx", "onet.onnx"))

    def detect(self, image) -> list[dict]:
        """Faces in `image`, largest box first.

        image: (H, W, 3) RGB, uint8 or float in 0..255; (H, W) or (H, W, 1) grey is repeated to RGB.
        Returns [{"box": (x1, y1, x2, y2), "score": float, "landmarks": (5, 2) float32}], where the
        box is in pixels, clipped to the image, and the landmarks are (x, y) of the left eye, right
        eye, nose, left and right mouth corner, left/right as seen in the image (left = smaller x).
        """
        img = np.asarray(image)
        full_height, full_width = img.shape[:2]
        if max(full_height, full_width) > self.max_side:
            scale = self.max_side / max(full_height, full_width)
            size = (max(1, round(full_height * scale)), max(1, round(full_width * scale)))
            img = ops.resize(ops.to_uint8(img if img.ndim == 3 else img[..., None]), size, "box")
        img = _as_rgb(img)
        height, width = img.shape[:2]
        back = np.array([full_width / width, full_height / height])  # (x, y) copy -> photo pixels

        boxes = self._propose(img)                                   # stage 1: PNet on the pyramid
        if len(boxes):
            boxes = self._refine(img, boxes)                         # stage 2: RNet
        if not len(boxes):
            return []
        boxes, scores, marks = self._output(img, boxes)              # stage 3: ONet

        faces = []
        for box, score, pts in zip(boxes, scores, marks):
            x1, x2 = np.clip(box[[0, 2]], 0.0, width) * back[0]
            y1, y2 = np.clip(box[[1, 3]], 0.0, height) * back[1]
            faces.append({"box": (float(x1), float(y1), float(x2), float(y2)), "score": float(score),
                          "landmarks": (pts * back).astype(np.float32)})
        faces.sort(key=lambda f: -(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        return faces

    # ---- stages ------------------------------------------------------------------------------

    def _pyramid_scales(self, height, width):
        """Scales at which 12 pixels of a level cover min_face_size, then larger faces, down to 12 px."""
        scale = _PNET_WINDOW / self.min_face_size
        side = min(height, width) * scale
        scales = []
        while side >= _PNET_WINDOW:
            scales.append(scale)
            scale *= self.scale_factor
            side *= self.scale_factor
        return scales

    def _propose(self, img):
        """Stage 1: boxes (K, 4) from PNet over the pyramid, regressed and squared."""
        height, width = img.shape[:2]
        threshold = self.thresholds[0]
        found = []   # per level: (boxes, scores, offsets)
        for scale in self._pyramid_scales(height, width):
            lh, lw = int(np.ceil(height * scale)), int(np.ceil(width * scale))
            level = _resample(img, 0.0, 0.0, float(height), float(width), lh, lw)
            prob, offsets = self._pnet.run(None, {"image": _normalise(level)[None]})
            face = prob[0, 1]
            rows, cols = np.nonzero(face >= threshold)
            if not rows.size:
                continue
            # Window (row, col) of the probability map covers level pixels [2 col, 2 col + 12) in x
            # (likewise in y); the level's own size ratio takes it back to image pixels.
            sy, sx = lh / height, lw / width
            left, top = _PNET_STRIDE * cols, _PNET_STRIDE * rows
            cand = np.stack([left / sx, top / sy, (left + _PNET_WINDOW) / sx, (top + _PNET_WINDOW) / sy], 1)
            score = face[rows, cols]
            reg = offsets[0][:, rows, cols].T
            keep = _nms(cand, score, _NMS_LEVEL)
            found.append((cand[keep], score[keep], reg[keep]))
        if not found:
            return np.zeros((0, 4))
        cand, score, reg = (np.concatenate(parts) for parts in zip(*found))
        keep = _nms(cand, score, _NMS_PYRAMID)
        boxes = _regress(cand[keep], reg[keep])
        return _square(boxes[_nonempty(boxes)])

    def _refine(self, img, boxes):
        """Stage 2: RNet keeps and refines boxes; returns them squared."""
        prob, offsets = self._rnet.run(None, {"image": _crops(img, boxes, _RNET_SIDE)})
        score = prob[:, 1]
        ok = score > self.thresholds[1]
        boxes, score, offsets = boxes[ok], score[ok], offsets[ok]
        keep = _nms(boxes, score, _NMS_RNET)
        boxes = _regress(boxes[keep], offsets[keep])
        return _square(boxes[_nonempty(boxes)])

    def _output(self, img, boxes):
        """Stage 3: ONet scores, final boxes and landmarks (N, 5, 2) for the boxes it keeps."""
        prob, offsets, marks = self._onet.run(None, {"image": _crops(img, boxes, _ONET_SIDE)})
        score = prob[:, 1]
        ok = score > self.thresholds[2]
        boxes, score, offsets, marks = boxes[ok], score[ok], offsets[ok], marks[ok]
        # Landmarks are fractions of the box ONet was shown: five x's, then five y's.
        size = boxes[:, 2:4] - boxes[:, 0:2]
        points = np.stack([marks[:, :5], marks[:, 5:]], axis=2) * size[:, None, :] + boxes[:, None, 0:2]
        boxes = _regress(boxes, offsets)
        ok = _nonempty(boxes)
        boxes, score, points = boxes[ok], score[ok], points[ok]
        keep = _nms(boxes, score, _NMS_ONET, over_smaller=True)
        boxes, score, points = boxes[keep], score[keep], points[keep]
        # The model's first/second eye and mouth corner are image-left/right for upright faces;
        # order each pair by x so that the promise holds for any pose.
        for a, b in ((0, 1), (3, 4)):
            swap = points[:, a, 0] > points[:, b, 0]
            points[swap, a], points[swap, b] = points[swap, b].copy(), points[swap, a].copy()
        return boxes, score, points


# ---- geometry -------------------------------------------------------------------------------------

def _regress(boxes, offsets):
    """Moves each edge by its offset times the box's width (x) or height (y)."""
    size = np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)
    return boxes + offsets.astype(np.float64) * size


def _nonempty(boxes):
    """Mask of the boxes with positive width and height (a regression can turn a box inside out)."""
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def _square(boxes):
    """Grows each box to a square of its longer side about the same centre."""
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    half = np.max(boxes[:, 2:4] - boxes[:, 0:2], axis=1, keepdims=True) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _nms(boxes, scores, threshold, over_smaller=False):
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    A box is dropped when its overlap with a kept, better box exceeds `threshold`; overlap is the
    intersection over the union, or over the smaller of the two areas with `over_smaller`.
    """
    if not len(boxes):
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = w * h
        base = np.minimum(area[best], area[rest]) if over_smaller else area[best] + area[rest] - inter
        order = rest[inter <= threshold * base]
    return np.asarray(keep, np.int64)


# ---- pixels ---------------------------------------------------------------------------------------

def _as_rgb(image):
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) / (H, W, 1) grey image, got shape {img.shape}")
    if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise ValueError(f"expected integer or float pixels, got dtype {img.dtype}")
    return np.ascontiguousarray(img, dtype=np.float32)


def _normalise(chw):
    return (chw - _CENTER) * _SCALE


def _axis_taps(start, length, n_out, n_in):
    """How n_out output pixels read the interval [start, start + length) of an axis of n_in pixels.

    Returns (index, weight), both (n_out, taps): output pixel i is the sum over t of
    weight[i, t] * input[index[i, t]]. Shrinking averages the input over each output pixel's
    footprint (area resampling); growing interpolates linearly between pixel centres. Input outside
    0 .. n_in counts as black (weight 0).
    """
    step = length / n_out
    cells = np.arange(n_out, dtype=np.float64)[:, None]
    if step >= 1.0:
        lo = start + step * cells
        hi = lo + step
        index = np.floor(lo).astype(np.int64) + np.arange(int(np.ceil(step)) + 1)
        weight = np.clip(np.minimum(hi, index + 1) - np.maximum(lo, index), 0, None) / step
    else:
        centre = start + step * (cells + 0.5) - 0.5
        inside = (centre >= -0.5) & (centre <= n_in - 0.5)
        centre = np.clip(centre, 0, n_in - 1)
        index = np.floor(centre).astype(np.int64) + np.arange(2)
        weight = np.clip(1 - np.abs(centre - index), 0, None) * inside
    weight[(index < 0) | (index >= n_in)] = 0
    return np.clip(index, 0, n_in - 1), weight.astype(np.float32)


def _resample(img, top, left, height, width, out_h, out_w):
    """The region [left, left + width) x [top, top + height) of an (H, W, 3) image as (3, out_h, out_w).

    Separable gathers and weighted sums rather than matrix products: the taps per output pixel are
    few, and it keeps numpy's BLAS threads (which fight onnxruntime's for the cores) out of it.
    """
    iy, wy = _axis_taps(top, height, out_h, img.shape[0])
    ix, wx = _axis_taps(left, width, out_w, img.shape[1])
    first, stop = int(ix.min()), int(ix.max()) + 1        # only the columns the region reads
    src, ix = img[:, first:stop], ix - first
    rows = np.zeros((out_h, stop - first, 3), np.float32)
    for t in range(iy.shape[1]):
        rows += wy[:, t, None, None] * src[iy[:, t]]
    out = np.zeros((out_h, out_w, 3), np.float32)
    for t in range(ix.shape[1]):
        out += wx[None, :, t, None] * rows[:, ix[:, t]]
    return np.transpose(out, (2, 0, 1))


def _crops(img, boxes, side):
    """(N, 3, side, side) normalised network input, one crop per box."""
    out = np.empty((len(boxes), 3, side, side), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        out[k] = _resample(img, y1, x1, y2 - y1, x2 - x1, side, side)
    return _normalise(out)
