"""Metrics over numpy embeddings, so they score Keras and ONNX outputs alike.

Pure numpy: this module imports neither Keras nor TensorFlow.

Conventions shared by the metrics:
- Embeddings are used as given. The zoo's embedders return L2-normalised vectors, for which
  the squared Euclidean distance is `2 - 2 cos`, so Euclidean and cosine rank identically;
  nothing here renormalises silently. Only the protocols defined by cosine similarity
  (`knn`, `zero_shot`, `retrieval(metric="cosine")`) normalise, because that is their metric.
- Labels may be any 1-D array whose values compare by equality (ints, strings).
- Nearest-neighbour searches are chunked over queries: memory is `chunk_size x N` scores plus
  argpartition's `chunk_size x N` int64 indices, never an N x N matrix. Ties in distance are
  broken by whatever order argpartition leaves them in.
"""

from .episodes import few_shot, few_shot_accuracies, oneshot_runs
from .neighbours import knn, paired_recall, retrieval
from .probes import linear_probe, zero_shot
from .pairs import verification, verification_pairs

__all__ = ["verification", "verification_pairs", "retrieval", "paired_recall", "few_shot", "few_shot_accuracies",
           "oneshot_runs", "knn", "linear_probe", "zero_shot"]
