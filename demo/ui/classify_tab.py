"""The Classify tab: top-5 labels, timing, weights in use, and Grad-CAM ("where did it look?"),
with example photos that fit the live label set; and the public `/classify` and `/gradcam`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from demo.services.classify import RESULT_TTL_S, ClassifyService
from demo.services.examples import ExampleService
from demo.store import ModelStore
from demo.ui import text
from demo.ui.events import shown

EXAMPLE_COLUMNS = 5


@dataclass
class ClassifyTab:
    """What the layout wires to other tabs and the status timer."""

    image: gr.Image
    weights: gr.Dropdown
    examples: gr.Gallery
    examples_credit: gr.Markdown
    refresh_weights: Any
    refresh_examples: Any


def example_items(photos) -> list[tuple[str, str]]:
    """Gallery items (path, caption) of `ExamplePhoto`s."""
    return [(str(p.path), p.caption) for p in photos]


def build_classify_tab(store: ModelStore, service: ClassifyService, examples: ExampleService,
                       max_upload: str) -> ClassifyTab:
    """Builds the tab inside the caller's `gr.Tab` context."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            image_in = gr.Image(label="Image", type="filepath", sources=["upload", "webcam", "clipboard"],
                                height=360, elem_id="classify-image")
            upload_md = gr.Markdown(text.upload_note(max_upload), elem_id="upload-note")
            weights = gr.Dropdown(label="Weights", choices=[], value=None, interactive=True,
                                  info="Which pretrained weights and label set to use.")
            run = gr.Button("Classify", variant="primary")
            gallery = gr.Gallery(label="Examples: click one to classify it", columns=EXAMPLE_COLUMNS, height="auto",
                                 allow_preview=False, object_fit="cover", interactive=False,
                                 elem_id="classify-examples")
            credit = gr.Markdown(elem_id="examples-credit")
        with gr.Column(scale=6):
            labels_out = gr.Label(label="Top 5", num_top_classes=5, elem_id="top5")
            info_out = gr.Markdown(elem_id="classify-info")
            cam_class = gr.Radio(label="Explain class", choices=[], interactive=True)
            # JPEG: encoding Gradio's default WebP was a large share of click-to-result (bench/README.md).
            cam_out = gr.Image(label="Grad-CAM", type="pil", interactive=False, height=360, elem_id="gradcam",
                               format="jpeg")
            cam_note = gr.Markdown(text.GRADCAM_NOTE, elem_id="gradcam-note")
            gr.Markdown(text.WIRING_NOTE, elem_id="wiring-note")
    explained = gr.State(None, time_to_live=RESULT_TTL_S)  # a key of service.remember, not the result
    examples_of = gr.State(None)  # which weights the shown examples are for: resent only on a change

    @shown
    def on_classify(payload, key):
        classified = service.classify(payload, key)
        top_labels = classified.top_labels
        grid = classified.prediction.features.shape[0]
        return ({label: float(p) for label, p in classified.prediction.top},
                text.classify_info(classified.served, classified.seconds),
                gr.update(choices=top_labels, value=top_labels[0]), service.explain(classified),
                service.remember(classified), text.gradcam_note(grid, classified.served.input_size))

    @shown
    def on_explain(label, result_key: str | None):
        if result_key is None or not label:
            return gr.update()
        return service.explain(service.recall(result_key), label)

    classify_outputs = [labels_out, info_out, cam_class, cam_out, explained, cam_note]
    run.click(on_classify, [image_in, weights], classify_outputs,
              preprocess=False, api_visibility="private", concurrency_limit=8, concurrency_id="classify")
    cam_class.input(on_explain, [cam_class, explained], [cam_out], api_visibility="private")

    @shown
    def on_example(key, evt: gr.SelectData):
        photos = examples.examples(service.model(key))
        index = evt.index if isinstance(evt.index, int) else -1
        if not 0 <= index < len(photos):
            return gr.skip()
        return str(photos[index].path)

    # A click on an example shows it and classifies it: one click to an answer.
    gallery.select(on_example, [weights], [image_in], api_visibility="private", queue=False).success(
        on_classify, [image_in, weights], classify_outputs, preprocess=False, api_visibility="private",
        concurrency_limit=8, concurrency_id="classify")

    # -------------------------------------------------------------- the public API
    # Its own hidden components: their labels are what the API page and the clients call each
    # parameter and output; the handlers' parameter names are the parameters' names.
    with gr.Column(visible=False):
        api_image = gr.Image(label=text.API_IMAGE, type="filepath")
        api_weights = gr.Textbox(label=text.API_WEIGHTS, value="")
        api_class = gr.Textbox(label=text.API_CLASS, value="")
        api_top5 = gr.JSON(label="top5: {class: probability} of the 5 most probable classes")
        api_heatmap = gr.Image(label="heatmap: Grad-CAM of the class over the photo (PNG)", type="pil",
                               format="png")
        api_score = gr.JSON(label="score: {class_name, probability, rank} of the explained class")
        api_classify = gr.Button(visible=False)
        api_gradcam = gr.Button(visible=False)

    @shown
    def classify(image, weights: str = "") -> dict[str, float]:
        """Classify a photo: the 5 most probable classes of the weights, with probabilities."""
        return service.top(image, weights or None)

    @shown
    def gradcam(image, class_name: str = "", weights: str = ""):
        """Where the model looked for one class: a Grad-CAM heat map over the photo, and the class's score."""
        classified = service.classify(image, weights or None, k=len(service.model(weights or None).labels))
        label = class_name.strip() if isinstance(class_name, str) and class_name.strip() else classified.top_labels[0]
        heatmap = service.explain(classified, label)
        ranked = classified.top_labels
        probability = dict(classified.prediction.top)[label]
        return heatmap, {"class_name": label, "probability": round(float(probability), 6),
                         "rank": ranked.index(label) + 1}

    api_classify.click(classify, [api_image, api_weights], [api_top5], api_name="classify", preprocess=False,
                       concurrency_limit=8, concurrency_id="classify", api_description=text.API_CLASSIFY)
    api_gradcam.click(gradcam, [api_image, api_class, api_weights], [api_heatmap, api_score], api_name="gradcam",
                      preprocess=False, concurrency_limit=8, concurrency_id="classify",
                      api_description=text.API_GRADCAM)

    def refresh_weights(current):
        keys = store.available()
        choices = [(store.title(k), k) for k in keys]
        value = current if current in keys else (keys[0] if keys else None)
        return gr.update(choices=choices, value=value, visible=len(keys) > 1 or not keys)

    def refresh_examples(key, shown_for):
        """The examples and the upload note for the selected (else default) weights, once loaded
        (nothing is resent while the status poll ticks and the weights stay the same)."""
        skip = (gr.skip(),) * 4
        if not store.is_ready():
            return skip
        try:
            served = service.model(key if key in store.available() else None)
        except Exception:  # noqa: BLE001 - shown by the status line
            return skip
        if served.key == shown_for:
            return skip
        photos = examples.examples(served)
        return (example_items(photos), text.examples_credit(photos),
                text.upload_note(max_upload, served.input_size), served.key)

    example_io = ([weights, examples_of], [gallery, credit, upload_md, examples_of])
    weights.input(refresh_examples, *example_io, api_visibility="private")
    return ClassifyTab(image_in, weights, gallery, credit, refresh_weights, (refresh_examples, *example_io))
