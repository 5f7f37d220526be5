"""The `--precision` flag: Keras's global dtype policy, set before any layer is built.

Under a mixed policy layers compute in bfloat16 or float16 and keep float32 variables; CARL's
assignment softmax and every loss term still compute in float32 (`CARL.assign`,
`carl_tf.losses`). `mixed_float16` also needs loss scaling, which `compile` adds by wrapping
the optimizer in `keras.optimizers.LossScaleOptimizer` and `CARL.train_step` applies through
`optimizer.scale_loss`. `mixed_bfloat16` needs none: bfloat16 has float32's exponent range.
"""

import keras

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def set_precision(name: str) -> keras.DTypePolicy:
    """Sets the global dtype policy; call it before building the model.

    Args:
        name: One of `PRECISIONS`.

    Returns:
        The policy now in effect.

    Raises:
        ValueError: If `name` is not one of `PRECISIONS`.
    """
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_dtype_policy(name)
    return keras.mixed_precision.dtype_policy()
