"""Structured (channel) pruning: dependency groups, exact removal of zero channels, importance,
reported counts, iterative fine-tuning, and clear refusals."""

import numpy as np
import pytest

from tests.helpers import subclassed_model
from tfimgopt.compat import keras, tf
from tfimgopt.compress.channels import (
    ChannelGraph,
    channel_importance,
    count_flops,
    prune_channels,
    prune_channels_and_finetune,
)
from tfimgopt.errors import ConfigError
from tfimgopt.models import create_model


def _images(shape, n=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


@pytest.fixture(scope="module")
def mobilenet_v2():
    keras.utils.set_random_seed(0)
    return create_model("mobilenet_v2", (32, 32, 3), 10, alpha=0.35)


@pytest.mark.slow
def test_mobilenet_v2_groups_follow_depthwise_convolutions_and_residual_adds(mobilenet_v2):
    graph = ChannelGraph(mobilenet_v2)
    expand = graph.group_of("block_1_expand")  # expand -> BN -> ReLU6 -> depthwise -> BN -> ReLU6 -> project
    assert expand.producers == ["block_1_expand"] and expand.prunable
    assert expand.channelwise == ["block_1_expand_BN", "block_1_depthwise", "block_1_depthwise_BN"]
    assert expand.consumers == ["block_1_depthwise", "block_1_project"]
    # block_2_add and block_2's input join block_1's and block_2's projections: one group.
    residual = graph.group_of("block_2_project")
    assert residual is graph.group_of("block_1_project")
    assert residual.producers == ["block_1_project", "block_2_project"]
    assert {"block_1_project_BN", "block_2_project_BN"} <= set(residual.channelwise)
    assert residual.consumers == ["block_2_expand", "block_3_expand"]
    assert graph.group_of("block_5_project") is graph.group_of("block_3_project")  # two adds, three producers
    assert graph.group_of("block_5_project").producers == ["block_3_project", "block_4_project", "block_5_project"]
    classifier = graph.group_of("classifier")
    assert classifier.locked == "reaches a model output" and not classifier.prunable
    assert graph.group_of("Conv_1").consumers == ["classifier"]  # through GlobalAveragePooling2D
    assert graph.group_of("image").locked == "a model input"


@pytest.mark.slow
def test_resnet50_groups_join_every_branch_of_a_residual_stage():
    graph = ChannelGraph(create_model("resnet50", (32, 32, 3), 10))
    stage = graph.group_of("conv2_block1_0_conv")  # the projection shortcut
    assert stage.producers == ["conv2_block1_0_conv", "conv2_block1_3_conv", "conv2_block2_3_conv",
                               "conv2_block3_3_conv"]
    assert sorted(stage.consumers) == ["conv2_block2_1_conv", "conv2_block3_1_conv", "conv3_block1_0_conv",
                                       "conv3_block1_1_conv"]
    inner = graph.group_of("conv2_block1_1_conv")
    assert inner.producers == ["conv2_block1_1_conv"] and inner.channelwise == ["conv2_block1_1_bn"]
    assert inner.consumers == ["conv2_block1_2_conv"]
    assert len({g.index for g in graph.prunable()}) == len(graph.prunable())


def _zero_some_channels(model, graph, share=0.3, seed=0):
    """Zeroes `share` of the channels of every prunable group (filters, biases, BN scale and
    offset): exactly the channels whose removal cannot change the outputs."""
    rng = np.random.default_rng(seed)
    removed = 0
    for group in graph.prunable():
        dead = rng.choice(group.size, max(1, int(group.size * share)), replace=False)
        removed += len(dead)
        for name in group.producers:
            layer = model.get_layer(name)
            weights = layer.get_weights()
            for w in weights:
                w[..., dead] = 0
            layer.set_weights(weights)
        for name in group.channelwise:
            layer = model.get_layer(name)
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.gamma.assign(tf.tensor_scatter_nd_update(layer.gamma, dead[:, None], np.zeros(len(dead))))
                layer.beta.assign(tf.tensor_scatter_nd_update(layer.beta, dead[:, None], np.zeros(len(dead))))
    return removed


def _concat_model():
    inputs = keras.Input((12, 12, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(5, 1, activation="relu", name="b")(inputs)
    x = keras.layers.Concatenate(name="cat")([a, b])
    x = keras.layers.Conv2D(7, 3, strides=2, name="c")(x)
    x = keras.layers.BatchNormalization(name="c_bn")(x)
    x = keras.layers.ReLU(name="c_relu")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(9, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="classifier")(x))


@pytest.mark.slow
@pytest.mark.parametrize("build", [
    lambda: create_model("small_cnn", (16, 16, 1), 10, width=8, dense=32),  # Sequential, Flatten -> Dense
    lambda: create_model("mobilenet_v2", (32, 32, 3), 10, alpha=0.35),  # depthwise, residual adds
    lambda: create_model("mobilenet_v3_small", (32, 32, 3), 10, alpha=0.75),  # squeeze-excite Multiply
    _concat_model,  # Concatenate offsets, Flatten of a BN'd conv
], ids=["small_cnn", "mobilenet_v2", "mobilenet_v3_small", "concatenate"])
def test_removing_exactly_zero_channels_leaves_the_outputs_unchanged(build):
    keras.utils.set_random_seed(1)
    model = build()
    for layer in model.layers:  # statistics away from the defaults, so BN is not an identity
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.random.default_rng(2).normal(0, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(np.random.default_rng(3).uniform(0.5, 2, layer.moving_variance.shape))
    graph = ChannelGraph(model)
    removed = _zero_some_channels(model, graph)
    x = _images(model.input_shape[1:])
    expected = model(x, training=False).numpy()
    result = prune_channels(model, exact_zero_only=True)
    before = sum(g.size for g in graph.prunable())
    after = sum(g.size for g in ChannelGraph(result.model).groups if g.producers and not g.locked)
    assert before - after == removed
    assert result.report["params_after"] < result.report["params_before"]
    np.testing.assert_allclose(result.model(x, training=False).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_the_reported_parameters_and_flops_are_those_of_the_pruned_model():
    model = create_model("small_cnn", (16, 16, 1), 10, width=8, dense=32)
    result = prune_channels(model, 0.5)
    pruned = result.model
    assert result.report["channels"] == {"conv1": [8, 4], "conv2": [8, 4], "conv3": [16, 8], "conv4": [16, 8],
                                         "fc": [32, 16]}
    assert result.report["params_before"] == model.count_params() == 12706
    assert result.report["params_after"] == pruned.count_params()
    # By hand: 3x3 convs at 16x16, 16x16, 8x8, 8x8; Flatten 4x4x8 -> fc 16 -> classifier 10.
    macs = (16 * 16 * 9 * 1 * 4 + 16 * 16 * 9 * 4 * 4 + 8 * 8 * 9 * 4 * 8 + 8 * 8 * 9 * 8 * 8
            + 4 * 4 * 8 * 16 + 16 * 10)
    assert result.report["flops_after"] == count_flops(pruned) == macs
    params = (9 * 4 + 4) + (9 * 4 * 4 + 4) + (9 * 4 * 8 + 8) + (9 * 8 * 8 + 8) + (128 * 16 + 16) + (16 * 10 + 10)
    assert pruned.count_params() == params
    assert pruned.get_layer("fc").kernel.shape == (128, 16)


def test_flops_count_depthwise_convolutions():
    inputs = keras.Input((10, 10, 4))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inputs)
    x = keras.layers.Conv2D(6, 1, name="pw")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    assert count_flops(model) == 10 * 10 * 9 * 4 + 10 * 10 * 4 * 6 + 6 * 3


def test_the_criteria_keep_the_strongest_channels():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="classifier")(x))
    kernel = np.ones((3, 3, 2, 4), np.float32) * np.array([1.0, 4.0, 2.0, 3.0], np.float32)  # L1: 1 < 2 < 3 < 4
    model.get_layer("conv").set_weights([kernel, np.zeros(4, np.float32)])
    model.get_layer("bn").gamma.assign([4.0, 1.0, 3.0, 2.0])  # gamma ranks them otherwise
    graph = ChannelGraph(model)
    np.testing.assert_allclose(channel_importance(graph, graph.group_of("conv"), "l1"), [0.4, 1.6, 0.8, 1.2])
    assert prune_channels(model, 0.5, criterion="l1").kept["conv"] == [1, 3]
    assert prune_channels(model, 0.5, criterion="bn_gamma").kept["conv"] == [0, 2]


def test_global_scope_prunes_more_where_channels_matter_less():
    inputs = keras.Input((6, 6, 1))
    a = keras.layers.Conv2D(4, 3, padding="same", name="even")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="skewed")(a)
    model = keras.Model(inputs, keras.layers.Dense(2, name="classifier")(keras.layers.Flatten()(b)))
    model.get_layer("even").set_weights([np.ones((3, 3, 1, 4), np.float32), np.zeros(4, np.float32)])
    skewed = np.ones((3, 3, 4, 4), np.float32) * np.array([10.0, 0.1, 0.1, 0.1], np.float32)
    model.get_layer("skewed").set_weights([skewed, np.zeros(4, np.float32)])
    local = prune_channels(model, 0.5, scope="local").report["channels"]
    assert local == {"even": [4, 2], "skewed": [4, 2]}
    glob = prune_channels(model, 0.375, scope="global").report["channels"]  # 3 of 8 channels, the weakest
    assert glob == {"even": [4, 4], "skewed": [4, 1]}
    assert prune_channels(model, 0.5, round_to=4).report["channels"] == {"even": [4, 4], "skewed": [4, 4]}
    assert prune_channels(model, 0.9, min_channels=2).report["channels"] == {"even": [4, 2], "skewed": [4, 2]}
    assert prune_channels(model, 0.5, keep=["even"]).report["channels"] == {"skewed": [4, 2]}


