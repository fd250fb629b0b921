"""Data-parallel training on the devices of one machine (`--devices N`), on the engines Keras already has.

- JAX: `keras.distribution.DataParallel`. The weights are replicated, each batch is sharded along its
  first axis, and the step is one GSPMD program over *global* arrays: a loss computed in `compute_loss`
  already sees the whole batch, and batch norm's statistics are the whole batch's. `gather` is the identity.
- TensorFlow: `tf.distribute.MirroredStrategy`. Each replica runs the step on its slice of the batch
  (rows `[r * B/N, (r + 1) * B/N)`) and Keras sums the replicas' gradients. In-batch losses call `gather`
  (an all-gather whose gradient flows back to every replica's rows) so every replica computes the loss of
  the global batch, and `replica_share` divides the objective by N (Keras' own convention for its losses),
  so that the summed gradient is exactly the one-device gradient of the global batch. Batch norm is
  synchronised over the replicas while `fitting` (`BatchNormalization.synchronized`).
- Random augmentation (`on_global_batch`): TensorFlow's replicas share one seed state and would repeat each
  other's draws, so each augments the gathered global batch and keeps its rows; on JAX the draws are global,
  and their output is constrained to the batch sharding (GSPMD otherwise runs the rest of the step whole on
  every device).

The recipe's batch size is the global batch: each of the N devices sees B / N rows of it, so it must divide.
On one device every function here is the identity (or a no-op).
"""

import contextlib
import os
import re

import keras

XLA_DEVICES_FLAG = "--xla_force_host_platform_device_count"
_ACTIVE = {}  # what `start` set up: {"devices", "engine", "device_names"}; empty when training on one device
_STRATEGIES = {}  # TensorFlow: device names -> its MirroredStrategy, made once per process


def virtual_cpu_devices() -> int:
    """The N of `XLA_FLAGS=--xla_force_host_platform_device_count=N` (0 when unset): virtual CPU devices."""
    found = re.search(XLA_DEVICES_FLAG + r"=(\d+)", os.environ.get("XLA_FLAGS", ""))
    return int(found.group(1)) if found else 0


def _tensorflow_devices():
    """The TensorFlow devices to mirror over: the GPUs, else the logical CPUs (split into the N of
    `virtual_cpu_devices()` first, when TensorFlow has not initialised its devices yet)."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        wanted = virtual_cpu_devices()
        if wanted > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            try:
                tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * wanted)
            except RuntimeError:  # already initialised (by an earlier tensor): keep its devices
                pass
    return [d.name for d in tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")]


def available_devices() -> list:
    """Names of the devices this backend can train on in parallel (GPUs, else CPU devices)."""
    backend = keras.backend.backend()
    if backend == "jax":
        return list(keras.distribution.list_devices())
    if backend == "tensorflow":
        return _tensorflow_devices()
    raise ValueError(f"--devices > 1 is implemented on the jax and tensorflow backends, not on {backend}")


def start(devices) -> dict | None:
    """Train data-parallel over `devices` devices of this machine from now until `end()`.

    Call it before the model is built: JAX replicates, and TensorFlow mirrors, the variables created after.
    The choice is global (`keras.distribution.set_distribution` / `tf.distribute.experimental_set_strategy`),
    so the recipes' own code builds and compiles the model unchanged.

    Args:
        devices: int. Devices to use; 1 (or fewer) leaves training on one device.

    Returns:
        None for one device, else the record for the card: {"devices", "engine", "device_names"}.

    Raises:
        ValueError: fewer devices than asked for (the message says how many there are and how to get virtual
            CPU devices), or a backend without an engine here (torch).
    """
    devices = int(devices)
    if devices <= 1:
        return None
    backend = keras.backend.backend()
    names = available_devices()
    if len(names) < devices:
        raise ValueError(
            f"--devices {devices}: the {backend} backend sees {len(names)} device(s) on this machine "
            f"({', '.join(names)}). For virtual CPU devices (to try data-parallel training on one CPU), start "
            f"the process with XLA_FLAGS={XLA_DEVICES_FLAG}={devices} (read by JAX, and by zoo.distributed on "
            "TensorFlow, which splits the CPU into that many logical devices)")
    names = names[:devices]
    if backend == "jax":
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=names))
        engine = "keras.distribution.DataParallel"
    else:
        import tensorflow as tf

        # One strategy per device set and process: a second MirroredStrategy would number its collectives from
        # the same keys as the first and clash with them ("Collective instance ... expected type ...").
        if tuple(names) not in _STRATEGIES:
            _STRATEGIES[tuple(names)] = tf.distribute.MirroredStrategy(names)
        tf.distribute.experimental_set_strategy(_STRATEGIES[tuple(names)])
        engine = "tf.distribute.MirroredStrategy"
    _ACTIVE.update(devices=devices, engine=engine, device_names=names)
    return dict(_ACTIVE)


def end():
    """Back to one device: models built from now on (the embedder evaluated and exported after training)
    are not distributed. The trained weights stay readable on the first device."""
    if not _ACTIVE:
        return
    if keras.backend.backend() == "jax":
        keras.distribution.set_distribution(None)
    else:
        import tensorflow as tf

        tf.distribute.experimental_set_strategy(None)
    _ACTIVE.clear()


def _replica_context():
    """TensorFlow's replica context when a step runs on more than one replica, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()  # None in the cross-replica context (Keras' symbolic build)
    return context if context is not None and context.num_replicas_in_sync > 1 else None


