"""The `--precision` flag: Keras's global dtype policy, set before any layer is built.

Under a mixed policy layers compute in bfloat16 or float16 and keep float32 variables; CARL's
assignment softmax and every loss term still compute in float32 (`CARL.assign`,
`carl_tf.losses`). `mixed_float16` also needs loss scaling, which `compile` adds by wrapping
the optimizer in `keras.optimizers.LossScaleOptimizer` and `CARL.train_step` applies through
`optimizer.scale_loss`. `mixed_bfloat16` needs none: bfloat16 has float32's exponent range.

`auto` (the presets' default) picks the policy the hardware computes fastest:

* a TPU: `mixed_bfloat16`, its native type;
* NVIDIA GPUs, by the lowest compute capability among them: 8.0 and up (Ampere, Hopper)
  `mixed_bfloat16`, whose tensor cores run bfloat16 and which needs no loss scaling; 7.x (Volta,
  Turing) `mixed_float16`, the tensor cores' type there (TensorFlow's and Keras's mixed-precision
  guides: speed-ups need compute capability 7.0 or higher); below 7.0 `float32`, where 16-bit
  types bring no speed;
* a CPU-only machine whose CPU computes bfloat16 natively (x86 AVX512_BF16 or AMX):
  `mixed_bfloat16` (1.6x float32 on this project's CPU, docs/benchmarks.md); else `float32`.

Under the TensorFlow backend TensorFlow lists the devices; under JAX, JAX does (its GPU
devices carry their `compute_capability`), so TensorFlow need not be installed. The resolved
policy is logged and recorded; `--precision=float32` (or any policy) overrides it.
"""

import os

import keras

from carl_tf.run.choices import POLICIES, PRECISIONS  # noqa: F401  (PRECISIONS re-exported)

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


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """`(major, minor)` compute capability of every visible GPU ((0, 0) where it is not known).

    The backend's own framework lists the GPUs: JAX under the JAX backend, else TensorFlow.
    """
    if keras.backend.backend() == "jax":
        import jax

        return [
            _capability(getattr(device, "compute_capability", None))
            for device in jax.devices()
            if device.platform == "gpu"
        ]
    import tensorflow as tf  # only under the TensorFlow backend

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability") or (0, 0)))
    return capabilities


def _capability(text: str | None) -> tuple[int, int]:
    """JAX's `compute_capability` string ("9.0") as `(9, 0)`; (0, 0) when absent or odd."""
    major, _, minor = (text or "").partition(".")
    return (int(major), int(minor or 0)) if major.isdigit() and minor.isdigit() else (0, 0)


def on_tpu() -> bool:
    """Whether the JAX backend computes on TPUs (there a TPU is the default device, no strategy)."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "tpu"


def gpu_policy(capabilities: list[tuple[int, int]]) -> str:
    """The mixed policy the slowest of these GPUs runs on tensor cores, else float32."""
    lowest = min(capabilities)
    if lowest >= (8, 0):
        return "mixed_bfloat16"
    if lowest >= (7, 0):
        return "mixed_float16"
    return "float32"


def resolve_precision(
    name: str,
    *,
    strategy: str = "auto",
    gpus: list[tuple[int, int]] | None = None,
    flags: frozenset[str] | None = None,
) -> str:
    """The Keras policy name `--precision=name` stands for: `name` itself unless it is `auto`.

    Args:
        name: One of `PRECISIONS`.
        strategy: The run's `--strategy`; `tpu` (or JAX computing on TPUs) makes `auto` mean
            `mixed_bfloat16`.
        gpus: Compute capabilities of the visible GPUs; None asks the backend's framework.
        flags: The CPU's feature flags; None reads them with `cpu_flags`.

    Returns:
        One of `POLICIES`.

    Raises:
        ValueError: If `name` is not one of `PRECISIONS`.
    """
    if name not in PRECISIONS:
        raise ValueError(
            f"unknown precision {name!r}; choose precision from {', '.join(PRECISIONS)}"
        )
    if name != "auto":
        return name
    if strategy == "tpu" or on_tpu():
        return "mixed_bfloat16"
    if gpus is None:
        gpus = gpu_compute_capabilities()
    if gpus:
        return gpu_policy(gpus)
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