@pytest.mark.slow
def test_prune_and_finetune_in_rounds_resumes_and_runs_under_a_strategy(tmp_path, mirrored):
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 255, (64, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    keras.utils.set_random_seed(0)
    model = create_model("small_cnn", (8, 8, 1), 3, width=8, dense=16)
    result = prune_channels_and_finetune(model, data, ratio=0.5, steps=2, epochs=1, work_dir=str(tmp_path), verbose=0)
    assert result.report["channels"]["conv1"] == [8, 4] and result.report["channels"]["fc"] == [16, 8]
    assert result.report["params_after"] == result.model.count_params() < model.count_params()
    assert (tmp_path / "round1.keras").is_file() and (tmp_path / "round2.keras").is_file()
    round1 = keras.models.load_model(tmp_path / "round1.keras")
    assert round1.get_layer("conv1").filters == 6  # 8 * (1 - 0.25)
    again = prune_channels_and_finetune(model, data, ratio=0.5, steps=2, epochs=1, work_dir=str(tmp_path),
                                        verbose=0)  # finished rounds are loaded, not retrained
    for a, b in zip(result.model.get_weights(), again.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    under = prune_channels_and_finetune(lambda: create_model("small_cnn", (8, 8, 1), 3, width=8, dense=16), data,
                                        ratio=0.5, steps=1, epochs=1, strategy=mirrored, verbose=0)
    assert under.report["channels"]["conv2"] == [8, 4]


def _lambda_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Lambda(lambda t: t * 2, name="double")(x)
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))


