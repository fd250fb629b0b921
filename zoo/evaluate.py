"""The metrics over numpy embeddings, by their older module name: `zoo.metrics` holds them (one module per
kind: pairs, neighbours, episodes, probes); this name stays for code written against it."""

from zoo.metrics import (few_shot, few_shot_accuracies, knn, linear_probe, oneshot_runs, paired_recall, retrieval,
                         verification, verification_pairs, zero_shot)

__all__ = ["verification", "verification_pairs", "retrieval", "paired_recall", "few_shot", "few_shot_accuracies",
           "oneshot_runs", "knn", "linear_probe", "zero_shot"]
