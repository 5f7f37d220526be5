"""What evaluate.py's `--model` names: a train.py run, an exported SavedModel or a `.keras` file.

Each form is loaded into a `LoadedModel`: a Keras backbone (images -> features), the CARL
assigner when the form holds one (images -> prototype probabilities), and the run's config when
the model belongs to a train.py run directory.
"""

import dataclasses
import os

import keras
import tensorflow as tf

from carl_tf.errors import UsageError
from carl_tf.evaluation.model_path import ACCEPTED, model_kind
from carl_tf.method import backbones
from carl_tf.method.base import TwoViewModel
from carl_tf.method.model import CARL
from carl_tf.run.rundir import RunDirectory, keras_file_problem


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model to evaluate.

    Attributes:
        path: The `--model` path, absolute.
        weights: The file or directory the weights were read from (for a run: its
            export/carl.keras or newest checkpoint).
        kind: `run`, `saved_model` or `keras`.
        backbone: Maps float images `(N, H, W, 3)` in [0, 255] to features `(N, D)`.
        assigner: Maps the same images to prototype probabilities `(N, K)`, or None when the
            model has no assigner (a bare backbone).
        run: The train.py run the model belongs to, or None.
        run_config: That run's resolved config (its config.json), or None.
    """

    path: str
    weights: str
    kind: str
    backbone: keras.Model
    assigner: keras.Model | None
    run: RunDirectory | None
    run_config: dict | None

    @property
    def image_size(self) -> tuple[int | None, int | None]:
        """`(height, width)` the backbone takes; None where any size is accepted."""
        return tuple(self.backbone.input_shape[1:3])

    @property
    def num_prototypes(self) -> int | None:
        """K, the assigner's number of prototypes, or None without an assigner."""
        if self.assigner is None:
            return None
        if isinstance(self.assigner, CARL):
            return self.assigner.num_prototypes
        return int(self.assigner.output_shape[-1])


def load_model(path: str) -> LoadedModel:
    """Loads what `--model` names.

    Args:
        path: A train.py workdir (its export/carl.keras, or its newest checkpoint when it has
            not been exported yet), a SavedModel directory written by
            `carl_tf.export_backbone` (or any SavedModel whose `serving_default` signature maps
            one image tensor to features), or
            a `.keras` file holding a CARL or SimCLR model or a bare backbone.

    Returns:
        The loaded model.

    Raises:
        UsageError: If nothing loadable is at `path`, or the model does not take RGB images.
    """
    path = os.path.abspath(path)
    kind = model_kind(path)
    if kind == "run":
        run = RunDirectory(path)
        weights = _run_weights(run)
    else:
        run, weights = _enclosing_run(path), path
    backbone, assigner = (_load_saved_model if kind == "saved_model" else _load_keras)(weights)
    loaded = LoadedModel(path, weights, kind, backbone, assigner, run, _read_config(run))
    channels = loaded.backbone.input_shape[-1]
    if channels != 3:
        raise UsageError(
            f"the model at {path} takes {channels}-channel images, but evaluate.py feeds RGB "
            "images; pass a model built for (N, H, W, 3) inputs"
        )
    return loaded


def random_backbone(model: LoadedModel, seed: int) -> keras.Model:
    """A randomly initialised backbone of the same architecture, for the `--baseline`.

    Rebuilt with `build_backbone` from the run's config when there is one; otherwise a Keras
    backbone is cloned with fresh weights (`clone_model` re-creates every layer).

    Args:
        model: The model whose architecture to copy.
        seed: Seed of the initialisation.

    Returns:
        The untrained backbone.

    Raises:
        UsageError: For a SavedModel outside a run, whose architecture is unknown.
    """
    keras.utils.set_random_seed(seed)
    if model.run_config is not None:
        return backbones.build_backbone(
            model.run_config["backbone"],
            width=model.run_config["backbone_width"],
            image_size=model.run_config["image_size"],
        )
    if model.kind == "saved_model":
        raise UsageError(
            f"the baseline needs the architecture, which the SavedModel {model.path} does not "
            "record",
            "pass the run's workdir or its .keras file as model",
            fields=("model",),
        )
    return keras.models.clone_model(model.backbone)


