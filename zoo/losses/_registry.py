"""The registry of training losses: each loss file declares, with `register_loss`, what its function needs per batch.

A method trains a registered loss by name (`zoo.methods.MetricLearning(encoder, loss="multi_similarity")`): it
reads the declaration, builds the inputs the loss names (labels, embeddings, in-batch pairs, the weights of a
class-centre head it owns, a teacher's embeddings) and calls the function with them and the user's options. So a
new loss over those inputs is one file: its function and its `register_loss` line.
"""

import dataclasses
import inspect

# What a method hands a loss per batch, by argument name: a loss function takes the inputs it declares as its
# leading positional arguments, in the declared order; its keyword arguments are its options.
INPUTS = {
    "labels": "int32 (B,) class ids of the batch",
    "embeddings": "float32 (B, D) L2-normalised embeddings of the batch",
    "same": "float32 (B(B-1),) 1 where the pair is of one class, else 0, for every ordered pair (i, j), i != j, "
            "of the batch",
    "distance": "float32 (B(B-1),) Euclidean distance between the embeddings of each of those pairs",
    "centres": "float32 (C, D) weights of a class-centre head the method owns, one row per training class: "
               "trained with the loss, dropped at export",
    "teacher": "float32 (B, T) embeddings of the same inputs by a frozen teacher model",
}
# What a labelled batch gives by itself: every input but a teacher's embeddings.
LABEL_INPUTS = frozenset(INPUTS) - {"teacher"}

LOSSES = {}


@dataclasses.dataclass(frozen=True)
class Loss:
    """A registered loss: its function, the inputs it takes per batch, and the training metrics that go with it.

    Args:
        name: str. registry key, e.g. "multi_similarity" (a recipe's `--loss`).
        fn: callable. `fn(*inputs, **options)` -> float32 scalar.
        inputs: tuple of str. keys of `INPUTS`: fn's leading positional arguments, in order.
        term: str. name of the training metric that logs the loss's value.
        metrics: dict. metric name -> function of the same inputs and some of the same options, logged
            without gradient (e.g. the share of active triplets).
    """

    name: str
    fn: object
    inputs: tuple
    term: str
    metrics: dict

    @property
    def options(self) -> dict:
        """fn's keyword options and their defaults, e.g. {"margin": 0.2, "squared": False}."""
        return _options(self.fn, self.inputs)

    def resolve(self, options=None) -> dict:
        """Every option of the loss: its defaults, updated with `options`; unknown names are refused."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"loss {self.name!r} has no option {', '.join(unknown)}; its options are "
                             f"{self.options}")
        return {**self.options, **options}

    def metric(self, name, inputs, options):
        """The declared metric `name` of `inputs` (the loss's, in order), with those of `options` it takes."""
        fn = self.metrics[name]
        taken = _options(fn, ())
        return fn(*inputs, **{k: v for k, v in options.items() if k in taken})


def _options(fn, inputs):
    parameters = inspect.signature(fn).parameters
    return {k: p.default for k, p in parameters.items()
            if k not in inputs and p.default is not inspect.Parameter.empty}


def register_loss(name, inputs, term=None, metrics=None):
    """Decorator: register a loss function under `name`, declaring the per-batch inputs it takes.

    Args:
        name: str. registry key (a recipe's `--loss` value).
        inputs: tuple of str. keys of `INPUTS`, the function's leading positional arguments in order; e.g.
            ("labels", "embeddings") for a loss over a labelled batch, ("labels", "embeddings", "centres") for one
            with a learned class-centre head, ("embeddings", "teacher") for distillation.
        term: str or None. name of the training metric that logs the loss (default "<name>_loss").
        metrics: dict or None. metric name -> function of the same inputs (and options), logged without gradient.

    Returns:
        The decorator; it returns the function unchanged.
    """
    inputs = tuple(inputs)
    unknown = sorted(set(inputs) - set(INPUTS))
    if unknown:
        raise ValueError(f"loss {name!r}: unknown inputs {unknown}; a method supplies {sorted(INPUTS)}")

    def decorate(fn):
        leading = list(inspect.signature(fn).parameters)[:len(inputs)]
        if leading != list(inputs):
            raise ValueError(f"loss {name!r}: {fn.__name__} must take the declared inputs {list(inputs)} as its "
                             f"first arguments, got {leading}")
        if name in LOSSES and LOSSES[name].fn is not fn:
            raise ValueError(f"a loss named {name!r} is registered already ({LOSSES[name].fn.__module__})")
        LOSSES[name] = Loss(name, fn, inputs, term or f"{name}_loss", dict(metrics or {}))
        return fn

    return decorate


def get_loss(name) -> Loss:
    """The registered loss `name`; a ValueError lists the registered names otherwise."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def label_losses() -> list:
    """Names of the registered losses that a labelled batch alone feeds (no teacher), sorted."""
    return sorted(name for name, loss in LOSSES.items() if set(loss.inputs) <= LABEL_INPUTS)
