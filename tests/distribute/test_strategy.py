"""Strategy factory, precision, batch plans, and every training path under two replicas."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfimgopt.compat import keras, tf
from tfimgopt.distribute import (
    StrategyError,
    choose_precision,
    create_strategy,
    list_strategies,
    plan_batches,
    set_precision,
    strategy_kind,
)
from tfimgopt.errors import ConfigError


def test_auto_on_this_machine_is_the_cpu_and_says_so(capsys):
    strategy = create_strategy("auto")
    assert strategy is tf.distribute.get_strategy()
    assert strategy_kind(strategy) == "cpu"
    assert "found no TPU and no GPU; chose the default strategy on the CPU" in capsys.readouterr().out


def test_tpu_without_a_tpu_raises_saying_what_was_tried(capsys):
    with pytest.raises(StrategyError, match=r"No TPU found\. Tried: tpu='local'.*fallback=True"):
        create_strategy("tpu")
    strategy = create_strategy("tpu", fallback=True)
    assert strategy_kind(strategy) == "cpu"
    assert "warning: No TPU found" in capsys.readouterr().out


def test_unknown_kind_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"Valid kinds: \('auto', 'tpu', .*Received: kind='gpu'"):
        create_strategy("gpu")
    assert set(list_strategies()) == {"auto", "tpu", "mirrored", "multi_worker", "one_device", "default"}


def test_multi_worker_needs_a_valid_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match="TF_CONFIG unset"):
        create_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(StrategyError, match="Received: TF_CONFIG="):
        create_strategy("multi_worker")


def test_precision_follows_the_device(mirrored):
    assert choose_precision("auto") == "float32"
    assert choose_precision("auto", mirrored) == "float32"
    assert choose_precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ConfigError, match="Received: precision='fp8'"):
        choose_precision("fp8")


def test_mixed_bfloat16_model_keeps_float32_logits_and_trains():
    from tfimgopt.models import create_model

    try:
        assert set_precision("mixed_bfloat16") == "mixed_bfloat16"
        model = create_model("tiny_cnn", (8, 8, 1), 3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[-2].compute_dtype == "bfloat16" or any(
        layer.compute_dtype == "bfloat16" for layer in model.layers
    )
    assert model.output.dtype == tf.float32
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(np.random.rand(8, 8, 8, 1), np.arange(8) % 3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_batch_plan(mirrored):
    plan = plan_batches(mirrored, per_replica=8, learning_rate=0.1, base_batch=8, scaling="linear")
    assert plan == (16, 8, 2, pytest.approx(0.2))
    assert plan_batches(mirrored, global_batch=32, learning_rate=0.1, base_batch=8, scaling="sqrt").learning_rate == (
        pytest.approx(0.2))
    with pytest.raises(ConfigError, match="multiple of the 2 replicas.*Received: global_batch=15"):
        plan_batches(mirrored, global_batch=15)
    with pytest.raises(ConfigError, match="exactly one"):
        plan_batches(mirrored)


def _batch():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (8, 8, 8, 1)).astype(np.float32), np.arange(8) % 3


def _one_step(strategy, kind, jit_compile=False):
    from tfimgopt.compress import prune, quantize_aware
    from tfimgopt.models import create_model

    x, y = _batch()
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = create_model("small_cnn", (8, 8, 1), 3, width=4, dense=8, dropout=0.0)
        callbacks = []
        if kind == "pruning":
            pruned = prune(model, 0.5, begin_step=0, end_step=1, frequency=1)
            model, callbacks = pruned.model, list(pruned.callbacks)
        elif kind == "qat":
            model = quantize_aware(model)
        model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=jit_compile)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model.fit(ds, epochs=1, verbose=0, callbacks=callbacks)
    return [w.numpy() for w in model.trainable_weights]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classifier", "pruning"])
def test_two_replicas_give_the_single_device_update(mirrored, kind):
    one = _one_step(tf.distribute.get_strategy(), kind)
    two = _one_step(mirrored, kind)
    assert len(one) == len(two)
    moved = False
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    keras.utils.set_random_seed(0)
    moved = any(not np.allclose(a, b) for a, b in zip(one, _initial_weights(), strict=True))
    assert moved


def _initial_weights():
    from tfimgopt.models import create_model

    keras.utils.set_random_seed(0)
    model = create_model("small_cnn", (8, 8, 1), 3, width=4, dense=8, dropout=0.0)
    return [w.numpy() for w in model.trainable_weights]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classifier", "pruning", "qat"])
def test_train_steps_compile_with_xla(kind):
    plain = _one_step(tf.distribute.get_strategy(), kind)
    xla = _one_step(tf.distribute.get_strategy(), kind, jit_compile=True)
    # Fake quantization rounds: XLA's different summation order can move a value across
    # a rounding boundary, which shifts that weight's gradient by one quantization step.
    atol = 2e-3 if kind == "qat" else 1e-4
    for a, b in zip(plain, xla, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=atol)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


WORKER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from tfimgopt.compat import keras, tf
    from tfimgopt.distribute import create_strategy
    from tfimgopt.models import create_model
    from tfimgopt.training import train

    strategy = create_strategy("multi_worker")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, 8, 8, 1)).astype("float32")
    y = np.arange(64) % 3
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    def build():
        keras.utils.set_random_seed(0)
        return create_model("tiny_cnn", (8, 8, 1), 3)

    history = train(build, ds, epochs=2, strategy=strategy, optimizer="sgd", learning_rate=0.05, verbose=0)
    np.savez(sys.argv[1], *[w.numpy() for w in history.model.trainable_weights],
             loss=np.array(history.history["loss"]))
""")


