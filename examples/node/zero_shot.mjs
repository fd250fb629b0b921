// Photo to answer in Node: which of the given classes a PNG shows, with the zoo's CLIP entry.
//   npm install --ignore-scripts        (onnxruntime-node ships its CPU binaries; the script only fetches GPU ones)
//   node zero_shot.mjs ../../exports/clip emoji.png "cat,dog,pizza"
// Prints JSON: {"class", "probabilities", "embedding"} (the image embedding, to compare with Python's).
import fs from "node:fs";
import path from "node:path";
import ort from "onnxruntime-node";
import { prepare, readPng } from "./contract.mjs";

const [folder, imagePath, classList] = process.argv.slice(2);
const card = JSON.parse(fs.readFileSync(path.join(folder, "card.json"), "utf8"));
const towers = Object.values(card.towers);
const imageTower = towers.find((t) => t.input === "images"), textTower = towers.find((t) => t.input === "token_ids");

// Byte tokenizer of zoo.runtime.Tokenizer: lower-case UTF-8 bytes + 2, then the end token 1, then padding 0.
function tokens(texts, length) {
  const ids = new Int32Array(texts.length * length);
  texts.forEach((text, row) => {
    const bytes = Buffer.from(text.toLowerCase(), "utf8").subarray(0, length - 1);
    bytes.forEach((b, i) => { ids[row * length + i] = b + 2; });
    ids[row * length + bytes.length] = 1;
  });
  return new ort.Tensor("int32", ids, [texts.length, length]);
}

const normalise = (v) => { const n = Math.hypot(...v) || 1; return v.map((x) => x / n); };

const shape = card.input_shape;
const input = prepare(readPng(imagePath), card.preprocessing, shape);
const imageSession = await ort.InferenceSession.create(path.join(folder, imageTower.onnx));
const { embeddings } = await imageSession.run({ images: new ort.Tensor("float32", input, [1, ...shape]) });
const image = Array.from(embeddings.data);

// Each class: its prompt ensemble (the card's templates) embedded, averaged, normalised.
const classes = classList.split(",").map((c) => c.trim());
const templates = card.extras.templates;
const length = card.extras.context_length;
const textSession = await ort.InferenceSession.create(path.join(folder, textTower.onnx));
const prompts = classes.flatMap((c) => templates.map((t) => t.replace("{}", c)));
const text = (await textSession.run({ token_ids: tokens(prompts, length) })).embeddings;
const dim = image.length;
const logits = classes.map((_, i) => {
  const mean = new Array(dim).fill(0);
  for (let j = 0; j < templates.length; j++) {
    const row = normalise(Array.from(text.data.subarray((i * templates.length + j) * dim, (i * templates.length + j + 1) * dim)));
    row.forEach((v, k) => { mean[k] += v / templates.length; });
  }
  return card.extras.logit_scale * normalise(mean).reduce((s, v, k) => s + v * image[k], 0);
});
const top = Math.max(...logits);
const exps = logits.map((l) => Math.exp(l - top)), total = exps.reduce((a, b) => a + b, 0);
const probabilities = Object.fromEntries(classes.map((c, i) => [c, exps[i] / total]));
console.log(JSON.stringify({ class: classes[logits.indexOf(top)], probabilities, embedding: image }));
