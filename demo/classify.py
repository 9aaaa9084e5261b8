"""The Classify tab: top-5 labels, timing, weights in use, and Grad-CAM ("where did it look?")."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import gradio as gr
import numpy as np
from PIL import Image

from demo.images import payload_to_image
from xception_core.assets import example_images
from xception_core.inference import Classifier
from xception_core.serving import ModelStore
from xception_core.visualize import overlay
from xception_core.weights import WeightsUnavailableError

logger = logging.getLogger(__name__)

MODEL_WAIT_S = 600.0  # a first start may download ~90 MB of weights

GRADCAM_NOTE = (
    "**Where did it look?** Grad-CAM (Selvaraju et al., 2017): the exit flow's last feature maps "
    "(10×10 at 299×299, 5×5 at 150×150), each weighted by how much it raises the chosen class's "
    "score, summed and stretched over the photo. Bright = regions that pushed the model *towards* "
    "that class. It is coarse by design, one cell per 32 pixels."
)


@dataclass
class Explained:
    """What a classification leaves in the session for later Grad-CAM requests."""

    key: str
    features: np.ndarray
    labels: list[str]
    image: Image.Image


def get_classifier(store: ModelStore, key: str | None) -> Classifier:
    """The store's classifier, with failures turned into messages for the page."""
    try:
        return store.get(key or None, timeout=MODEL_WAIT_S)
    except TimeoutError as exc:
        raise gr.Error(f"{exc}. Status: {store.status()}") from None
    except (WeightsUnavailableError, ValueError) as exc:
        raise gr.Error(str(exc)) from None


def classify_image(store: ModelStore, payload, key: str | None = None, k: int = 5):
    """Decode, preprocess and classify one image payload.

    Returns:
        (classifier, image, prediction, seconds spent in the network).
    """
    classifier = get_classifier(store, key)
    image = payload_to_image(payload)
    x = classifier.preprocess(image)
    start = time.perf_counter()
    prediction = store.predict(classifier, x, k)
    return classifier, image, prediction, time.perf_counter() - start


def api_classify(store: ModelStore):
    """`/classify`: image in, `{label: probability}` (top 5) out."""

    def classify(image, weights: str | None = None) -> dict[str, float]:
        _, _, prediction, _ = classify_image(store, image, weights)
        return {label: round(float(p), 6) for label, p in prediction.top}

    return classify


def _display_copy(image: Image.Image, side: int = 768) -> Image.Image:
    """A copy no larger than `side` pixels a side: what the page shows, kept per session."""
    copy = image.copy()
    copy.thumbnail((side, side))
    return copy


def _cam_image(classifier: Classifier, image, features: np.ndarray, class_index: int):
    return overlay(image, classifier.gradcam(features, class_index), alpha=0.5)


def build_classify_tab(store: ModelStore) -> None:
    """Builds the tab inside the caller's `gr.Tab` context."""
    examples = example_images()
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            image_in = gr.Image(
                label="Image", type="filepath", sources=["upload", "webcam", "clipboard"], height=360,
            )
            weights = gr.Dropdown(label="Weights", choices=[], value=None, interactive=True,
                                  info="Which pretrained weights and label set to use.")
            run = gr.Button("Classify", variant="primary")
            gr.Examples(examples=[[str(e.path)] for e in examples], inputs=[image_in],
                        example_labels=[e.title for e in examples], label="Examples (sources and licenses in assets/examples/SOURCES.md)")
        with gr.Column(scale=6):
            labels_out = gr.Label(label="Top 5", num_top_classes=5)
            info_out = gr.Markdown()
            cam_class = gr.Radio(label="Explain class", choices=[], interactive=True)
            cam_out = gr.Image(label="Grad-CAM", type="pil", interactive=False, height=360, elem_id="gradcam")
            gr.Markdown(GRADCAM_NOTE)
    explained = gr.State(None)

    def on_classify(payload, key):
        classifier, image, prediction, seconds = classify_image(store, payload, key)
        top_labels = [label for label, _ in prediction.top]
        index = classifier.labels.index(top_labels[0])
        cam = _cam_image(classifier, image, prediction.features, index)
        info = (f"**{seconds * 1000:.0f} ms** in the network · weights: **{classifier.title}** "
                f"({classifier.info.variant} wiring, {classifier.input_size}×{classifier.input_size} input, "
                f"{len(classifier.labels)} classes)")
        if len(classifier.labels) <= 20:
            info += f"  \nThese weights only know {len(classifier.labels)} classes: {', '.join(classifier.labels)}."
        state = Explained(key or store.default_key or "", prediction.features, top_labels, _display_copy(image))
        return ({label: float(p) for label, p in prediction.top}, info, gr.update(choices=top_labels, value=top_labels[0]),
                cam, state)

    def on_explain(label, state: Explained | None):
        if state is None or not label:
            return gr.update()
        classifier = get_classifier(store, state.key or None)
        if label not in classifier.labels:
            raise gr.Error(f"{label!r} is not a class of {classifier.title}")
        return _cam_image(classifier, state.image, state.features, classifier.labels.index(label))

    run.click(on_classify, [image_in, weights], [labels_out, info_out, cam_class, cam_out, explained],
              preprocess=False, api_visibility="private", concurrency_limit=8, concurrency_id="classify")
    cam_class.input(on_explain, [cam_class, explained], [cam_out], api_visibility="private")

    # API-only endpoint: a hidden trigger whose event is the public `/classify`.
    api_out = gr.JSON(visible=False)
    api_trigger = gr.Button(visible=False)
    api_trigger.click(api_classify(store), [image_in, weights], [api_out], api_name="classify", preprocess=False,
                      concurrency_limit=8, concurrency_id="classify",
                      api_description="Classify an image: returns {label: probability} for the top 5 classes.")

    def refresh_weights(current):
        keys = store.available()
        choices = [(store.title(k), k) for k in keys]
        value = current if current in keys else (keys[0] if keys else None)
        return gr.update(choices=choices, value=value, visible=len(keys) > 1 or not keys)

    return refresh_weights, weights
