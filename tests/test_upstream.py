"""The workarounds in `tfimgopt._upstream`: each still needed, on a verified version."""

import pytest

from tfimgopt import _upstream


@pytest.mark.parametrize("workaround", sorted(_upstream.VERIFIED))
def test_each_workaround_runs_on_a_version_it_was_verified_on(workaround):
    package, versions = _upstream.VERIFIED[workaround]
    version = _upstream.installed(package)
    assert version is not None and version.startswith(versions), (
        f"{package} {version} is installed; {workaround} was verified on {versions}: re-run its probe and "
        "extend VERIFIED (or drop the workaround)")


@pytest.mark.slow  # a fresh interpreter importing TFMOT (~8 s)
def test_tfmot_still_sets_the_legacy_keras_variable_so_import_tfmot_is_still_needed():
    assert _upstream.tfmot_still_sets_legacy_keras(), "TFMOT no longer sets TF_USE_LEGACY_KERAS: drop import_tfmot"


def test_the_name_counters_are_still_where_name_counters_reads_them():
    assert _upstream.tf_keras_name_counters_reachable()
    counters = _upstream.name_counters()
    before = counters[("", "conv2d")]
    from tfimgopt.compat import keras

    keras.layers.Conv2D(1, 1)  # an automatic name moves the counter we read
    assert _upstream.name_counters()[("", "conv2d")] == before + 1
