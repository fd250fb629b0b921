"""Metric learning with any registered loss over labelled batches, an optional cluster term and softmax head."""

import keras
from keras import layers, ops

from zoo import losses
from zoo.distributed import on_global_batch
from zoo.methods.base import EmbeddingMethod
from zoo.methods.siamese import optional_augment
from zoo.ops import l2_normalize, pairwise_distances


@keras.saving.register_keras_serializable(package="zoo")
class ClassCentres(layers.Layer):
    """A learned (C, D) matrix of class centres, one row per training class: the head of a centre-based loss.

    The method that owns it hands its weights to the loss as the input `centres` (e.g. ArcFace's class
    weights W); it is trained with the loss and is not part of the published embedder.

    Args:
        num_classes: int. C, the training classes.
        dim: int. D, the width of the embeddings.
    """

    def __init__(self, num_classes, dim, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.dim = int(num_classes), int(dim)
        self.kernel = self.add_weight(shape=(self.num_classes, self.dim), initializer="glorot_uniform",
                                      name="centres")  # (C, D)
        self.built = True

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "dim": self.dim}


def in_batch_pairs(labels, embeddings):
    """(same, distance) of every ordered pair (i, j), i != j, of the batch: float32 (B(B-1),) each.

    Args:
        labels: int tensor (B,). class ids.
        embeddings: float32 tensor (B, D).
    """
    n = ops.shape(labels)[0]
    same = ops.cast(labels[:, None] == labels[None, :], "float32")  # (B, B)
    distances = pairwise_distances(embeddings)  # (B, B), no NaN gradient at distance 0
    # Off-diagonal entry k of row-major order: row k // (B - 1), column k % (B - 1), shifted past the diagonal.
    k = ops.arange(n * (n - 1))
    row, column = k // ops.maximum(n - 1, 1), k % ops.maximum(n - 1, 1)
    flat = row * n + column + ops.cast(column >= row, k.dtype)
    return ops.take(ops.reshape(same, (-1,)), flat), ops.take(ops.reshape(distances, (-1,)), flat)


