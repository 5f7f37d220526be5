"""`CARL`: the Keras model that wires encoder, assigner and objective (CARL, arXiv 2112.15421).

The model only wires the parts: the backbone (any images -> vector model), the projection head
(`carl_tf.method.heads`), the assigner (a bias-free Dense whose kernel columns are the K
prototypes, eq. 2), the view maker (`carl_tf.method.augment`) and the pure loss terms
(`carl_tf.method.losses`). What it shares with every method (views, steps, `fit`) is
`carl_tf.method.base.TwoViewModel`'s.
"""

import math
from collections.abc import Sequence

import keras
from keras import ops

from carl_tf.method import distributed, losses
from carl_tf.method.augment import SimCLRAugment
from carl_tf.method.base import TwoViewModel, default_augmenter
from carl_tf.method.heads import ProjectionHead


@keras.saving.register_keras_serializable(package="carl_tf")
class CARL(TwoViewModel):
    """Consistent Assignment for Representation Learning, trained with `fit`.

    `fit` takes batches of raw images in [0, 255] (optionally `(images, labels)`, labels ignored),
    from which two views are made on device by `augmenter`; pairs `(view_a, view_b)` of views
    made by the caller; or dicts `{"crops": (N, 2, S, S, 3)}` of two random resized crops per
    image cut by the input pipeline (`carl_tf.training.views.crop_pairs`), of which `augmenter`
    makes the views without cropping again (`crop=False`). `carl_tf.method.inputs` lists every
    accepted form. `predict(images)` returns the (N, K) prototype assignment probabilities;
    `model.backbone` is the encoder whose features are used downstream.

    Multi-crop (SwAV, Caron et al. 2020, arXiv 2006.09882; CARP): with `small_crops` N > 0 the
    step also makes N small views per image with `small_augmenter`, cut from the raw image, or
    for view pairs and crop pairs from view (crop) `i % 2` of the image, so a small view is then
    a crop of that view's (crop's) area. The N small views of a batch are encoded in one call of
    the backbone (its normalization statistics are those of the small views). The consistency
    (eq. 4) is the mean over every (anchor, target) pair: the global pair of eq. 4 (both
    directions when `symmetric`) and each small view as anchor against each of the two global
    views' assignments as targets, without gradient (`losses.multi_crop_consistency`). The KL of
    eq. 5 stays on the global anchors' batch mean (eq. 6), as without small crops, by choice:
    the prior keeps the spread of the global assignments, which are also the small views'
    targets, uniform. Both stay global-batch figures under every strategy (one all-reduce per
    anchor, as without small crops).

    Args:
        backbone: a Keras model mapping images (N, H, W, 3) in [0, 255] to features (N, D).
        num_prototypes: K, the number of learnable prototypes (eq. 2).
        projection_hidden_units: hidden widths of the projection head (Appendix A: two layers).
        projection_dim: size of the representation z (128 in the paper).
        augmenter: layer making one random view per call; defaults to the SimCLR views at the
            backbone's input size. For crop-pair batches it is called with `crop=False`, which
            `SimCLRAugment` takes.
        kl_weight: initial lambda_e of eq. 7; `carl_tf.KLWeightSchedule` updates it every epoch.
        symmetric: also use the second view as anchor (averaging both directions); the paper's
            one-sided form is the default.
        projection_head: the head to use instead of building one from
            `projection_hidden_units` and `projection_dim`, e.g. a `ProjectionHead` with
            another `norm_layer`.
        small_crops: N, the small (multi-crop) views per image; 0, the default, trains on the
            two global views only, exactly as without the option.
        small_crop_size: side of the small views; None: half of `augmenter.image_size` (of the
            backbone's input size for an augmenter without one).
        small_crop_scale: range of the small crops' area as a fraction of their source's
            (SwAV's 0.05-0.14).
        small_augmenter: the layer making one small view per call, instead of the
            `SimCLRAugment` built from `small_crop_size` and `small_crop_scale` (with the colour
            and blur settings of `augmenter` when that is a `SimCLRAugment`).
        target_temperature: not in the paper (an extension, off at 1.0): the targets of the
            consistency (the stop-gradient views) are `softmax(energies / T)`, sharper than the
            anchors' assignments for T < 1. The anchors, the KL of eq. 5 and `predict` keep
            T = 1.
        unit_prototypes: not in the paper (an extension, off by default; CARP keeps its
            prototypes at unit norm): the energies of eq. 2 use each prototype divided by its
            norm, so they are bounded by the norm of z however the prototypes grow.
        cosine_temperature: not in the paper (an extension, off at 0): T > 0 makes the
            energies the cosine of z and each prototype divided by T, SwAV's and CARP's form
            (both z and the prototypes at unit norm), so the sharpness of the assignments is
            set by T rather than learned through the norms.
        target_momentum: not in the paper (an extension, off at 0; CARP's and BYOL's momentum
            encoder): m in (0, 1) takes the consistency targets from an exponential moving
            average of the encoder (backbone, projection head and prototypes), updated after
            every optimizer step as `target <- m * target + (1 - m) * online` and starting
            equal to it. The target encoder shares the online one's layers with the averaged
            weights in place of the trainable ones (`target_weights`, state saved with the
            model): its BatchNorm normalizes with the statistics of its own batch in training,
            as BYOL's target does, without updating any moving statistics, and at evaluation
            uses the online encoder's moving statistics. No gradient reaches it. TensorFlow
            backend only.
        prototype_block_size: not in the paper (an extension, off at 0; CARP's random
            partitions, for large K): B > 0 partitions the K prototypes at random into K / B
            blocks of B at every step, identically on every replica. Each block has its own
            softmax over its prototypes' energies, its own consistency (eq. 4) and its own KL of
            the block's batch-mean assignment to the uniform over B (eqs. 5-6); the loss uses
            the means over the blocks. K must be a multiple of B, and B at least 2. `predict`
            and the prototypes in use keep the softmax over all K.
        partition_seed: seed of the partitions' `keras.random.SeedGenerator`; None draws one
            from Keras's global seed (`keras.utils.set_random_seed`). Its stream starts afresh
            on load, as the augmenter's does.

    Raises:
        ValueError: for fewer than two prototypes, a negative `small_crops`, an empty or
            out-of-range `small_crop_scale`, or a backbone that cannot encode
            `small_crop_size` views (a fixed input size, e.g. a Flatten before a Dense); for a
            `target_momentum` outside [0, 1) or under the JAX backend; for a
            `prototype_block_size` below 2 or that does not divide `num_prototypes`.
    """

    FIGURES = ("loss", "consistency", "kl", "kl_weight", "prototypes_in_use")
    # lambda_e is a setting of the epoch, not a figure of the data.
    VALIDATION_FIGURES = ("loss", "consistency", "kl", "prototypes_in_use")

    def __init__(
        self,
        backbone: keras.Model,
        num_prototypes: int = 100,
        projection_hidden_units: Sequence[int] = (2048, 2048),
        projection_dim: int = 128,
        augmenter: keras.layers.Layer | None = None,
        kl_weight: float = 4.0,
        symmetric: bool = False,
        projection_head: keras.layers.Layer | None = None,
        small_crops: int = 0,
        small_crop_size: int | None = None,
        small_crop_scale: Sequence[float] = (0.05, 0.14),
        small_augmenter: keras.layers.Layer | None = None,
        target_temperature: float = 1.0,
        unit_prototypes: bool = False,
        cosine_temperature: float = 0.0,
        target_momentum: float = 0.0,
        prototype_block_size: int = 0,
        partition_seed: int | None = None,
        prototype_init_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        if int(num_prototypes) < 2:
            raise ValueError(f"num_prototypes must be at least 2, got {num_prototypes}")
        self.num_prototypes = int(num_prototypes)
        self.symmetric = bool(symmetric)
        self.target_temperature = float(target_temperature)
        self.unit_prototypes = bool(unit_prototypes)
        self.cosine_temperature = float(cosine_temperature)
        self.target_momentum = float(target_momentum)
        self.prototype_block_size = int(prototype_block_size)
        self.partition_seed = partition_seed
        self.prototype_init_scale = float(prototype_init_scale)
        if not 0.0 < self.prototype_init_scale < math.inf:
            raise ValueError(
                f"prototype_init_scale must be positive and finite, got {prototype_init_scale}"
            )
        self._check_extensions()
        self.augmenter = augmenter if augmenter is not None else default_augmenter(backbone)
        self.small_crops = int(small_crops)
        self.small_crop_scale = tuple(float(v) for v in small_crop_scale)
        self.small_crop_size = None if small_crop_size is None else int(small_crop_size)
        # Nothing is built without small crops: even an unused SeedGenerator would draw from
        # the global seed and change every weight initialized after it.
        if self.small_crops < 0:
            raise ValueError(f"small_crops must be 0 or more, got {small_crops}")
        if self.small_crops:
            low, high = self.small_crop_scale
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(
                    f"small_crop_scale must satisfy 0 < min <= max <= 1, got {small_crop_scale}"
                )
            if self.small_crop_size is None:
                self.small_crop_size = _global_view_size(self.augmenter, backbone) // 2
            self.small_augmenter = small_augmenter or _small_augmenter(
                self.augmenter, self.small_crop_size, self.small_crop_scale
            )
            _accept_view_size(backbone, self.small_crop_size)
        self.projection_head = projection_head or ProjectionHead(
            projection_hidden_units,
            projection_dim,
            dtype=self.dtype_policy,  # the model's saved policy on load, not the global one
            name="projection_head",
        )
        # The kernel's K columns are the prototypes c_k; q_i[k] = <z_i, c_k> (eq. 2).
        self.assigner = keras.layers.Dense(
            self.num_prototypes,
            use_bias=False,
            kernel_initializer=_prototype_initializer(self.prototype_init_scale),
            dtype=self.dtype_policy,
            name="assigner",
        )
        # A variable, not a Python float: a float would be frozen into the traced train step.
        self.kl_weight = keras.Variable(
            float(kl_weight), trainable=False, dtype="float32", name="kl_weight"
        )
        # How many training anchors each prototype won (argmax) since the last reset; not a
        # logged figure (it is a vector), read and reset by carl_tf's TensorBoard callback.
        self.prototype_usage = PrototypeUsage(self.num_prototypes, name="prototype_usage")
        self.build()

    def build(self, input_shape=None):
        """Builds head and assigner from the backbone's feature size, so weights exist at once
        (in the strategy scope the model is made in, and before `load_model` restores them)."""
        features = (None, self.backbone.output_shape[-1])
        if not self.projection_head.built:  # a deserialized head arrives built
            self.projection_head.build(features)
        self.assigner.build(self.projection_head.compute_output_shape(features))
        self._build_extensions()
        self.built = True

    def _check_extensions(self):
        """Raises ValueError, naming the argument, for extension settings that cannot train."""
        if not self.target_temperature > 0.0:
            raise ValueError(f"target_temperature must be positive, got {self.target_temperature}")
        if not self.cosine_temperature >= 0.0:
            raise ValueError(
                f"cosine_temperature must be 0 or positive, got {self.cosine_temperature}"
            )
        if not 0.0 <= self.target_momentum < 1.0:
            raise ValueError(f"target_momentum must be in [0, 1), got {self.target_momentum}")
        if self.target_momentum and keras.backend.backend() != "tensorflow":
            raise ValueError(
                "target_momentum (the EMA target encoder) trains under the TensorFlow backend "
                "only; set KERAS_BACKEND=tensorflow, or target_momentum=0"
            )
        size, k = self.prototype_block_size, self.num_prototypes
        if size < 0 or size == 1 or (size and k % size):
            raise ValueError(
                "prototype_block_size must be 0 (off) or a divisor of num_prototypes "
                f"({k}) of at least 2, got {size}"
            )

    def _build_extensions(self):
        """The EMA target weights and the partitions' generator, made after every other weight
        and only when on: the other weights are then initialized as without them (a
        SeedGenerator without a seed draws from the global one)."""
        # The averaged weights are those trainable now, kept as positions: freezing a layer
        # later does not change which target shadows which weight.
        self._averaged = tuple(i for i, w in enumerate(self._encoder_weights()) if w.trainable)
        self.target_weights = []
        if self.target_momentum:
            for weight in self._online_weights():
                target = self.add_weight(
                    shape=weight.shape,
                    initializer="zeros",
                    dtype=weight.dtype,
                    trainable=False,
                    # Every replica computes the same average; the first one's is kept.
                    aggregation="only_first_replica",
                    name="target_" + weight.name,
                )
                target.assign(weight)
                self.target_weights.append(target)
        self.partition_seed_generator = None
        if self.prototype_block_size:
            self.partition_seed_generator = keras.random.SeedGenerator(
                self.partition_seed, name="partition_seed_generator"
            )

    @property
    def metrics(self):
        """The logged figures' trackers, and the prototype counts (state of the step too)."""
        return [*super().metrics, self.prototype_usage]

    def _observe(self, figures):
        """Counts the step's argmax prototypes (`prototype_usage`)."""
        self.prototype_usage.update_state(figures.pop("anchor_probabilities"))

    def _after_apply(self):
        """With `target_momentum`, moves the EMA target encoder towards the new weights."""
        if self.target_weights:
            self.update_target()

    def call(self, images, training=False):
        """Assignment probabilities (N, K) of images, eq. 3, in float32."""
        return self.assign(images, training=training)

    @property
    def prototypes(self):
        """The (d, K) variable whose columns are the K prototypes c_k (eq. 2)."""
        return self.assigner.kernel

    def assign(self, images, training=False):
        """Encodes images and softmaxes their prototype energies (eqs. 2-3); float32 (N, K)."""
        return ops.softmax(self.energies(images, training=training), axis=-1)

    def energies(self, images, training=False):
        """The prototype energies `<z_i, c_k>` of eq. 2 in float32, (N, K); with
        `unit_prototypes` each c_k is divided by its norm first; with `cosine_temperature` T
        they are `cos(z_i, c_k) / T`, computed in float32."""
        features = self.backbone(images, training=training)
        z = self.projection_head(features, training=training)
        if not (self.unit_prototypes or self.cosine_temperature):
            return ops.cast(self.assigner(z), "float32")
        unit = _unit(ops.convert_to_tensor(self.assigner.kernel), axis=0)  # (d, K) columns c_k
        if not self.cosine_temperature:
            return ops.cast(ops.matmul(z, ops.cast(unit, z.dtype)), "float32")
        z = _unit(ops.cast(z, "float32"), axis=-1)
        return ops.matmul(z, ops.cast(unit, "float32")) / self.cosine_temperature

    def _assign_with_target(self, images, training, partition=None, anchor=True, target=True):
        """A view's assignment p (eq. 3), its assignment as an anchor and its consistency target.

        Args:
            images: (N, H, W, 3) views.
            training: the encoder's mode.
            partition: (K,) the step's permutation of the prototypes (`_draw_partition`), or
                None without `prototype_block_size`.
            anchor: whether the anchor form is needed; else it is None.
            target: whether the target is needed; else it is None.

        Returns:
            `(p, anchor, target)`: p (N, K) float32; the anchor form p, or with a partition the
            softmax within each block, (N, K / B, B); the target in the anchor's shape, without
            gradient: `softmax(energies / T)` with `target_temperature` T, of the EMA target
            encoder's energies with `target_momentum` (of the online encoder's otherwise). p is
            None when neither p nor the anchor form needs the online encoder.
        """
        p = anchor_form = target_form = None
        if anchor or not self.target_momentum:
            energies = self.energies(images, training=training)
            p = ops.softmax(energies, axis=-1)
            anchor_form = (
                p
                if partition is None
                else ops.softmax(self._in_blocks(energies, partition), axis=-1)
            )
        if target:
            if self.target_momentum:
                energies = self._target_energies(images, training)
            if partition is None and self.target_temperature == 1.0 and not self.target_momentum:
                target_form = p
            else:
                if partition is not None:
                    energies = self._in_blocks(energies, partition)
                if self.target_temperature != 1.0:
                    energies = energies / self.target_temperature
                target_form = ops.softmax(energies, axis=-1)
            target_form = ops.stop_gradient(target_form)
        return p, anchor_form if anchor else None, target_form

    def _encoder_weights(self) -> list:
        """Every weight of the encoder: backbone, projection head and prototypes."""
        return [*self.backbone.weights, *self.projection_head.weights, *self.assigner.weights]

    def _online_weights(self) -> list:
        """The encoder's weights that `target_weights` average, in their order: those that
        were trainable when the model was made."""
        weights = self._encoder_weights()
        return [weights[i] for i in self._averaged]

    def _target_energies(self, images, training):
        """The EMA target encoder's energies (N, K), without gradient (`target_momentum`).

        The online layers run with `target_weights` in place of their trainable weights, inside
        a `keras.StatelessScope` that also discards the BatchNorm moving-statistics updates of
        this pass.
        """
        mapping = list(zip(self._online_weights(), self.target_weights))
        with keras.StatelessScope(state_mapping=mapping):
            energies = self.energies(images, training=training)
        return ops.stop_gradient(energies)

    def update_target(self):
        """One EMA step of the target encoder, `target <- m target + (1 - m) online` for
        `target_momentum` m; the train step calls it after each optimizer step."""
        m = self.target_momentum
        for target, online in zip(self.target_weights, self._online_weights()):
            target.assign(
                m * ops.convert_to_tensor(target) + (1.0 - m) * ops.cast(online, target.dtype)
            )

    def _draw_partition(self):
        """The step's random permutation of the K prototypes, (K,) int; None when blocks are off.

        Consecutive runs of `prototype_block_size` entries are the blocks. The draw is not
        folded with the replica id: the generator's state is mirrored, so every replica (and a
        single device from the same state) draws the same partition.
        """
        if not self.prototype_block_size:
            return None
        draws = keras.random.uniform((self.num_prototypes,), seed=self.partition_seed_generator)
        return ops.argsort(draws)

    def _in_blocks(self, energies, partition):
        """Energies (N, K) regrouped into the partition's blocks, (N, K / B, B)."""
        size = self.prototype_block_size
        blocks = ops.take(energies, partition, axis=1)
        return ops.reshape(blocks, (-1, self.num_prototypes // size, size))

    def _objective(self, view_a, view_b, training, small_views=()):
        """Eq. 7 on the global batch: consistency (eq. 4) + lambda_e * KL to uniform (eqs. 5-6).

        With `small_views`, the consistency is the multi-crop mean over all (anchor, target)
        pairs (`losses.per_example_multi_crop_consistency`); the KL stays on the global anchors.
        With `prototype_block_size`, both terms are means over the step's blocks.
        """
        partition = self._draw_partition()
        # View a is always an anchor and view b a target; each is also the other when
        # symmetric, and a target of the small views when there are any.
        both_targets = self.symmetric or bool(small_views)
        p_a, anchor_a, target_a = self._assign_with_target(
            view_a, training, partition, target=both_targets
        )
        p_b, anchor_b, target_b = self._assign_with_target(
            view_b, training, partition, anchor=self.symmetric
        )
        # Fig. 1: the positive view is a target, not trained through.
        pairs = [(p_a, anchor_a, target_b)]
        if self.symmetric:
            pairs.append((p_b, anchor_b, target_a))
        per_example = [losses.per_example_consistency(a, t) for _, a, t in pairs]
        if small_views:
            # One figure for every anchor: each pair's batch mean is then the multi-crop mean.
            p_small = self._assign_small(small_views, training, partition)
            shared = losses.per_example_multi_crop_consistency(
                p_small,
                (anchor_a, anchor_b),
                symmetric=self.symmetric,
                targets=(target_a, target_b),
            )
            per_example = [shared] * len(pairs)
        if partition is not None:  # (batch, blocks): each block's consistency, then their mean
            per_example = [ops.mean(summands, axis=-1) for summands in per_example]
        consistency, kl, used = [], [], []
        for (p_anchor, anchor, _), summands in zip(pairs, per_example):
            c, k, u = self._global_terms(p_anchor, summands, anchor)
            consistency.append(c)
            kl.append(k)
            used.append(u)
        consistency = ops.mean(ops.stack(consistency))
        kl = ops.mean(ops.stack(kl))
        kl_weight = ops.convert_to_tensor(self.kl_weight)
        return {
            "anchor_probabilities": ops.stop_gradient(p_a),
            "loss": losses.carl_loss(consistency, kl, kl_weight),
            "consistency": consistency,
            "kl": kl,
            "kl_weight": kl_weight,
            "prototypes_in_use": used[0],
        }

    def _assign_small(self, small_views, training, partition=None):
        """The small views' assignments, `(batch, K)` each (per block `(batch, K / B, B)` with a
        partition), from one call of the encoder."""
        energies = self.energies(ops.concatenate(small_views, axis=0), training=training)
        if partition is not None:
            energies = self._in_blocks(energies, partition)
        return ops.split(ops.softmax(energies, axis=-1), len(small_views), axis=0)

    def _global_terms(self, p_anchor, per_example_consistency, anchor=None):
        """Consistency, KL and prototypes in use over the global batch (one all-reduce).

        `per_example_consistency` (batch,) holds the summands of eq. 4 for this anchor. The KL
        is not linear in the batch, so its batch mean (eq. 6) is the mean over all replicas'
        anchors, not a mean of per-replica KLs. `anchor` is the anchor's assignment as the loss
        uses it, p_anchor itself when None; given per block of prototypes (batch, K / B, B), the
        KL is the mean of the blocks' KLs, each of its block's batch mean to the uniform over
        B. The prototypes in use always count p_anchor's argmax over all K.
        """
        k = self.num_prototypes
        anchor = p_anchor if anchor is None else anchor
        in_blocks = len(anchor.shape) == 3
        local = ops.concatenate(
            [
                ops.sum(per_example_consistency)[None],
                ops.cast(ops.shape(p_anchor)[0], "float32")[None],
                ops.reshape(ops.sum(anchor, axis=0), (k,)),
                ops.stop_gradient(ops.sum(ops.one_hot(ops.argmax(p_anchor, axis=-1), k), axis=0)),
            ],
            axis=0,
        )
        total = distributed.global_sum(local)
        batch_size = ops.stop_gradient(total[1])
        consistency = total[0] / batch_size
        mean = total[2 : 2 + k] / batch_size
        if in_blocks:
            size = self.prototype_block_size
            kl = ops.mean(losses.kl_of_mean_to_uniform(ops.reshape(mean, (k // size, size))))
        else:
            kl = losses.kl_of_mean_to_uniform(mean)
        in_use = ops.sum(ops.cast(total[2 + k :] > 0.5, "float32"))
        return consistency, kl, in_use

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_prototypes": self.num_prototypes,
            "projection_head": keras.saving.serialize_keras_object(self.projection_head),
            "augmenter": keras.saving.serialize_keras_object(self.augmenter),
            "kl_weight": float(ops.convert_to_numpy(self.kl_weight)),
            "symmetric": self.symmetric,
            "small_crops": self.small_crops,
            "small_crop_size": self.small_crop_size,
            "small_crop_scale": list(self.small_crop_scale),
            "small_augmenter": (
                keras.saving.serialize_keras_object(self.small_augmenter)
                if self.small_augmenter is not None
                else None
            ),
            "target_temperature": self.target_temperature,
            "unit_prototypes": self.unit_prototypes,
            "cosine_temperature": self.cosine_temperature,
            "target_momentum": self.target_momentum,
            "prototype_block_size": self.prototype_block_size,
            "partition_seed": self.partition_seed,
            "prototype_init_scale": self.prototype_init_scale,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        config["augmenter"] = keras.saving.deserialize_keras_object(config["augmenter"])
        if config.get("small_augmenter") is not None:
            config["small_augmenter"] = keras.saving.deserialize_keras_object(
                config["small_augmenter"]
            )
        config["projection_head"] = keras.saving.deserialize_keras_object(config["projection_head"])
        return cls(**config)


class PrototypeUsage(keras.metrics.Metric):
    """Counts `(K,)` of the argmax prototype of every anchor seen since the last reset.

    Each replica adds its local batch's counts; Keras sums metric variables over replicas on
    read, so the result is the global count under every strategy.
    """

    def __init__(self, num_prototypes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_prototypes = int(num_prototypes)
        self.counts = self.add_variable(
            shape=(self.num_prototypes,), initializer="zeros", dtype="float32", name="counts"
        )

    def update_state(self, probabilities):
        winners = ops.one_hot(ops.argmax(probabilities, axis=-1), self.num_prototypes)
        self.counts.assign_add(ops.sum(ops.cast(winners, "float32"), axis=0))

    def result(self):
        return ops.convert_to_tensor(self.counts)

    def reset_state(self):
        self.counts.assign(ops.zeros((self.num_prototypes,), "float32"))

    def get_config(self):
        return {**super().get_config(), "num_prototypes": self.num_prototypes}


def _prototype_initializer(scale: float) -> keras.initializers.Initializer | str:
    """Glorot-uniform prototypes (Keras's Dense default), with `scale` times their spread.

    Glorot-uniform is VarianceScaling(1, "fan_avg", "uniform"); scaling the values by s scales
    the variance by s squared. At 1 the initializer is Keras's own, so the prototypes are drawn
    as they always were.
    """
    if scale == 1.0:
        return "glorot_uniform"
    return keras.initializers.VarianceScaling(scale * scale, mode="fan_avg", distribution="uniform")


def _unit(matrix, axis):
    """`matrix` with each vector along `axis` divided by its Euclidean norm."""
    return matrix / ops.sqrt(ops.sum(ops.square(matrix), axis=axis, keepdims=True) + 1e-12)


def _global_view_size(augmenter: keras.layers.Layer, backbone: keras.Model) -> int:
    """The side of the global views: the augmenter's `image_size`, else the backbone's input."""
    size = getattr(augmenter, "image_size", None) or backbone.input_shape[1]
    if size is None:
        raise ValueError("the global view size is not known; pass small_crop_size=...")
    return int(size)


def _small_augmenter(augmenter, size: int, scale: tuple[float, float]) -> SimCLRAugment:
    """SimCLR views of side `size` from crops of area `scale`, coloured as `augmenter` colours.

    Its seed is one past the main augmenter's (a fresh one when that has none): the same seed
    would draw the same crop boxes and colours as the global views.
    """
    if not isinstance(augmenter, SimCLRAugment):
        return SimCLRAugment(image_size=size, crop_scale=scale, name="small_augmenter")
    config = augmenter.get_config()
    seed = config["seed"]
    config.update(
        image_size=size,
        crop_scale=list(scale),
        seed=None if seed is None else seed + 1,
        name="small_augmenter",
    )
    return SimCLRAugment.from_config(config)


def _accept_view_size(backbone: keras.Model, size: int) -> None:
    """Lets `backbone` encode `size x size` views, or raises ValueError if it cannot.

    A functional backbone checks its input against the size it was built for; carl_tf's ResNets
    (and any net that ends in global pooling) compute at every size, so that check is relaxed
    to the rank and channels. `backbone.input_shape`, which export and evaluation read, keeps
    the built size. A net that needs its built size (a Flatten before a Dense) is refused.
    """
    channels = backbone.input_shape[-1] if hasattr(backbone, "inputs") else 3
    previous = backbone.input_spec
    backbone.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})
    try:
        # An eager call on one blank view: a symbolic one does not check the layers' weights.
        backbone(ops.zeros((1, size, size, channels)), training=False)
    except Exception as error:  # whatever a layer raises for a shape it cannot take
        backbone.input_spec = previous
        raise ValueError(
            f"the backbone {backbone.name!r} cannot encode {size}x{size} small crops (its "
            f"input size is fixed: {type(error).__name__}); use a backbone that ends in global "
            "pooling, or small_crops=0"
        ) from error