def _run_weights(run: RunDirectory) -> str:
    """The run's exported model, else its newest readable checkpoint.

    Raises:
        UsageError: If the run has no model yet, or every checkpoint it has is damaged.
    """
    if os.path.exists(run.model_export):
        return run.model_export
    checkpoint, _ = run.latest_checkpoint()
    if checkpoint is None:
        raise UsageError(
            f"the run {run.path} has no model yet (no export/carl.keras, no checkpoint); "
            "train it first (rerun its training on this workdir)"
        )
    return checkpoint


def _enclosing_run(path: str) -> RunDirectory | None:
    """The run whose export or checkpoint `path` is, so its config gives the defaults."""
    run = RunDirectory(os.path.dirname(os.path.dirname(path)))
    in_run = path in (run.backbone_export, run.model_export) or (
        os.path.dirname(path) == run.checkpoint_dir
    )
    return run if in_run and os.path.exists(run.config_path) else None


def _read_config(run: RunDirectory | None) -> dict | None:
    """The run's config.json as a dict (None without a run)."""
    if run is None:
        return None
    return run.read_config().to_dict()


def _load_keras(path: str) -> tuple[keras.Model, keras.Model | None]:
    """(backbone, assigner) of a `.keras` file: a CARL or SimCLR model, or a bare backbone."""
    # Keras reports a truncated or overwritten file as "File not found"; name the real problem.
    problem = keras_file_problem(path)
    if problem:
        raise UsageError(
            f"cannot load {path}: the file is damaged ({problem})",
            "restore it, or pass another model",
            fields=("model",),
        )
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for unreadable or foreign files.
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"cannot load {path}: {message}") from error
    if isinstance(model, TwoViewModel):  # a CARL, or a SimCLR (no assigner)
        return model.backbone, model if isinstance(model, CARL) else None
    if len(model.inputs) != 1 or len(model.output_shape) != 2:
        raise UsageError(
            f"{path} holds neither a carl_tf model nor a backbone mapping images to (N, D) features"
        )
    return model, None


class _Signature(keras.layers.Layer):
    """One output of a SavedModel signature as a Keras layer, for inference.

    The signature computes with the SavedModel's own variables, which the layer keeps alive by
    holding the loaded object (signatures reference them weakly). The layer adds no weights, so
    no copy is made (`keras.layers.TFSMLayer` copies them) and one loaded SavedModel serves
    both the features and the assignment.
    """

    def __init__(self, loaded, signature: str, input_name: str, output_name: str, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.loaded, self.function = loaded, loaded.signatures[signature]
        self.input_name, self.output_name = input_name, output_name

    def call(self, images):
        return self.function(**{self.input_name: images})[self.output_name]


def _load_saved_model(path: str) -> tuple[keras.Model, keras.Model | None]:
    """(backbone, assigner) of a SavedModel: `serving_default`, and `assign` if it is there."""
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # Corrupt or foreign directories raise many types.
        raise UsageError(f"cannot load the SavedModel {path}: {type(error).__name__}") from error
    backbone = _signature_model(loaded, "serving_default", "features", path)
    if "assign" not in loaded.signatures:
        return backbone, None
    return backbone, _signature_model(loaded, "assign", "probabilities", path)


def _signature_model(loaded, name: str, preferred_output: str, path: str) -> keras.Model:
    """A Keras model calling signature `name`, with its one image input and its chosen output."""
    if name not in loaded.signatures:
        raise UsageError(f"the SavedModel {path} has no '{name}' signature; {ACCEPTED}")
    function = loaded.signatures[name]
    inputs = function.structured_input_signature[1]
    outputs = function.structured_outputs
    if len(inputs) != 1 or (len(outputs) != 1 and preferred_output not in outputs):
        raise UsageError(
            f"the '{name}' signature of {path} must take one image tensor and return "
            f"'{preferred_output}'"
        )
    output_name = preferred_output if preferred_output in outputs else next(iter(outputs))
    ((input_name, spec),) = inputs.items()
    images = keras.Input(shape=tuple(spec.shape[1:]), name=input_name)
    layer = _Signature(loaded, name, input_name, output_name, name=name)
    return keras.Model(images, layer(images), name=name)
