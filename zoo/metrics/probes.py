"""Probes of frozen embeddings: a linear classifier (L-BFGS) and zero-shot classification by class texts."""

import numpy as np

from .checks import _labels, _matrix, _positive_int, _unit_pair


def _lbfgs(fun, x, iters, memory=10, gtol=1e-6):
    """Minimise a smooth function with L-BFGS and Armijo backtracking; fun(x) -> (value, gradient)."""
    f, g = fun(x)
    s_hist, y_hist = [], []
    for _ in range(iters):
        if np.max(np.abs(g)) < gtol:
            break
        q, alphas = g.copy(), []
        for s, y in reversed(list(zip(s_hist, y_hist))):  # two-loop recursion (Nocedal & Wright 7.4)
            a = (s @ q) / (y @ s)
            q -= a * y
            alphas.append(a)
        if s_hist:
            q *= (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
        for (s, y), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            q += (a - (y @ q) / (y @ s)) * s
        direction, slope, step = -q, -(g @ q), 1.0
        while True:
            f_new, g_new = fun(x + step * direction)
            if f_new <= f + 1e-4 * step * slope or step < 1e-12:
                break
            step /= 2
        s, y = step * direction, g_new - g
        if s @ y > 1e-12:  # keep the curvature pair only if it keeps the inverse Hessian positive
            s_hist, y_hist = (s_hist + [s])[-memory:], (y_hist + [y])[-memory:]
        x, f, g = x + s, f_new, g_new
    return x


def linear_probe(train_emb, train_labels, test_emb, test_labels, l2=1e-3, epochs=200):
    """Accuracy of a multinomial logistic regression trained on frozen embeddings.

    Features are standardised with the training mean and std. The loss is the mean
    cross-entropy plus `l2 / 2 * ||W||^2` (bias unpenalised), minimised by full-batch L-BFGS
    from zero, so the result is deterministic. Test items whose label never occurs in training
    count as errors.

    Args:
        train_emb: array (N, D). training embeddings.
        train_labels: array (N,). their labels.
        test_emb: array (M, D). test embeddings.
        test_labels: array (M,). their labels.
        l2: float. weight-decay strength, >= 0.
        epochs: int. L-BFGS iterations, each a full pass over the training set.

    Returns:
        dict: accuracy (test), train_accuracy.
    """
    tr, te = _matrix(train_emb, "train_emb"), _matrix(test_emb, "test_emb")
    if tr.shape[1] != te.shape[1]:
        raise ValueError(f"train_emb and test_emb must have the same dim, got {tr.shape[1]} and {te.shape[1]}")
    y_tr, classes = _labels(train_labels, len(tr), "train_labels")
    _labels(test_labels, len(te), "test_labels")
    if len(classes) < 2:
        raise ValueError("linear_probe needs at least two training classes")
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2!r}")
    epochs = _positive_int(epochs, "epochs")
    tr, te = tr.astype(np.float64), te.astype(np.float64)  # L-BFGS needs float64 line searches
    mean, std = tr.mean(axis=0), tr.std(axis=0)
    std[std == 0] = 1.0  # constant features carry nothing; leave them at zero
    xtr, xte = (tr - mean) / std, (te - mean) / std  # (N, D), (M, D)
    n, dim, c = len(xtr), xtr.shape[1], len(classes)
    onehot = np.eye(c)[y_tr]  # (N, C)

    def loss_grad(theta):
        w, b = theta[:dim * c].reshape(dim, c), theta[dim * c:]
        logits = xtr @ w + b  # (N, C)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        err = (np.exp(logp) - onehot) / n  # (N, C): d(mean CE)/d(logits)
        loss = -np.sum(onehot * logp) / n + l2 / 2 * np.sum(w ** 2)
        return loss, np.r_[(xtr.T @ err + l2 * w).ravel(), err.sum(axis=0)]

    theta = _lbfgs(loss_grad, np.zeros(dim * c + c), epochs)
    w, b = theta[:dim * c].reshape(dim, c), theta[dim * c:]
    pred_tr = classes[np.argmax(xtr @ w + b, axis=1)]
    pred_te = classes[np.argmax(xte @ w + b, axis=1)]
    return {"accuracy": float(np.mean(pred_te == np.asarray(test_labels))),
            "train_accuracy": float(np.mean(pred_tr == np.asarray(train_labels)))}


def zero_shot(image_embeddings, labels, class_text_embeddings):
    """Zero-shot classification: each image takes the class whose text embedding is most cosine-similar.

    Args:
        image_embeddings: array (N, D). image embeddings.
        labels: int array (N,). true class of each image, an index into the text rows.
        class_text_embeddings: array (C, D). one text embedding per class (e.g. the mean over
            prompts), rows normalised here.

    Returns:
        dict: accuracy, top5 (only when C >= 5), predictions (int array (N,)).

    Reference:
        Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision".
    """
    img, txt = _unit_pair(image_embeddings, class_text_embeddings, "image_embeddings", "class_text_embeddings")
    y = np.asarray(labels)
    if y.shape != (len(img),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(txt):
        raise ValueError(f"labels must be {len(img)} integers in [0, {len(txt)}) (rows of "
                         f"class_text_embeddings), got shape {y.shape} and dtype {y.dtype}")
    sim = img @ txt.T  # (N, C)
    pred = np.argmax(sim, axis=1)
    out = {"accuracy": float(np.mean(pred == y))}
    if len(txt) >= 5:
        # The true class's rank, ties going to the lower index as in argmax: top-5 when < 5.
        s_true = sim[np.arange(len(y)), y][:, None]  # (N, 1)
        rank = np.sum((sim > s_true) | ((sim == s_true) & (np.arange(len(txt)) < y[:, None])), axis=1)
        out["top5"] = float(np.mean(rank < 5))
    out["predictions"] = pred
    return out