@keras.saving.register_keras_serializable(package="zoo")
class MetricLearning(EmbeddingMethod):
    """Metric learning with a loss of the registry (`zoo.losses.LOSSES`) over batches of labelled images.

    Fit on `x = images` (B, H, W, C) raw pixels and `y = labels` (B,) int, as `zoo.data.samplers.PKSampler`
    (P identities x K images) yields them. The loss's declaration (`zoo.losses.register_loss`) names its inputs,
    and the method supplies them from the batch: the labels, the L2-normalised embeddings, every in-batch pair
    (`same`, `distance`), the weights of a class-centre head it owns (`centres`, built with `num_classes` rows),
    and a frozen teacher's embeddings of the same images (`teacher`). The loss is
    `loss + hard_cluster_weight * hard_cluster + classifier_weight * cross-entropy`, each part where it is set:
    the hard-cluster term on the embeddings, the cross-entropy on a softmax head over the un-normalised
    features. Every head (centres, softmax, teacher) is used in training only and is not part of `embedder`.
    `call` returns {"embeddings": (B, F)} plus "logits" (B, num_classes) with a softmax head and "teacher"
    with a teacher. The loss's value is logged under its `term` name (e.g. "multi_similarity_loss"), with its
    declared metrics (e.g. "active_fraction" for the triplet losses).

    Args:
        encoder: keras.Model. Raw images -> (B, F) features.
        loss: str. a registered loss whose inputs the method supplies (`zoo.losses.label_losses()`, and those
            that need a teacher when `teacher` is given).
        loss_options: dict or None. keyword options of the loss function (e.g. {"scale": 30.0}); the others
            at the function's defaults.
        hard_cluster_weight: float. Weight of the hard-cluster term (0: off).
        cluster_margin: float. Margin of the hard-cluster term.
        num_classes: int or None. Training classes, labels 0..num_classes-1: the rows of the class-centre head
            (for a loss with `centres`) and the outputs of the softmax head.
        classifier_weight: float. Weight of the cross-entropy term (0: no softmax head, unless `head` is given).
        head: keras.Model or None. The softmax head (default: one Dense layer, when classifier_weight > 0).
        centres: ClassCentres or None. The class-centre head (default: built for a loss that takes `centres`).
        teacher: keras.Model or None. A frozen model of the same inputs, for a loss that takes `teacher`.
        augment: keras.Model or None. Random per-image augmentation applied in training only
            (e.g. zoo.data.augment.faces(48)); not part of `embedder`.

    Reference:
        Musgrave, Belongie, Lim 2020, A Metric Learning Reality Check (pytorch-metric-learning): losses as
        interchangeable parts of one training loop, with the miners and regularisers beside them.
    """

    NESTED = ("encoder", "head", "centres", "teacher", "augment")

    def __init__(self, encoder, loss="semi_hard", loss_options=None, hard_cluster_weight=0.0, cluster_margin=0.2,
                 num_classes=None, classifier_weight=0.0, head=None, centres=None, teacher=None, augment=None,
                 **kwargs):
        super().__init__(encoder, **kwargs)
        spec = losses.get_loss(loss)
        if "teacher" in spec.inputs and teacher is None:  # every other input comes from the batch or a head
            raise ValueError(f"loss {loss!r} takes {list(spec.inputs)}: give the method a teacher= model")
        if hard_cluster_weight < 0 or classifier_weight < 0:
            raise ValueError("hard_cluster_weight and classifier_weight must be >= 0, got "
                             f"{hard_cluster_weight!r} and {classifier_weight!r}")
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be None or >= 2, got {num_classes!r}")
        self.num_classes = None if num_classes is None else int(num_classes)
        wants_centres = "centres" in spec.inputs
        if wants_centres and centres is None and self.num_classes is None:
            raise ValueError(f"loss {loss!r} learns one centre per training class: give num_classes")
        if centres is not None and not wants_centres:
            raise ValueError(f"centres given, but loss {loss!r} takes none (its inputs: {list(spec.inputs)})")
        if teacher is not None and "teacher" not in spec.inputs:
            raise ValueError(f"teacher given, but loss {loss!r} takes none (its inputs: {list(spec.inputs)})")
        if classifier_weight > 0 and head is None and self.num_classes is None:
            raise ValueError("classifier_weight > 0 adds a softmax head over the training classes: give num_classes")
        self.loss_name, self.loss_options = loss, spec.resolve(loss_options)
        self.hard_cluster_weight, self.cluster_margin = float(hard_cluster_weight), float(cluster_margin)
        self.classifier_weight = float(classifier_weight)
        if head is None and self.classifier_weight > 0:
            head = keras.Sequential([layers.Dense(self.num_classes)], name="classifier_head")
        if head is not None:
            head.build((None, self.feature_dim))
        self.head = head
        if wants_centres and centres is None:
            centres = ClassCentres(self.num_classes, self.feature_dim, name="class_centres")
        self.centres = centres
        if teacher is not None:
            teacher.trainable = False  # frozen: its outputs are targets
        self.teacher = teacher
        self.augment = optional_augment(augment, self.encoder)
        self.term_tracker = keras.metrics.Mean(name=spec.term)
        self.metric_trackers = {name: keras.metrics.Mean(name=name) for name in spec.metrics}

    @property
    def loss_spec(self):
        """zoo.losses.Loss: the declaration of the trained loss."""
        return losses.get_loss(self.loss_name)

    def call(self, inputs, training=False):
        if self.augment is not None:
            # Random draws of the global batch on N replicas (zoo.distributed.on_global_batch).
            inputs = on_global_batch(lambda x: self.augment(x, training=training), [inputs])
        features = self.encoder(inputs, training=training)  # (B, F)
        outputs = {"embeddings": l2_normalize(ops.cast(features, "float32"))}
        if self.head is not None:
            outputs["logits"] = self.head(features, training=training)  # (B, C)
        if self.teacher is not None:
            outputs["teacher"] = ops.stop_gradient(ops.cast(self.teacher(inputs, training=False), "float32"))
        return outputs

    def loss_inputs(self, labels, y_pred, names):
        """{name: tensor} of the loss inputs `names` for a batch (`zoo.losses.INPUTS` says what each is)."""
        embeddings = y_pred["embeddings"]  # (B, F) float32, unit norm
        inputs = {"labels": labels, "embeddings": embeddings}
        if "same" in names or "distance" in names:
            inputs["same"], inputs["distance"] = in_batch_pairs(labels, embeddings)
        if "centres" in names:
            inputs["centres"] = ops.cast(self.centres.kernel, "float32")  # (C, F)
        if "teacher" in names:
            inputs["teacher"] = y_pred["teacher"]  # (B, T)
        return {name: inputs[name] for name in names}

    def objective(self, y, y_pred):
        # In-batch mining and pairs: on N replicas the global batch (EmbeddingMethod.compute_loss gathers it).
        spec = self.loss_spec
        needs_labels = set(spec.inputs) & {"labels", "same", "distance", "centres"}
        if y is None and (needs_labels or self.hard_cluster_weight or self.head is not None):
            raise ValueError(f"{type(self).__name__} with loss {self.loss_name!r} needs y = labels (B,) int, e.g. "
                             "from zoo.data.samplers.PKSampler")
        labels = None if y is None else ops.cast(y, "int32")  # (B,)
        inputs = self.loss_inputs(labels, y_pred, spec.inputs)
        loss = spec.fn(*inputs.values(), **self.loss_options)
        self.term_tracker.update_state(loss)
        fixed = [value if name == "labels" else ops.stop_gradient(value) for name, value in inputs.items()]
        for name in spec.metrics:
            self.metric_trackers[name].update_state(spec.metric(name, fixed, self.loss_options))
        embeddings = y_pred["embeddings"]
        if self.hard_cluster_weight:
            loss = loss + self.hard_cluster_weight * losses.hard_cluster(labels, embeddings, self.cluster_margin)
        if self.head is not None:
            cross_entropy = keras.losses.sparse_categorical_crossentropy(
                labels, ops.cast(y_pred["logits"], "float32"), from_logits=True)
            loss = loss + self.classifier_weight * ops.mean(cross_entropy)
        return loss

    def get_config(self):
        return {**super().get_config(), "loss": self.loss_name, "loss_options": dict(self.loss_options),
                "hard_cluster_weight": self.hard_cluster_weight, "cluster_margin": self.cluster_margin,
                "num_classes": self.num_classes, "classifier_weight": self.classifier_weight}