def _shared_model():
    inputs = keras.Input((8, 8, 4))
    conv = keras.layers.Conv2D(4, 1, name="shared")
    return keras.Model(inputs, conv(conv(inputs)))


def _reshape_model():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(4, 1, name="conv")(inputs)
    return keras.Model(inputs, keras.layers.Reshape((8, 8), name="mix")(x))


@pytest.mark.parametrize("build, message", [
    (_lambda_model, r"no rule for layer 'double' \(a Lambda layer\).*Received: layer 'double' of class Lambda"),
    (_shared_model, r"layer used more than once \(shared layer 'shared'"),
    (_reshape_model, r"Reshape layers that keep the channel axis.*'mix' maps \(None, 4, 4, 4\) to \(None, 8, 8\)"),
    (subclassed_model, r"needs a Sequential or functional tf_keras model.*Received: model of type Subclassed"),
])
def test_what_it_cannot_handle_is_refused_naming_the_layer(build, message):
    with pytest.raises(ConfigError, match=message):
        prune_channels(build(), 0.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"ratio": 1.0}, r"ratio must be a number in \[0, 1\)"),
    ({"criterion": "l2"}, r"criterion must be one of \('l1', 'bn_gamma'\)"),
    ({"scope": "layer"}, r"scope must be one of \('local', 'global'\)"),
    ({"round_to": 0}, r"round_to must be an int >= 1"),
    ({"keep": ["nope"]}, r"keep names a layer the model does not have.*Received: keep='nope'"),
])
def test_bad_settings_are_refused(kwargs, message):
    model = create_model("small_cnn", (8, 8, 1), 3, width=4, dense=8)
    with pytest.raises(ConfigError, match=message):
        prune_channels(model, **{"ratio": 0.5, **kwargs})
