"""The losses of the zoo as pure `keras.ops` functions returning float32 scalars, one file per loss.

Every loss casts its float inputs to float32 first, so float16/bfloat16 activations under
mixed precision give a finite float32 loss. Terms that do not exist in a batch (an anchor
without a positive or a negative, a class alone in the batch) are left out of the mean, and
a mean over no term is 0 (unless a loss's definition says otherwise).

Each module of this package whose name does not start with "_" is a loss file: it is imported
here, and the names in its `__all__` are `zoo.losses.<name>`. A loss file that registers its
function (`register_loss`, zoo/losses/_registry.py) declares what it needs per batch, and
`zoo.methods.MetricLearning(loss=<name>)` trains it; so adding a loss is adding its file.
"""

import importlib
import pkgutil

from zoo.losses._registry import INPUTS, LABEL_INPUTS, LOSSES, Loss, get_loss, label_losses, register_loss

__all__ = ["INPUTS", "LABEL_INPUTS", "LOSSES", "Loss", "get_loss", "label_losses", "register_loss"]

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if not _info.name.startswith("_"):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        for _name in _module.__all__:
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)
del _info, _module, _name
