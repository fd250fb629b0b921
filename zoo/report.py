"""`zoo report`: re-evaluate every published entry from its ONNX file and write report/index.html.

For each entry in the zoo root: load `embedder.onnx` with zoo.runtime, run the held-out protocol its
card names through `zoo.protocols` (the same functions the recipes' numbers come from), check ONNX
against Keras on the golden inputs, time batch-1 inference, then print one leaderboard and write an
HTML page with plots. The folder is replaced only when it holds a report this wrote (see `run`).
"""

from __future__ import annotations

import html
import json
import statistics
import time
from pathlib import Path

import numpy as np

from zoo import protocols, registry
from zoo.runtime import OnnxCLIP, OnnxEmbedder
from zoo.runtime.writes import write_folder

FEW_SHOT_SETTINGS = protocols.FEW_SHOT_SETTINGS
LATENCY_REPEATS = 50
MANIFEST = "zoo-report.json"  # the files a report folder holds, so that only such a folder is ever replaced


def evaluate_held_out(embedder, card, quick=False):
    """The card's protocol (`zoo.protocols.held_out`) through onnxruntime: (metrics, plot data).

    Args:
        embedder: OnnxEmbedder. the entry's image tower.
        card: Card. its card: the protocol and held-out split are named there.
        quick: bool. the protocol's quick run: fewer episodes, classes or pairs (the card's numbers need the
            full protocol).
    """
    protocol = protocols.for_card(card)
    data, options = protocol.shrink(protocols.test_data(card)) if quick else (protocols.test_data(card), {})
    data = {**data, "images": np.asarray(data["images"], np.float32)}
    x = embedder.embed(data["images"])  # (N, D), embedded once for the metrics and the plots
    embed_fn = lambda images: x if images is data["images"] else embedder.embed(images)  # noqa: E731
    embed_text = OnnxCLIP(registry.entry_folder(card.name)).encode_text if protocol.needs_text else None
    metrics = protocols.held_out(card, embed_fn, embed_text, data=data, **options)
    plot = {"embeddings": x, "labels": data["labels"], "images": data["images"],
            **protocol.figure_data(x, data, options)}
    return metrics, plot


def _headline(card, metrics) -> tuple[str, float]:
    """The card's primary metric as recomputed here (a {mean, ci95} metric by its mean)."""
    name, split = card.splits.get("test", "?/?").split("/")
    return f"{name}/{split} {card.primary_metric}", protocols.Protocol.value(metrics.get(card.primary_metric))


# --- parity and latency -----------------------------------------------------------------------


