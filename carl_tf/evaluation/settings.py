"""How the evaluation protocols run: their names and settings, checked without loading Keras.

`carl-evaluate` checks its flags against these before TensorFlow loads, so a mistake is
reported in a second; `carl_tf.evaluation.protocols` runs them.
"""

import dataclasses

from carl_tf.errors import UsageError

# Base learning rate of the linear probe, for the standardised features it trains on
# (`carl_tf.evaluation.linear_eval.linear_probe_on_features` gives the measurements).
DEFAULT_LEARNING_RATE = 0.1
PROTOCOLS = ("knn", "linear", "cluster")
LINEAR_MODES = ("full", "features")
# The weighted kNN protocol of Wu et al. 2018 (InstDisc), as MoCo and solo-learn report it:
# k = 200 neighbours, vote weight exp(similarity / 0.1). The defaults of the evaluation, of
# `carl_tf.KNNMonitor` and of the presets' monitor (configs/common.py).
KNN_K = 200
KNN_TEMPERATURE = 0.1
# The second kNN figure, beside the configurable k.
SMALL_K = 20
# Fewer prototypes in use than this fraction of min(K, images) reads as a collapse: the
# presets' collapse guard during training (configs/common.py) and the evaluation's note on
# assignments of a model that records no run.
COLLAPSE_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class ProtocolSettings:
    """How the protocols run.

    Attributes:
        protocols: Names from `PROTOCOLS` to run.
        knn_k: Neighbours of the kNN figure `knn_top1`; `knn20_top1` always uses 20.
        knn_temperature: T of the kNN vote weight exp(similarity / T).
        linear: `features` (the default: no augmentation, on features computed once) or
            `full` (MoCo's protocol with crop and flip, the backbone run every step).
        linear_epochs: Epochs of the linear probe.
        linear_learning_rate: Base learning rate of the linear probe.
        batch_size: Images per forward pass and per linear-probe step.
        seed: Seed of the probe's shuffling and augmentation and of k-means.
    """

    protocols: tuple[str, ...] = PROTOCOLS
    knn_k: int = KNN_K
    knn_temperature: float = KNN_TEMPERATURE
    linear: str = "features"
    linear_epochs: int = 100
    linear_learning_rate: float = DEFAULT_LEARNING_RATE
    batch_size: int = 256
    seed: int = 0

    def applied(self, *, baseline: bool = False) -> dict:
        """The settings that shaped the figures of `protocols`, for the JSON record.

        A setting of a protocol that did not run is left out, so the record does not claim,
        say, a linear probe of 100 epochs that never happened.

        Args:
            baseline: Whether a random baseline was drawn, which uses the seed.
        """
        names = ["protocols", "batch_size"]
        if "knn" in self.protocols:
            names += ["knn_k", "knn_temperature"]
        if "linear" in self.protocols:
            names += ["linear", "linear_epochs", "linear_learning_rate"]
        # The probe's shuffling and augmentation, k-means and the baseline's weights draw from it.
        if baseline or {"linear", "cluster"} & set(self.protocols):
            names.append("seed")
        return {name: getattr(self, name) for name in names}

    def check(self) -> None:
        """Raises UsageError naming the first setting that cannot work."""
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown or not self.protocols:
            raise UsageError(
                f"unknown protocol {', '.join(map(repr, unknown)) or '(none given)'}",
                f"pass protocols as a comma-separated list from {', '.join(PROTOCOLS)}",
                fields=("protocols",),
            )
        if self.linear not in LINEAR_MODES:
            raise UsageError(
                f"linear must be one of {', '.join(LINEAR_MODES)}, got {self.linear!r}"
            )
        positive = {
            "knn_k": self.knn_k,
            "knn_temperature": self.knn_temperature,
            "linear_epochs": self.linear_epochs,
            "linear_lr": self.linear_learning_rate,
            "batch_size": self.batch_size,
        }
        for name, value in positive.items():
            if not value > 0 or value == float("inf"):
                raise UsageError(f"{name} must be positive and finite, got {value}; fix --{name}")
