"""Image sources and their batches; knows nothing of the method that trains on them.

`load_source` loads digits, npz files and image folders held in memory without TensorFlow;
`array_batches` batches such a source without tf.data, `make_dataset` with it.
"""

from carl_tf.data.array_batches import ArrayBatches, LabelledArrayBatches, array_batches
from carl_tf.data.image_source import ImageSource
from carl_tf.data.pipeline import labelled_arrays, labelled_batches, make_dataset, source_arrays
from carl_tf.data.sources import load_source, splits_by_holdout
from carl_tf.data.splits import shard_seed
from carl_tf.errors import DataError

__all__ = [
    "ArrayBatches",
    "DataError",
    "ImageSource",
    "LabelledArrayBatches",
    "array_batches",
    "labelled_arrays",
    "labelled_batches",
    "load_source",
    "make_dataset",
    "shard_seed",
    "source_arrays",
    "splits_by_holdout",
]
