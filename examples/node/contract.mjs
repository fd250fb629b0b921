// The zoo's preprocessing contract (card.json "preprocessing") in plain JavaScript, for entries without a face
// detector: the same integer arithmetic as zoo/runtime/images.py and contract.py (Pillow's), so the model gets
// the same input as in Python.  Images are {height, width, channels, data: Uint8Array (H*W*C, row-major)}.
import fs from "node:fs";
import { PNG } from "pngjs";

const PRECISION_BITS = 22; // Pillow's fixed-point resampling weights: 32 - 8 - 2 bits

export function readPng(path) {
  const png = PNG.sync.read(fs.readFileSync(path)); // always RGBA, 8 bits
  return { height: png.height, width: png.width, channels: 4, data: Uint8Array.from(png.data) };
}

function map(image, channels, fn) {
  const { height, width } = image;
  const out = new Uint8Array(height * width * channels);
  for (let p = 0; p < height * width; p++) fn(image.data.subarray(p * image.channels, (p + 1) * image.channels),
    out.subarray(p * channels, (p + 1) * channels));
  return { height, width, channels, data: out };
}

const luma = (r, g, b) => Math.floor((r * 19595 + g * 38470 + b * 7471 + 0x8000) / 65536); // Pillow convert("L")

// Alpha (C = 2 or 4) composited onto the background: round((c*a + bg*(255-a)) / 255).
export function flattenAlpha(image, background) {
  if (image.channels !== 2 && image.channels !== 4) return image;
  const colour = image.channels - 1;
  const bg = colour === 1 ? [luma(...background)] : background;
  return map(image, colour, (px, out) => {
    const a = px[colour];
    for (let c = 0; c < colour; c++) out[c] = Math.floor((px[c] * a + bg[c] * (255 - a) + 127) / 255);
  });
}

export function matchChannels(image, channels) {
  if (image.channels === channels) return image;
  if (channels === 1) return map(image, 1, (px, out) => { out[0] = luma(px[0], px[1], px[2]); });
  return map(image, 3, (px, out) => { out.fill(px[0]); });
}

// Drawings with ink "dark": light ink on dark paper (border median below 127.5) is inverted.
export function fixInk(image) {
  const { height: h, width: w, channels: c, data } = image;
  const mean = (y, x) => { let s = 0; for (let k = 0; k < c; k++) s += data[(y * w + x) * c + k]; return s / c; };
  const border = [];
  for (let x = 0; x < w; x++) border.push(mean(0, x), mean(h - 1, x));
  for (let y = 1; y < h - 1; y++) border.push(mean(y, 0), mean(y, w - 1));
  border.sort((a, b) => a - b);
  const n = border.length, median = n % 2 ? border[(n - 1) / 2] : (border[n / 2 - 1] + border[n / 2]) / 2;
  return median < 127.5 ? { ...image, data: image.data.map((v) => 255 - v) } : image;
}

export function padToSquare(image, value) {
  const { height: h, width: w, channels: c } = image;
  const side = Math.max(h, w), top = Math.floor((side - h) / 2), left = Math.floor((side - w) / 2);
  const data = new Uint8Array(side * side * c);
  for (let p = 0; p < side * side; p++) for (let k = 0; k < c; k++) data[p * c + k] = value[k];
  for (let y = 0; y < h; y++) data.set(image.data.subarray(y * w * c, (y + 1) * w * c), ((y + top) * side + left) * c);
  return { height: side, width: side, channels: c, data };
}

// Pillow's weights: output i centred at (i + 0.5) * scale, the filter stretched by max(scale, 1), normalised,
// then rounded to integers of 2^22.
function weights(inSize, outSize, method) {
  const scale = inSize / outSize, stretch = Math.max(scale, 1);
  const support = (method === "box" ? 0.5 : 1.0) * stretch;
  const filter = method === "box" ? (t) => (t > -0.5 && t <= 0.5 ? 1 : 0) : (t) => Math.max(1 - Math.abs(t), 0);
  const rows = [];
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    const lo = Math.max(Math.trunc(center - support + 0.5), 0), hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    const w = [];
    for (let x = lo; x < hi; x++) w.push(filter((x - center + 0.5) / stretch));
    const total = w.reduce((a, b) => a + b, 0);
    rows.push({ lo, w: w.map((v) => Math.trunc(0.5 + (total ? v / total : 0) * 2 ** PRECISION_BITS)) });
  }
  return rows;
}

// One pass along an axis, rounded to uint8 as Pillow does: (sum w*x + 2^21) >> 22, clipped.
function pass(image, outSize, method, horizontal) {
  const { height: h, width: w, channels: c } = image;
  const rows = weights(horizontal ? w : h, outSize, method);
  const oh = horizontal ? h : outSize, ow = horizontal ? outSize : w;
  const data = new Uint8Array(oh * ow * c);
  for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) for (let k = 0; k < c; k++) {
    const { lo, w: kw } = rows[horizontal ? x : y];
    let acc = 2 ** (PRECISION_BITS - 1);
    for (let j = 0; j < kw.length; j++) {
      acc += kw[j] * image.data[(horizontal ? y * w + lo + j : (lo + j) * w + x) * c + k];
    }
    data[(y * ow + x) * c + k] = Math.min(255, Math.max(0, Math.floor(acc / 2 ** PRECISION_BITS)));
  }
  return { height: oh, width: ow, channels: c, data };
}

export function resize(image, [height, width], method = "box") {
  let x = image;
  if (x.width !== width) x = pass(x, width, method, true); // horizontal first, as Pillow
  if (x.height !== height) x = pass(x, height, method, false);
  return x;
}

// A decoded image -> the model input, Float32Array (1, H, W, C) of pixels 0..255, by the card's contract.
export function prepare(image, contract, [h, w, c]) {
  if (contract.face) throw new Error("this example has no face detector: use zoo.runtime (Python) for face entries");
  const background = contract.background || [255, 255, 255];
  let x = matchChannels(flattenAlpha(image, background), c);
  if (contract.ink === "dark") x = fixInk(x);
  if (x.height * w !== x.width * h && contract.fit === "pad") {
    x = padToSquare(x, c === 1 ? [luma(...background)] : background);
  }
  x = resize(x, [h, w], (contract.resize || {}).method || "box");
  return Float32Array.from(x.data);
}
