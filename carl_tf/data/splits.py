"""Cutting a source into parts: the seeded holdout split, the shards of input pipelines, batches.

A source without splits of its own (digits, folders, npz files) gets `train` and `test` from a
seeded, per-label `holdout` fraction (`holdout_indices`); a TFDS dataset's holdout is cut from
its train split the same way. Under a distribution strategy each input pipeline reads one
disjoint part of a source (`shard_elements`), shuffled in its own order (`shard_seed`), and
every part must fill at least one batch (`check_batch_size`).
"""

from typing import TYPE_CHECKING

import numpy as np

from carl_tf.errors import DataError

if TYPE_CHECKING:
    import tensorflow as tf

# `(count, index)`: the index-th of `count` disjoint equal parts of a source; (1, 0) is all of it.
Shard = tuple[int, int]
LOCAL_SPLITS = ("train", "test", "all")


def shard_elements(
    dataset: "tf.data.Dataset", num_examples: int, shard: Shard
) -> "tf.data.Dataset":
    """Part `index` of `count` of a dataset of `num_examples` elements: elements i with
    i % count == index, the last num_examples % count dropped so that every part has exactly
    num_examples // count elements (workers in lock step make the same number of steps).

    Raises:
        DataError: If the shard is not an index in range, or a part would be empty.
    """
    count, index = shard
    if count < 1 or not 0 <= index < count:
        raise DataError(f"shard {index} of {count} does not exist; pass 0 <= index < count")
    if count == 1:
        return dataset
    if num_examples < count:
        raise DataError(
            f"{num_examples} images cannot be split among {count} input pipelines; use fewer "
            "workers or more images"
        )
    return dataset.take(num_examples - num_examples % count).shard(count, index)


def shard_seed(seed: int, shard: Shard) -> int:
    """The seed of a shuffle that runs after sharding: `seed` itself for the whole source.

    With one seed every part would get the same permutation of its positions, so the images
    at neighbouring positions of the source (often of one class) would always meet in the
    same global batch; the part's index makes each part's order its own.
    """
    if shard == (1, 0):
        return seed
    return int(np.random.SeedSequence([seed, *shard]).generate_state(1)[0])


def holdout_indices(
    labels: np.ndarray, split: str, holdout: float, seed: int, description: str
) -> np.ndarray:
    """Indices of `split` under a seeded holdout, stratified by label (-1 counts as a label).

    Args:
        labels: `(N,)` labels, -1 where unlabelled.
        split: `train`, `test` or `all`.
        holdout: Fraction of every label's examples that goes to `test`.
        seed: Seed of the per-label permutations.
        description: Source name for messages.

    Returns:
        Sorted indices of the split's examples.

    Raises:
        DataError: If the split name or holdout is invalid, or the split is empty.
    """
    if split not in LOCAL_SPLITS:
        raise DataError(
            f"{description} has no split '{split}'; use one of {', '.join(LOCAL_SPLITS)}"
        )
    if not 0.0 <= holdout < 1.0:
        raise DataError(f"holdout must be in [0, 1), got {holdout}", fields=("holdout",))
    if split == "all":
        return np.arange(len(labels))
    if split == "test" and holdout == 0.0:
        raise DataError(
            f"{description} has a test split only with a holdout fraction",
            "set holdout (e.g. 0.2) or use split 'all'",
            fields=("holdout",),
        )
    # Not scikit-learn's train_test_split(stratify=): its split of the same labels and seed
    # differs, and a run resumed or evaluated later must see the very images it trained and
    # was scored on (its record holds only holdout and split_seed), so this split stays as
    # every recorded run made it.
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        # Rounding per label keeps every label's share close to `holdout`.
        is_test[rng.permutation(members)[: int(holdout * len(members) + 0.5)]] = True
    indices = np.flatnonzero(is_test if split == "test" else ~is_test)
    if len(indices) == 0:
        raise DataError(
            f"holdout {holdout} leaves {description} with no {split} images",
            "change holdout",
            fields=("holdout",),
        )
    return indices


def check_batch_size(
    batch_size: int,
    num_examples: int,
    parts: int = 1,
    description: str | None = None,
    whole_batches: bool = True,
) -> None:
    """Checks that `batch_size` is positive and each of `parts` equal parts of `num_examples`
    images fills one batch.

    Args:
        batch_size: Images per batch of one part (one input pipeline).
        num_examples: Images in the whole source.
        parts: How many parts the source is cut into (`Shard`'s count), each of
            `num_examples // parts` images.
        description: The source, for the message (`ImageSource.description`); None leaves it
            out.
        whole_batches: Whether incomplete batches are dropped, so that a part must fill one;
            False checks only that `batch_size` is positive.

    Raises:
        DataError: If `batch_size` is not positive, or larger than the images of a part while
            `whole_batches` would leave no batch; it names the field `batch_size`.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be positive, got {batch_size}", fields=("batch_size",))
    count = num_examples // parts
    if not whole_batches or batch_size <= count:
        return
    if parts == 1:
        where = f" in {description}" if description else ""
        problem = f"batch size {batch_size} is larger than the {count} images{where}"
    else:
        where = f" of {description}" if description else ""
        problem = (
            f"batch size {batch_size} per part is larger than the {count} images in each of "
            f"the {parts} parts{where}"
        )
    raise DataError(problem, "lower batch_size", fields=("batch_size",))
