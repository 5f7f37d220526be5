"""The `--precision` flag: Keras's global dtype policy, set before any layer is built.

Under a mixed policy layers compute in bfloat16 or float16 and keep float32 variables; CARL's
assignment softmax and every loss term still compute in float32 (`CARL.assign`,
`carl_tf.losses`). `mixed_float16` also needs loss scaling, which `compile` adds by wrapping
the optimizer in `keras.optimizers.LossScaleOptimizer` and `CARL.train_step` applies through
`optimizer.scale_loss`. `mixed_bfloat16` needs none: bfloat16 has float32's exponent range.

`auto` (the presets' default) picks the fastest policy measured for the hardware at hand
(docs/benchmarks.md): `mixed_bfloat16` on a TPU and on a CPU-only machine whose CPU computes
bfloat16 natively (x86 AVX512_BF16 or AMX), `float32` everywhere else, GPUs included (pass a
mixed policy yourself there; it was not measured here).
"""

import os

import keras
import tensorflow as tf

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
PRECISIONS = ("auto",) + POLICIES
# /proc/cpuinfo flags of x86 CPUs with bfloat16 dot products, which oneDNN uses for bfloat16.
NATIVE_BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags Linux reports; empty where there is no such file (macOS, Windows)."""
    if not os.path.exists(cpuinfo_path):
        return frozenset()
    with open(cpuinfo_path) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return frozenset(value.split())
    return frozenset()


def resolve_precision(
    name: str,
    *,
    strategy: str = "auto",
    num_gpus: int | None = None,
    flags: frozenset[str] | None = None,
) -> str:
    """The Keras policy name `--precision=name` stands for: `name` itself unless it is `auto`.

    Args:
        name: One of `PRECISIONS`.
        strategy: The run's `--strategy`; `tpu` makes `auto` mean `mixed_bfloat16`.
        num_gpus: Visible GPUs; None counts them.
        flags: The CPU's feature flags; None reads them with `cpu_flags`.

    Returns:
        One of `POLICIES`.

    Raises:
        ValueError: If `name` is not one of `PRECISIONS`.
    """
    if name not in PRECISIONS:
        raise ValueError(
            f"unknown precision {name!r}; choose --precision from {', '.join(PRECISIONS)}"
        )
    if name != "auto":
        return name
    if strategy == "tpu":
        return "mixed_bfloat16"
    if num_gpus is None:
        num_gpus = len(tf.config.list_physical_devices("GPU"))
    if num_gpus:
        return "float32"
    native_bfloat16 = NATIVE_BFLOAT16_CPU_FLAGS & (cpu_flags() if flags is None else flags)
    return "mixed_bfloat16" if native_bfloat16 else "float32"


def set_precision(name: str, *, strategy: str = "auto") -> keras.DTypePolicy:
    """Sets the global dtype policy (resolving `auto`); call it before building the model.

    Args:
        name: One of `PRECISIONS`.
        strategy: The run's `--strategy`, which `auto` takes into account.

    Returns:
        The policy now in effect.

    Raises:
        ValueError: If `name` is not one of `PRECISIONS`.
    """
    keras.mixed_precision.set_dtype_policy(resolve_precision(name, strategy=strategy))
    return keras.mixed_precision.dtype_policy()
