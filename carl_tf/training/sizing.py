"""Defaults sized to a user's own images, for a `folder:` or `npz:` source without a preset.

The paper's recipe (`carl_tf.configs.common.paper_recipe`) is CIFAR's: batch 256, no holdout,
so on a few hundred images one step per epoch trains and most images wait, with no kNN monitor
and nothing to evaluate on. `size_to_source` changes, among the fields the user left unset, what
the data's size calls for, and says what it changed.
"""

from carl_tf.data.sources import count_images

# Held out of a labelled source for the kNN monitor and evaluate.py.
HOLDOUT = 0.1
# Epochs between kNN checks when the recipe has the monitor off.
KNN_EVERY = 5
# The batch is the largest power of two that leaves at least this many steps per epoch.
MIN_STEPS = 8


def sized_batch(num_train: int, recipe_batch: int) -> int:
    """The recipe's batch, halved until an epoch of `num_train` images has `MIN_STEPS` steps
    (never below 2: batch statistics need two images)."""
    batch = recipe_batch
    while batch > 2 and num_train // batch < MIN_STEPS:
        batch //= 2
    return max(2, batch)


def size_to_source(config, fixed: set[str]) -> str | None:
    """Sizes `config` (in place) to its `folder:`/`npz:` source; fields in `fixed` stay.

    A labelled source gets a seeded holdout of 10% and the kNN monitor; the batch shrinks until
    an epoch has at least 8 steps.

    Args:
        config: A ConfigDict of a source without preset (the paper's recipe on it).
        fixed: Fields the user set, which are left alone.

    Returns:
        One line saying what was changed and why, or None when nothing was.
    """
    num_images, num_classes = count_images(config.dataset)
    changes = []
    labelled = num_classes is not None and num_classes >= 2
    if labelled and "holdout" not in fixed and config.holdout == 0:
        config.holdout = HOLDOUT
        changes.append(f"holdout {HOLDOUT:g} (kNN monitor and evaluate.py score on it)")
    if labelled and config.holdout > 0 and "knn_every" not in fixed and not config.knn_every:
        config.knn_every = KNN_EVERY
        changes.append(f"kNN monitor every {KNN_EVERY} epochs")
    num_train = int(num_images * (1 - config.holdout))
    if "batch_size" not in fixed:
        batch = sized_batch(num_train, config.batch_size)
        if batch != config.batch_size:
            config.batch_size = batch
            changes.append(
                f"batch {batch} ({num_train // batch} steps per epoch; the learning rate "
                "scales with it)"
            )
    if not changes:
        return None
    classes = f", {num_classes} classes" if num_classes else ", unlabelled"
    return (
        f"{config.dataset} holds {num_images} images{classes}: sized the paper's CIFAR recipe "
        f"to it with {'; '.join(changes)}; set any of them with its flag"
    )
