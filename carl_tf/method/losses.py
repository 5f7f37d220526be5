"""The methods' objectives: CARL's (Silva & Ramírez Rivera, arXiv 2112.15421), one function per
term, and SimCLR's NT-Xent (Chen et al. 2020, arXiv 2002.05709), the baseline with negatives.

CARL's functions take assignment probabilities of shape (batch, K); all compute in float32
whatever the input dtype (bf16/fp16 under mixed precision) and use natural logarithms
throughout, so the KL of a uniform batch mean is 0 and of a collapsed one is log K.
"""

import keras
from keras import ops

# Smallest probability a log sees: keeps one-hot and near-zero inputs finite (float32 epsilon).
_EPSILON = 1.1920929e-07


def consistency_loss(p_anchor, p_positive):
    """Consistency of two views' assignments, eq. 4: `-1/B sum_i log <p_i^a, p_i^+>`.

    Args:
        p_anchor: (batch, K) assignment probabilities of the anchor view (eq. 3).
        p_positive: (batch, K) assignment probabilities of the positive view; the caller applies
            the stop-gradient of Fig. 1.

    Returns:
        Scalar float32: 0 when both views put all mass on the same prototype.
    """
    return ops.mean(per_example_consistency(p_anchor, p_positive))


def per_example_consistency(p_anchor, p_positive):
    """The summand of eq. 4, `-log <p_i^a, p_i^+>`, shape (batch,), for callers that sum globally.

    The inner product is over the last axis: assignments per block of prototypes (batch, blocks,
    B), as `CARL(prototype_block_size=...)` makes them, give one summand per block, (batch,
    blocks).
    """
    agreement = ops.sum(_float32(p_anchor) * _float32(p_positive), axis=-1)
    return -ops.log(ops.clip(agreement, _EPSILON, 1.0))


def mean_assignment(probs):
    """Expected assignment over a minibatch, eq. 6: `p_hat = 1/B sum_i p_i`, shape (K,)."""
    return ops.mean(_float32(probs), axis=0)


def kl_of_mean_to_uniform(mean_probs):
    """Eq. 5 given the batch mean: `KL(p_hat || U) = log K + sum_k p_hat_k log p_hat_k`.

    Args:
        mean_probs: (K,) the batch-mean assignment of eq. 6 (per replica or global: the caller's
            choice; `CARL` passes the global one, summed over replicas by
            `carl_tf.method.distributed.global_sum`).

    Returns:
        Scalar float32 in [0, log K].
    """
    mean_probs = _float32(mean_probs)
    num_prototypes = ops.cast(ops.shape(mean_probs)[-1], "float32")
    neg_entropy = ops.sum(mean_probs * ops.log(ops.clip(mean_probs, _EPSILON, 1.0)), axis=-1)
    return ops.log(num_prototypes) + neg_entropy


def kl_to_uniform(probs):
    """Uniform prior of section 2.3, eqs. 5-6: KL of this batch's mean assignment to uniform.

    Args:
        probs: (batch, K) assignment probabilities.

    Returns:
        Scalar float32: 0 when the batch mean is uniform, log K when every row is the same one-hot.
    """
    return kl_of_mean_to_uniform(mean_assignment(probs))


def per_example_multi_crop_consistency(p_small, p_global, symmetric=False, targets=None):
    """Eq. 4's summand averaged over every (anchor, target) pair of a multi-crop batch, (batch,).

    The pairs are the global pair of eq. 4 (`p_global[0]` the anchor, `p_global[1]` the target;
    with `symmetric` also the reverse) and, as in SwAV and CARP, every small view as anchor
    against each global view as target: small views learn to predict the global views'
    assignments, never the reverse. Every target is stop-gradiented here, since a global view is
    the anchor of one pair and the target of others.

    Args:
        p_small: N tensors (batch, K), the assignments of the N small views (eq. 3).
        p_global: two tensors (batch, K), the assignments of the two global views.
        symmetric: also use `p_global[1]` as anchor against `p_global[0]`.
        targets: two tensors (batch, K), the global views' assignments as targets, when they
            differ from `p_global` (`CARL(target_temperature=...)`); None: `p_global`.

    Returns:
        (batch,) float32 (per block (batch, blocks) for assignments per block of prototypes,
        (batch, blocks, B)): the mean over the `1 + symmetric + 2 N` pairs of
        `-log <p_i^anchor, p_i^target>`; with no small views, eq. 4's summand (averaged over
        both directions when symmetric).
    """
    first, second = p_global
    target_first, target_second = p_global if targets is None else targets
    pairs = [(first, target_second)] + ([(second, target_first)] if symmetric else [])
    pairs += [(small, target) for small in p_small for target in (target_first, target_second)]
    terms = [per_example_consistency(a, ops.stop_gradient(t)) for a, t in pairs]
    return ops.mean(ops.stack(terms), axis=0)


def multi_crop_consistency(p_small, p_global, symmetric=False):
    """Batch mean of `per_example_multi_crop_consistency`: eq. 4 averaged over all pairs."""
    return ops.mean(per_example_multi_crop_consistency(p_small, p_global, symmetric))


def carl_loss(consistency, kl, kl_weight):
    """Eq. 7: `L = L_c + lambda_e * L_KL`, with lambda_e from eq. 8 (`carl_tf.method.schedules`)."""
    return consistency + kl_weight * kl


def nt_xent(z_a, z_b, temperature: float):
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1), averaged over all 2N anchors.

    The 2N projections are L2-normalized; each is the anchor of one row of the (2N, 2N) cosine
    similarities divided by `temperature`, whose positive is the other view of its image and
    whose negatives are the other 2N - 2 projections (its self-similarity is masked out).

    Args:
        z_a: Projections of the first views, `(N, D)`.
        z_b: Projections of the second views, `(N, D)`; row i is the positive of `z_a[i]`.
        temperature: tau, in (0, inf).

    Returns:
        The mean loss, a float32 scalar.
    """
    n = ops.shape(z_a)[0]
    z = ops.concatenate([_float32(z_a), _float32(z_b)], axis=0)
    z = z / ops.maximum(ops.norm(z, axis=-1, keepdims=True), 1e-12)
    logits = ops.matmul(z, ops.transpose(z)) / temperature  # (2N, 2N)
    index = ops.arange(2 * n)
    logits = ops.where(index[:, None] == index[None, :], _MASKED, logits)
    positives = ops.concatenate([ops.arange(n) + n, ops.arange(n)], axis=0)  # (2N,)
    log_probabilities = ops.log_softmax(logits, axis=-1)
    picked = ops.take_along_axis(log_probabilities, positives[:, None], axis=1)
    return -ops.mean(picked)


# Far below any cosine similarity / temperature: masks a logit without an infinity's NaN risk.
_MASKED = -1e9


def _float32(x):
    x = ops.convert_to_tensor(x)
    return x if keras.backend.standardize_dtype(x.dtype) == "float32" else ops.cast(x, "float32")
