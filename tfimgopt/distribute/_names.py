"""The strategy and precision names, without TensorFlow (the CLI's help lists them at once)."""

STRATEGIES = ("auto", "tpu", "mirrored", "multi_worker", "one_device", "default")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def list_strategies() -> tuple[str, ...]:
    """Kinds accepted by `create_strategy`."""
    return STRATEGIES