@pytest.mark.slow
def test_multi_worker_two_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / f"w{index}.npz")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert "chose MultiWorkerMirroredStrategy: 2 workers" in outputs[0]
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(w0.files) > 1 and w0.files == w1.files
    for name in w0.files:
        np.testing.assert_array_equal(w0[name], w1[name])
    assert w0["loss"][1] < w0["loss"][0]


TRAINER = textwrap.dedent("""
    import sys, time
    from tfimgopt.compat import keras
    from tfimgopt.data import build_pipeline, load_dataset
    from tfimgopt.models import create_model
    from tfimgopt.training import train

    class Announce(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            print(f"EPOCH_BEGIN {epoch}", flush=True)
        def on_epoch_end(self, epoch, logs=None):
            print(f"EPOCH_END {epoch}", flush=True)
            time.sleep(1.0)  # room for the kill to land between epochs or in the next one

    s = load_dataset("digits", image_size=8)
    keras.utils.set_random_seed(0)
    model = create_model("tiny_cnn", s.info.image_shape, s.info.num_classes)
    train(model, build_pipeline(s.train, 64, training=True), build_pipeline(s.val, 64), epochs=4,
          work_dir=sys.argv[1], callbacks=[Announce()], verbose=0)
    print("FINISHED", flush=True)
""")


@pytest.mark.slow
def test_sigkill_mid_training_then_restart_resumes_from_the_backup(tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, str(script), str(work)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line.strip())
        if line.startswith("EPOCH_END 1"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and "FINISHED" not in seen
    done = subprocess.run([sys.executable, str(script), str(work)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    begun = [line for line in done.stdout.splitlines() if line.startswith("EPOCH_BEGIN")]
    assert begun == ["EPOCH_BEGIN 2", "EPOCH_BEGIN 3"] and "FINISHED" in done.stdout
    rows = (work / "history.csv").read_text().strip().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [0, 1, 2, 3]
    assert keras.models.load_model(work / "best.keras").output_shape == (None, 10)


@pytest.mark.slow
def test_qat_finetune_builds_and_trains_under_two_replicas(mirrored, digits16):
    from tfimgopt.compress import quantize_and_finetune
    from tfimgopt.data import build_pipeline
    from tfimgopt.models import create_model

    keras.utils.set_random_seed(0)
    model = create_model("tiny_cnn", digits16.info.image_shape, 10)
    train_ds = build_pipeline(digits16.train.take(64), 16, training=True)
    qat, _ = quantize_and_finetune(model, train_ds, epochs=1, strategy=mirrored, learning_rate=1e-3, verbose=0)
    assert any(type(layer).__name__ == "QuantizeWrapperV2" for layer in qat.layers)
    assert all(v.device.endswith("CPU:0") for v in qat.trainable_weights)  # mirrored primaries
    assert any(type(v).__name__ == "MirroredVariable" for v in qat.trainable_weights)