def parity(name) -> float:
    """Max abs difference between onnxruntime and Keras outputs on the golden inputs, over all towers.

    Args:
        name: str. zoo entry name.
    """
    import onnxruntime as ort

    card = registry.info(name)
    folder = registry.entry_folder(name)
    worst = 0.0
    with np.load(folder / "golden.npz") as golden:
        for role, tower in card.towers.items():
            inputs = golden[f"{role}__inputs"]
            model = registry.load(name, tower=role)
            expected = np.asarray(model.predict(inputs, verbose=0))
            session = ort.InferenceSession(str(folder / tower["onnx"]), providers=["CPUExecutionProvider"])
            got = session.run(None, {tower["input"]: inputs})[0]
            worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def latency_ms(embedder, repeats=LATENCY_REPEATS) -> float:
    """Median wall time of one batch-1 `embed` call, in milliseconds.

    Args:
        embedder: OnnxEmbedder. the entry's runtime.
        repeats: int. timed calls after two warm-up calls.
    """
    x = np.random.default_rng(0).uniform(0, 255, (1, *embedder.input_shape)).astype(np.float32)
    embedder.embed(x)
    embedder.embed(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        embedder.embed(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


# --- plots ------------------------------------------------------------------------------------


def _plot_roc(results, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for r in results:
        roc = r["plot"]["roc"]
        ax.plot(np.maximum(roc["fpr"], 1e-4), roc["tpr"], label=f"{r['name']} (AUC {r['metrics']['auc']:.3f})")
    ax.set(xscale="log", xlim=(1e-4, 1), ylim=(0, 1), xlabel="false accept rate", ylabel="true accept rate",
           title="Verification ROC (held-out identities)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_few_shot(results, path):
    import matplotlib.pyplot as plt

    settings = [f"{w}way{s}shot" for w, s in FEW_SHOT_SETTINGS]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        means = [r["metrics"][k]["mean"] for k in settings] + [r["metrics"]["lake_oneshot_runs"]]
        errors = [r["metrics"][k]["ci95"] for k in settings] + [0.0]
        ax.bar(np.arange(len(means)) + (i - (len(results) - 1) / 2) * width, means, width, yerr=errors,
               label=r["name"], capsize=2)
    ax.set_xticks(np.arange(len(settings) + 1),
                  [f"{w}-way {s}-shot" for w, s in FEW_SHOT_SETTINGS] + ["Lake's runs\n20-way 1-shot"], fontsize=8)
    ax.set(ylim=(0, 1), ylabel="accuracy", title="Few-shot on Omniglot evaluation alphabets (nearest prototype)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_map(results, path, n_classes=10):
    """2-D PCA of the test embeddings of `n_classes` classes, one panel per entry."""
    import matplotlib.pyplot as plt

    cols = min(3, len(results))
    rows = int(np.ceil(len(results) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for ax, r in zip(axes.ravel(), results):
        x, labels = r["plot"]["embeddings"], r["plot"]["labels"]
        classes = np.unique(labels)
        chosen = np.random.default_rng(0).choice(classes, min(n_classes, len(classes)), replace=False)
        keep = np.isin(labels, chosen)
        centred = x[keep] - x[keep].mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        points = centred @ vt[:2].T  # (n, 2)
        ax.scatter(points[:, 0], points[:, 1], c=np.searchsorted(np.sort(chosen), labels[keep]), cmap="tab10",
                   s=10)
        ax.set_title(r["name"], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(results):]:
        ax.axis("off")
    fig.suptitle(f"PCA of held-out embeddings ({n_classes} classes, one colour each)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_neighbours(result, path, queries=5, k=5):
    """Query images and their k nearest held-out neighbours; green frame = same class."""
    import matplotlib.pyplot as plt

    x, labels, images = result["plot"]["embeddings"], result["plot"]["labels"], result["plot"]["images"]
    rows = np.random.default_rng(1).choice(len(x), queries, replace=False)
    d2 = np.maximum(2.0 - 2.0 * x[rows] @ x.T, 0.0)  # (queries, N) on unit vectors
    d2[np.arange(queries), rows] = np.inf  # a query does not retrieve itself
    nearest = np.argsort(d2, axis=1)[:, :k]
    fig, axes = plt.subplots(queries, k + 1, figsize=(1.3 * (k + 1), 1.3 * queries), squeeze=False)
    for q, row in enumerate(rows):
        for j, index in enumerate([row, *nearest[q]]):
            ax = axes[q, j]
            image = images[index]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "black" if j == 0 else ("green" if labels[index] == labels[row] else "red")
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2.5)
        axes[q, 0].set_ylabel("query", fontsize=7)
    fig.suptitle(f"{result['name']}: nearest neighbours", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- output -----------------------------------------------------------------------------------

COLUMNS = ("entry", "method", "data", "metric", "value", "card", "anchor (literature)", "latency ms", "parity")


def _row(r) -> tuple:
    card = r["card"]
    if "error" in r:
        method, dataset, anchor = (card.method, card.dataset, card.anchor) if card else ("-", "-", "-")
        return (r["name"], method, dataset, "error", r["error"], "", anchor, "", "")
    shown = f"{card.primary_metric}={protocols.headline(card):.4f}"
    par = "n/a" if r["parity"] is None else f"{r['parity']:.1e}"
    return (card.name, card.method, card.dataset, r["headline"][0], f"{r['headline'][1]:.4f}", shown,
            card.anchor or "-", f"{r['latency_ms']:.2f}", par)


def leaderboard(results) -> str:
    """The leaderboard as a plain-text table, one row per entry."""
    rows = [COLUMNS] + [_row(r) for r in results]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _html(results, plots) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in _row(r)) + "</tr>" for r in results)
    details = "".join(
        f"<h3>{esc(r['name'])}</h3>"
        + (f"<p>{esc(r['card'].paper)} &middot; recipe: <code>{esc(r['card'].recipe)}</code> &middot; "
           f"data license: {esc(r['card'].data_license)}</p>" if r["card"] else "")
        + f"<pre>{esc(json.dumps(r.get('metrics', {'error': r.get('error')}), indent=1))}</pre>"
        for r in results)
    figures = "".join(f"<h3>{esc(title)}</h3><img src='{esc(file)}' alt='{esc(title)}'>" for title, file in plots)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Embedding zoo report</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#eee}img{max-width:100%}"
        "pre{background:#f6f6f6;padding:8px;font-size:12px}</style></head><body>"
        "<h1>Embedding zoo report</h1><p>Every value below was computed now, from the published ONNX files, "
        "on each entry's held-out split; <i>card</i> is the recipe's own number (Keras), <i>parity</i> the max "
        "abs difference between onnxruntime and Keras on the golden inputs, <i>latency</i> the median batch-1 "
        f"onnxruntime call.</p><table><tr>{head}</tr>{body}</table><h2>Plots</h2>{figures}"
        f"<h2>All metrics</h2>{details}</body></html>")


def evaluate_entry(name, quick=False) -> dict:
    """Evaluate one entry from its ONNX file: metrics, headline, latency, parity, plot data.

    Args:
        name: str. zoo entry name.
        quick: bool. fewer episodes and test images.
    """
    card = registry.info(name)
    embedder = OnnxEmbedder(registry.entry_folder(name))
    metrics, plot = evaluate_held_out(embedder, card, quick)
    headline = _headline(card, metrics)
    try:
        par = parity(name)
    except ImportError:  # a runtime-only install has no Keras: the ONNX numbers stand alone
        par = None
    return {"name": name, "card": card, "metrics": metrics, "headline": headline, "plot": plot,
            "latency_ms": latency_ms(embedder, 10 if quick else LATENCY_REPEATS), "parity": par}


def _own_files(folder: Path) -> list:
    """The files of the report in `folder`, as its manifest lists them; FileExistsError if it has none."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise FileExistsError(f"{folder}: not empty and not a report of zoo report (no {MANIFEST}); refusing to "
                              "write the report into it (choose another --out)")
    return [MANIFEST, *map(str, manifest["files"])]


def run(out="report", quick=False) -> list[dict]:
    """Evaluate every published entry, print the leaderboard, write `out/index.html` and `out/results.json`.

    Returns the per-entry results; an entry that fails is reported with its error and the others go on. The
    folder is written atomically (`zoo.runtime.writes.write_folder`): a new or empty one, or a report this
    wrote (its manifest, zoo-report.json, lists its files) is replaced; any other folder or file is refused
    before anything is evaluated.

    Args:
        out: str | Path. output folder.
        quick: bool. fewer episodes and test images (seconds per entry).
    """
    import matplotlib

    matplotlib.use("Agg")
    names = registry.list_models()
    if not names:
        print(f"no published entries in {registry.exports_dir()}: nothing to report. "
              "Run a recipe first, e.g. `python recipes/protonet.py`.")
        return []
    out = Path(out)
    results = write_folder(out, lambda tmp: _write(tmp, names, quick), _own_files, what="a zoo report")
    print()
    print(leaderboard(results))
    failed = [r["name"] for r in results if "error" in r]
    print(f"\nwrote {out / 'index.html'}" + (f"; FAILED entries: {failed}" if failed else ""))
    return results


def _write(out: Path, names, quick) -> list[dict]:
    """Evaluate the entries `names` and write the report's files into the folder `out`; returns the results."""
    results = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", flush=True)
        start, card = time.perf_counter(), None
        try:
            card = registry.info(name)
            print(f"    {card.method}, {card.protocol} on {card.splits.get('test')}", flush=True)
            r = evaluate_entry(name, quick)
        except Exception as err:  # one broken entry must not hide the others
            r = {"name": name, "card": card, "error": f"{type(err).__name__}: {err}"}
            print(f"    FAILED: {r['error']}", flush=True)
        else:
            print(f"    {r['headline'][0]} = {r['headline'][1]:.4f}, {r['latency_ms']:.2f} ms, "
                  f"parity {r['parity']}, {time.perf_counter() - start:.0f} s", flush=True)
        results.append(r)

    ok = [r for r in results if "error" not in r]
    plots = []
    verification = [r for r in ok if protocols.for_card(r["card"]).figure == "roc"]
    if verification:
        _plot_roc(verification, out / "roc.png")
        plots.append(("ROC curves, verification entries", "roc.png"))
    few_shot = [r for r in ok if protocols.for_card(r["card"]).figure == "few_shot"]
    if few_shot:
        _plot_few_shot(few_shot, out / "few_shot.png")
        plots.append(("Few-shot accuracy by way and shot (95% CI)", "few_shot.png"))
    if ok:
        _plot_map(ok, out / "embedding_map.png")
        plots.append(("2-D map of embeddings (PCA)", "embedding_map.png"))
    for r in ok:
        _plot_neighbours(r, out / f"neighbours_{r['name']}.png")
        plots.append((f"Nearest neighbours: {r['name']}", f"neighbours_{r['name']}.png"))

    (out / "index.html").write_text(_html(results, plots), encoding="utf-8")
    summary = [{"name": r["name"], "protocol": r["card"].protocol if r["card"] else None,
                **({"error": r["error"]} if "error" in r else
                   {"headline": {"metric": r["headline"][0], "value": r["headline"][1]}, "metrics": r["metrics"],
                    "latency_ms": r["latency_ms"], "parity_max_abs_diff": r["parity"]})} for r in results]
    (out / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    written = sorted(p.name for p in out.iterdir())
    (out / MANIFEST).write_text(json.dumps({"format": "zoo-report", "files": written}, indent=1) + "\n",
                                encoding="utf-8")
    return results
