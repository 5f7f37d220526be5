"""The values a config field may take from a fixed list, in a module that loads no Keras.

`carl_tf.run.config` checks a config against them, and the command line offers them as flag
choices, before TensorFlow loads: a mistake is reported in a second. `carl_tf.run.precision`
and `carl_tf.run.strategy` take theirs from here; the backbones' and the optimizer's lists are
the method's (`tests/test_cli_fast.py` checks that these match them), as are the methods'
(`carl_tf.training.methods.METHODS`).
"""

METHODS = ("carl", "simclr")
# What the schedules do when a run is trained longer than it was started for
# (`carl_tf.method.schedules` builds them, `carl_tf.run.rundir` records the extension).
EXTEND_MODES = {
    "rescale": "the learning-rate cycle and the lambda decay stretched to the new length",
    "restart": "a new cosine cycle from the peak rate over the added epochs, lambda kept at its "
    "end value",
}
BACKBONES = ("resnet18", "resnet34", "resnet50")
# Any keras.applications constructor, by name: keras:MobileNetV3Small.
KERAS_BACKBONE_PATTERN = r"keras:[A-Z][A-Za-z0-9]*"
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
PRECISIONS = ("auto",) + POLICIES
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
WEIGHT_DECAY_MODES = ("decoupled", "coupled")
WEIGHT_DECAY_ON = ("all", "kernels")
