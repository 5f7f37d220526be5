"""Batches of a source held in memory as a `keras.utils.PyDataset`, without tf.data.

What `fit` reads under a backend other than TensorFlow, where TensorFlow may not be installed at
all (a machine with only JAX and Keras): the images of a source that `load_source` held in
memory (`source.arrays`), in the order `make_dataset(shuffle=True, repeat=True,
drop_remainder=True)` gives them: every pass over the images a fresh seeded permutation, the
passes joined end to end and cut into full batches.
"""

import keras
import numpy as np

from carl_tf.data.splits import check_batch_size


class ArrayBatches(keras.utils.PyDataset):
    """An endless stream of fixed-size image batches, reshuffled every pass, fixed by a seed.

    Batch i holds the images at positions i * batch_size ... (i + 1) * batch_size - 1 of the
    endless sequence permutation(0), permutation(1), ... of the images' indices, permutation(p)
    drawn from `numpy.random.default_rng([seed, p])`. So every run of `len(images)` images from
    the start of a pass holds each image once; a batch that spans the end of a pass takes the
    rest from the next one, as tf.data's shuffle-repeat-batch does, and no image is dropped.
    Batch i is a pure function of (seed, i): workers, restarts and prefetching cannot change
    the order.

    `num_batches` is None (endless): give `fit` its `steps_per_epoch`, e.g.
    `len(images) // batch_size`, and `shuffle=False` (the order is this class's); Keras then
    carries the stream on from epoch to epoch.

    Args:
        images: `(N, H, W, 3)` uint8 images, held (not copied).
        batch_size: Images per batch.
        seed: Seed of the permutations.

    Raises:
        DataError: If `batch_size` is not positive or larger than N.
    """

    def __init__(self, images: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        check_batch_size(batch_size, len(images))
        self.images, self.batch_size, self.seed = images, batch_size, seed
        # (pass, permutation) of the last pass read: consecutive batches share it.
        self._last = (-1, None)

    @property
    def num_batches(self) -> None:
        """None: the stream is endless."""
        return None

    def permutation(self, epoch_pass: int) -> np.ndarray:
        """The order of the images in pass `epoch_pass`: a permutation of `range(N)`."""
        last_pass, order = self._last
        if last_pass != epoch_pass:
            order = np.random.default_rng([self.seed, epoch_pass]).permutation(len(self.images))
            self._last = (epoch_pass, order)
        return order

    def __getitem__(self, index: int) -> np.ndarray:
        """Batch `index`: uint8 images `(batch_size, H, W, 3)`."""
        positions = np.arange(index * self.batch_size, (index + 1) * self.batch_size)
        passes, offsets = np.divmod(positions, len(self.images))
        indices = np.concatenate(
            [self.permutation(int(p))[offsets[passes == p]] for p in np.unique(passes)]
        )
        return self.images[indices]


def array_batches(images: np.ndarray, batch_size: int, seed: int) -> keras.utils.PyDataset:
    """The endless, seeded, reshuffled-every-pass batches of held images (`ArrayBatches`).

    Args:
        images: `(N, H, W, 3)` uint8 images, e.g. `source.arrays[0]`.
        batch_size: Images per batch.
        seed: Seed of the per-pass permutations.

    Returns:
        An endless `PyDataset` of uint8 `(batch_size, H, W, 3)` batches; pass `fit` its
        `steps_per_epoch` and `shuffle=False`.

    Raises:
        DataError: If `batch_size` is not positive or larger than the number of images.
    """
    return ArrayBatches(images, batch_size, seed)


class LabelledArrayBatches(keras.utils.PyDataset):
    """The labelled images of arrays as `(images, labels)` batches, in order, once.

    The counterpart of `carl_tf.data.labelled_batches` for held arrays: unlabelled (-1) images
    are dropped, the last batch may be short.

    Args:
        images: `(N, H, W, 3)` images.
        labels: `(N,)` integer labels, -1 where unlabelled.
        batch_size: Images per batch.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int = 256):
        super().__init__()
        check_batch_size(batch_size, len(images), whole_batches=False)
        labels = np.asarray(labels)
        self.indices = np.flatnonzero(labels >= 0)
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index`: images `(batch, H, W, 3)` and int32 labels `(batch,)`."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        chosen = self.indices[index * self.batch_size : (index + 1) * self.batch_size]
        return self.images[chosen], self.labels[chosen].astype(np.int32)
