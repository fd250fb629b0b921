"""The names recipes imported from here before the engine was split; kept so that recipes written against it
still run. The training engine is `zoo.training` (parse_config, train, publish_run, ...), fine-tuning and users'
folders `zoo.finetune`, the bundled data kits `zoo.data.kits`, the face ResNet `zoo.backbones.face_resnet`, and
the protocols of a user's folder `zoo.protocols` (each protocol's `on_folder`)."""

from zoo.backbones import face_resnet
from zoo.data.kits import (EMOJI_PREPROCESSING, LFW_DATASET, LFW_LICENSE, LFW_SPLITS, OMNIGLOT_LICENSE,
                           OMNIGLOT_PREPROCESSING, OMNIGLOT_SPLITS, background_views, face_data, face_template,
                           lfw_preprocessing, lfw_splits, omniglot_data, omniglot_few_shot, subset)
from zoo.finetune import parent_entry, parent_record, user_card, user_data
from zoo.protocols import copy_retrieval
from zoo.protocols import folder_few_shot as user_few_shot
from zoo.training import (BACKUP_FILES, PRECISIONS, REPO, TRAINED_RECORD, TRAINED_WEIGHTS, Preset, Stopwatch,
                          TrainingRun, compile_with_cosine_decay, embed, load_towers, machine_description,
                          parse_config, print_metrics, publish_run, recipe_command, same_config, to_float32, train,
                          training_callbacks)

__all__ = ["face_resnet", "EMOJI_PREPROCESSING", "LFW_DATASET", "LFW_LICENSE", "LFW_SPLITS", "OMNIGLOT_LICENSE",
           "OMNIGLOT_PREPROCESSING", "OMNIGLOT_SPLITS", "background_views", "face_data", "face_template",
           "lfw_preprocessing", "lfw_splits", "omniglot_data", "omniglot_few_shot", "subset", "parent_entry",
           "parent_record", "user_card", "user_data", "copy_retrieval", "user_few_shot", "BACKUP_FILES", "PRECISIONS",
           "REPO", "TRAINED_RECORD", "TRAINED_WEIGHTS", "Preset", "Stopwatch", "TrainingRun",
           "compile_with_cosine_decay", "embed", "load_towers", "machine_description", "parse_config",
           "print_metrics", "publish_run", "recipe_command", "same_config", "to_float32", "train",
           "training_callbacks"]