def gather(x):
    """(b, ...) this replica's rows -> (B, ...) the global batch's, in replica order, gradient flowing back.

    The identity on one device and on JAX (its arrays are global already). On TensorFlow it is
    `ReplicaContext.all_gather`, whose gradient sums the replicas' gradients of the gathered tensor and hands
    each replica the slice of its own rows: with every replica computing the same global loss scaled by
    `replica_share`, the gradients Keras sums are the one-device gradient (open_clip's gather_with_grad with
    a loss on the full batch, lightly's gather_distributed).
    """
    context = _replica_context()
    return x if context is None else _all_gather(context, x)


def _all_gather(context, x):
    """(b, ...) -> (N * b, ...) on TensorFlow replicas, keeping the static shape past the rows (the layers
    that follow, e.g. the augmentation, need H and W)."""
    gathered = context.all_gather(x, axis=0)
    gathered.set_shape([None, *x.shape[1:]])
    return gathered


def on_global_batch(fn, parts):
    """`fn(concatenate(parts))` for this replica's rows, with the random draws one device makes for the batch.

    For random augmentation: on TensorFlow every replica holds the same seed state (a mirrored variable), so
    `fn` on each replica's own rows would repeat the same draws on every replica (row i and row i + B/N
    transformed alike). Instead each part is gathered, `fn` runs on the global batch (every replica the same
    draws, those of one device) and each replica keeps its rows: N times the augmentation work for draws
    independent over the batch. On one device it is `fn` alone; on JAX (global arrays, global draws) too, its
    output then constrained to the batch sharding: GSPMD otherwise computes random draws, and all that follows
    them, whole on every device (measured: the encoder's activations (2B, ...) on each device, not (2B/N, ...)).

    Args:
        fn: callable. (R, ...) -> (R, ...), row by row (e.g. an augmentation pipeline in training).
        parts: list of tensors (b, ...), this replica's rows of each part (e.g. [x_a, x_b] of two views).

    Returns:
        (sum of b, ...) `fn`'s output of this replica's rows, laid out as `concatenate(parts)`.
    """
    context = _replica_context()
    if context is None:
        return _batch_sharded(fn(parts[0] if len(parts) == 1 else keras.ops.concatenate(parts, axis=0)))
    # (N * b, ...) per part, concatenated as one device would: [part 0 of all replicas; part 1 of all; ...].
    whole = fn(keras.ops.concatenate([_all_gather(context, part) for part in parts], axis=0))
    replica, replicas = context.replica_id_in_sync_group, context.num_replicas_in_sync
    mine, offset = [], 0
    for part in parts:
        rows = keras.ops.shape(part)[0]  # b: batches split evenly (`fitting` checks)
        mine.append(whole[offset + replica * rows:offset + (replica + 1) * rows])
        offset += replicas * rows
    return mine[0] if len(mine) == 1 else keras.ops.concatenate(mine, axis=0)


def _batch_sharded(x):
    """`x` (B, ...) split along its rows over the devices of JAX's DataParallel (inside the step: a sharding
    constraint); `x` itself otherwise."""
    distribution = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    if distribution is None:
        return x
    return keras.distribution.distribute_tensor(x, distribution.get_data_layout(x.shape))


def replica_share(loss):
    """This replica's share of the objective: `loss` / N replicas on TensorFlow (Keras sums the replicas'
    gradients and multiplies the logged loss back by N), `loss` on one device and on JAX."""
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else keras.ops.multiply(loss, keras.ops.cast(1.0 / replicas, loss.dtype))


def _first_leaf(x):
    while isinstance(x, (tuple, list, dict)):
        x = next(iter(x.values())) if isinstance(x, dict) else x[0]
    return x


def batch_rows(data, batch_size=None) -> set:
    """The batch sizes `fit(data)` will see: a PyDataset's first batch's rows, or for arrays `batch_size` and
    the rows of the last, partial batch."""
    if isinstance(data, keras.utils.PyDataset):
        return {int(_first_leaf(data[0]).shape[0])}  # the samplers draw batch i from (seed, epoch, i): no side effect
    rows = int(_first_leaf(data).shape[0])
    batch_size = int(batch_size or 32)
    return {min(batch_size, rows)} | ({rows % batch_size} if rows > batch_size and rows % batch_size else set())


@contextlib.contextmanager
def fitting(model, data, batch_size=None):
    """Around `model.fit(data)` of a distributed run (a no-op on one device): checks that every batch splits
    evenly over the devices; on TensorFlow synchronises batch norm over the replicas and keeps XLA off
    (Keras' own rule under tf.distribute); at the end, `end()`.

    Batch norm: JAX's GSPMD step already normalises over the global batch; on TensorFlow each replica would
    use its own B/N rows, so Keras' `synchronized` (all-reduced sums: E[x], E[x^2]) is set on every
    BatchNormalization layer for the fit, and reset after it: a .keras file with synchronized=True cannot be
    loaded on another backend.
    """
    if not _ACTIVE:
        yield
        return
    devices = _ACTIVE["devices"]
    uneven = sorted(rows for rows in batch_rows(data, batch_size) if rows % devices)
    if uneven:
        end()
        raise ValueError(f"--devices {devices}: a batch of {uneven[0]} rows does not split evenly over "
                         f"{devices} devices; the recipe's batch is the global batch: make its rows (the batch "
                         f"size, P x K, or way x (shot + queries)) a multiple of {devices}")
    synchronised, jit = [], model.jit_compile
    if keras.backend.backend() == "tensorflow":
        synchronised = [layer for layer in model._flatten_layers(include_self=False)
                        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized]
        for layer in synchronised:  # read when the train step is traced, in the fit
            layer.synchronized = True
        if jit:
            model.jit_compile = False
    try:
        yield
    finally:
        for layer in synchronised:
            layer.synchronized = False
        if jit and not model.jit_compile:
            model.jit_compile = jit
        end()
