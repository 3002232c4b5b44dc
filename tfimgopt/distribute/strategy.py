"""Chooses a `tf.distribute` strategy, its precision policy and its batch sizes.

TPU first (Colab's TPU VMs and Cloud TPUs), then several GPUs, one GPU, several
machines (from `TF_CONFIG`), and the CPU.  The same training code runs under each.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import NamedTuple

from tfimgopt._platform import TPU_ENV_VARS, tpu_hints
from tfimgopt.compat import keras, tf
from tfimgopt.distribute._names import PRECISIONS, STRATEGIES, list_strategies  # noqa: F401
from tfimgopt.errors import ConfigError, StrategyError, received

log = logging.getLogger("tfimgopt.distribute")

LR_SCALING = (None, "linear", "sqrt")



def _say(message: str, verbose: bool) -> None:
    log.info(message)
    if verbose:
        print(f"[tfimgopt.distribute] {message}", flush=True)


def _connect_tpu(tpu: str | None) -> tf.distribute.Strategy:
    name = tpu
    if name is None:
        name = os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_ADDRESS")
        if name and os.environ.get("COLAB_TPU_ADDR") == name and not name.startswith("grpc://"):
            name = f"grpc://{name}"
        name = name or "local"  # TPU VMs (today's Colab TPU runtime) host the chips locally
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
    if name != "local":
        tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _check_tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise StrategyError(
            "kind='multi_worker' needs the TF_CONFIG environment variable describing the cluster, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}. '
            "Received: TF_CONFIG unset"
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        if not isinstance(workers, list) or not workers or task["type"] not in ("worker", "chief"):
            raise ValueError
        if not 0 <= int(task["index"]) < len(workers) + 1:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise StrategyError(
            "TF_CONFIG must be JSON with cluster.worker (a list of host:port) and task.type/task.index. "
            f"Received: TF_CONFIG={raw!r}"
        ) from None
    return config


def create_strategy(
    kind: str = "auto",
    *,
    tpu: str | None = None,
    devices: list[str] | None = None,
    fallback: bool = False,
    verbose: bool = True,
) -> tf.distribute.Strategy:
    """Creates a distribution strategy by name.

    Args:
        kind: One of `list_strategies()`:
            `"auto"`: a TPU if one is announced (argument, `TPU_NAME`/`COLAB_TPU_ADDR`,
            TPU VM devices), else `MirroredStrategy` over 2+ GPUs, else one GPU, else
            the default CPU strategy; it says what it found and chose.
            `"tpu"`: `TPUClusterResolver` (`"local"` on TPU VMs, or `tpu`/environment),
            connect, initialize, `TPUStrategy`.
            `"mirrored"`: `MirroredStrategy` over `devices` (default: all GPUs).
            `"multi_worker"`: `MultiWorkerMirroredStrategy` from `TF_CONFIG`.
            `"one_device"`: `OneDeviceStrategy` on `devices[0]` (default GPU:0 or CPU:0).
            `"default"`: TensorFlow's default strategy.
        tpu: TPU name or `grpc://` address; `"local"` on a TPU VM.
        devices: Devices for `"mirrored"`/`"one_device"`, e.g. `["/gpu:0", "/gpu:1"]`.
        fallback: If a TPU was asked for and none is found, fall back to `"auto"`'s
            choice (with a warning) instead of raising.
        verbose: Print the choice (it is logged either way).

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ConfigError: for an unknown kind.
        StrategyError: when the TPU or cluster asked for is not there, saying what was tried.

    Example:
        >>> from tfimgopt.distribute import create_strategy
        >>> from tfimgopt.models import create_model
        >>> strategy = create_strategy("auto", verbose=False)
        >>> with strategy.scope():
        ...     model = create_model("tiny_cnn", (16, 16, 1), 10)
    """
    if kind not in STRATEGIES:
        raise ConfigError(f"Unknown strategy kind. Valid kinds: {STRATEGIES}. {received('kind', kind)}")
    if kind == "auto":
        hints = tpu_hints(tpu)
        if hints:
            _say(f"TPU announced by {', '.join(hints)}; connecting", verbose)
            try:
                strategy = _connect_tpu(tpu)
                _say(f"chose TPUStrategy with {strategy.num_replicas_in_sync} replicas", verbose)
                return strategy
            except Exception as err:  # noqa: BLE001 - any failure means "no usable TPU"
                _say(f"TPU not usable ({type(err).__name__}: {err}); trying GPUs", verbose)
        elif os.environ.get("TPU_LOAD_LIBRARY") == "0":
            _say("a TPU build of TensorFlow is installed but no TPU is visible, so libtpu was not loaded "
                 "(TPU_LOAD_LIBRARY=0); `tfimgopt doctor` says how to fix the install", verbose)
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) >= 2:
            strategy = tf.distribute.MirroredStrategy([g.name for g in gpus])
            _say(f"found {len(gpus)} GPUs; chose MirroredStrategy", verbose)
        elif gpus:
            strategy = tf.distribute.OneDeviceStrategy(gpus[0].name)
            _say(f"found 1 GPU ({gpus[0].name}); chose OneDeviceStrategy", verbose)
        else:
            strategy = tf.distribute.get_strategy()
            _say("found no TPU and no GPU; chose the default strategy on the CPU", verbose)
        return strategy
    if kind == "tpu":
        hints = tpu_hints(tpu) or ["tpu='local' (TPU VM)"]
        try:
            strategy = _connect_tpu(tpu)
        except Exception as err:  # noqa: BLE001
            message = (
                f"No TPU found. Tried: {', '.join(hints)}; checked ${', $'.join(TPU_ENV_VARS)} and /dev/accel*. "
                f"TensorFlow said: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
                "On Colab pick a TPU runtime; elsewhere pass tpu='name-or-grpc-address'. "
                "Pass fallback=True to use the best other device instead."
            )
            if not fallback:
                raise StrategyError(message) from None
            log.warning(message)
            if verbose:
                print(f"[tfimgopt.distribute] warning: {message}", flush=True)
            return create_strategy("auto", verbose=verbose)
        _say(f"chose TPUStrategy with {strategy.num_replicas_in_sync} replicas", verbose)
        return strategy
    if kind == "multi_worker":
        config = _check_tf_config()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _say(
            f"chose MultiWorkerMirroredStrategy: {len(config['cluster']['worker'])} workers, "
            f"this is {config['task']['type']} {config['task']['index']}", verbose,
        )
        return strategy
    if kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy(devices)
        _say(f"chose MirroredStrategy over {list(strategy.extended.worker_devices)}", verbose)
        return strategy
    if kind == "one_device":
        device = (devices or [None])[0] or ("/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0")
        _say(f"chose OneDeviceStrategy on {device}", verbose)
        return tf.distribute.OneDeviceStrategy(device)
    _say("chose the default strategy", verbose)
    return tf.distribute.get_strategy()


def strategy_kind(strategy: tf.distribute.Strategy | None = None) -> str:
    """`"tpu"`, `"gpu"` or `"cpu"`: the kind of device the strategy computes on."""
    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")[:1]]
    return "gpu" if any("GPU" in str(d).upper() for d in devices) else "cpu"


def choose_precision(policy: str = "auto", strategy: tf.distribute.Strategy | None = None) -> str:
    """The Keras precision policy for a strategy: `"auto"` gives mixed_bfloat16 on TPUs,
    mixed_float16 on GPUs and float32 on CPUs; other values are checked and returned."""
    if policy not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}. {received('precision', policy)}")
    if policy != "auto":
        return policy
    return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16", "cpu": "float32"}[strategy_kind(strategy)]


def set_precision(policy: str = "auto", strategy: tf.distribute.Strategy | None = None) -> str:
    """Sets Keras's global precision policy (see `choose_precision`) and returns its name.

    Models built afterwards compute in the policy's dtype; tfimgopt's zoo keeps the
    final `classifier` layer in float32 so logits and losses stay float32.
    """
    name = choose_precision(policy, strategy)
    keras.mixed_precision.set_global_policy(name)
    return name


class BatchPlan(NamedTuple):
    """Batch sizes and learning rate for a strategy."""

    global_batch: int
    per_replica: int
    replicas: int
    learning_rate: float


def plan_batches(
    strategy: tf.distribute.Strategy | None = None,
    *,
    per_replica: int | None = None,
    global_batch: int | None = None,
    learning_rate: float = 1e-3,
    base_batch: int | None = None,
    scaling: str | None = None,
) -> BatchPlan:
    """Works out the global batch (what `tf.data` batches) from either batch size.

    Args:
        strategy: The strategy (replica count); default: the current one.
        per_replica: Examples per replica per step; global = per_replica * replicas.
        global_batch: Examples per step over all replicas (must divide evenly).
        learning_rate: Learning rate tuned for `base_batch`.
        base_batch: The batch size `learning_rate` was tuned for (default: the global batch,
            i.e. no scaling).
        scaling: `None`, `"linear"` (Goyal et al. 2017) or `"sqrt"` learning-rate scaling.

    Returns:
        A `BatchPlan(global_batch, per_replica, replicas, learning_rate)`.

    Raises:
        ConfigError: if both or neither batch sizes are given, or they do not divide.
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if (per_replica is None) == (global_batch is None):
        raise ConfigError(
            f"Pass exactly one of per_replica and global_batch. Received: per_replica={per_replica}, "
            f"global_batch={global_batch}"
        )
    for name, value in (("per_replica", per_replica), ("global_batch", global_batch)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{name} must be a positive int. {received(name, value)}")
    if global_batch is None:
        global_batch = per_replica * replicas
    elif global_batch % replicas:
        raise ConfigError(
            f"global_batch must be a multiple of the {replicas} replicas so each gets the same share. "
            f"{received('global_batch', global_batch)}"
        )
    if scaling not in LR_SCALING:
        raise ConfigError(f"scaling must be one of {LR_SCALING}. {received('scaling', scaling)}")
    ratio = global_batch / (base_batch or global_batch)
    lr = learning_rate * {None: 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling]
    return BatchPlan(global_batch, global_batch // replicas, replicas, lr)


def needs_static_shapes(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True on TPUs, whose compiled programs need `drop_remainder=True` batches."""
    return strategy_kind(strategy) == "tpu"
