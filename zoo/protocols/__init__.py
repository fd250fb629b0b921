"""Held-out protocols: registered objects, each returning the card's metrics under one set of names.

An entry's card names its protocol (`card.protocol`) and its held-out split (`card.splits["test"]`,
"dataset/split"); `held_out(card, ...)` runs that protocol there, nothing is inferred from an entry's name.
Every protocol takes an `embed_fn((N, H, W, C) float32 pixels 0..255) -> (N, D)`, so the same protocol runs
on Keras, SavedModel, ONNX fp32 and ONNX int8 alike: recipes, `zoo report`, the tables and the int8 gate all
call these. A protocol is a `Protocol` subclass registered with `@register` (see `base`): its `run`, its
int8 `gate` metric, its quick options, the report's figure, and what it means on a user's folder.

Metric names (the only place they are defined):

| protocol | metrics |
| --- | --- |
| verification | `verification_accuracy` (10-fold, threshold chosen on the other folds), `verification_accuracy_std`, `auc`, `eer`, `tar@far=1e-3`, `threshold` (Euclidean distance, chosen on all pairs), `recall@1`, `recall@5`, `map_at_r`, `pairs`, `classes`, `images` |
| few_shot | `{way}way{shot}shot` = {`mean`, `ci95`} for 5/20-way 1/5-shot, `lake_oneshot_runs` (Lake's 20 runs of 20-way one-shot, where the split brings them), `recall@1`, `classes`, `episodes`, `queries` |
| zero_shot | `image_to_text_recall@k`, `text_to_image_recall@k`, `chance_recall@k` (k = 1, 5, 10), `zero_shot_category_top1` (categories by their names), `zero_shot_category_top1_with_subcategory_names` (each described by its subcategories' names too), `zero_shot_subcategory_top1`, `{category,subcategory}_{majority,chance}`, `linear_probe_category_top1`, `test_images` |
| copy_retrieval | `copy_recall@1`, `copy_recall@5`, `images` (unlabelled images found again from altered copies) |

The int8 gate metric of each protocol (higher is better), `Protocol.gate`:

| protocol | gate metric |
| --- | --- |
| verification | `verification_accuracy` |
| few_shot | `5way1shot` (mean over 1,000 seeded episodes, 15 queries) |
| zero_shot | `image_to_text_recall@5` (each test image among all test captions, fp32 text tower) |
| copy_retrieval | `copy_recall@1` |
"""

from .base import (ALIASES, CALIBRATION_COUNT, Protocol, canonical, check_gate_splits, for_card, gate_metric, get,
                   headline, held_out, names, register, seeded_sample, test_data, train_images)
from .copy_retrieval import CopyRetrieval, copy_retrieval
from .few_shot import FEW_SHOT_EPISODES, FEW_SHOT_QUERIES, FEW_SHOT_SETTINGS, FewShot, few_shot, folder_few_shot
from .verification import Verification, verification
from .zero_shot import ZeroShot, image_text_retrieval, prompt_ensemble, words, zero_shot

# protocol name -> its int8 gate metric, as older callers read it (`get(name).gate` is the same).
GATE_METRICS = {name: get(name).gate for name in (*names(), *ALIASES) if get(name).gate}

__all__ = ["Protocol", "register", "get", "canonical", "for_card", "names", "headline", "held_out", "gate_metric",
           "ALIASES", "verification", "few_shot", "folder_few_shot", "zero_shot", "image_text_retrieval",
           "copy_retrieval",
           "prompt_ensemble", "words", "test_data", "train_images", "seeded_sample", "check_gate_splits",
           "FEW_SHOT_SETTINGS", "FEW_SHOT_QUERIES", "FEW_SHOT_EPISODES", "CALIBRATION_COUNT", "Verification",
           "FewShot", "ZeroShot", "CopyRetrieval", "GATE_METRICS"]
