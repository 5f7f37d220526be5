"""Image sources and their tf.data pipeline; knows nothing of the method that trains on them."""

from carl_tf.data.pipeline import labelled_arrays, labelled_batches, make_dataset, source_arrays
from carl_tf.data.sources import ImageSource, load_source, shard_seed, splits_by_holdout
from carl_tf.errors import DataError

__all__ = [
    "DataError",
    "ImageSource",
    "labelled_arrays",
    "labelled_batches",
    "load_source",
    "make_dataset",
    "shard_seed",
    "source_arrays",
    "splits_by_holdout",
]
