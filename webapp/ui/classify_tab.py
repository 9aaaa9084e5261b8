"""The Classify tab: top-5 labels, timing, weights in use, and Grad-CAM ("where did it look?")."""

from __future__ import annotations

import gradio as gr

from webapp.services.classify import RESULT_TTL_S, ClassifyService
from webapp.store import ModelStore
from webapp.ui import text
from webapp.ui.events import shown
from xception.io.assets import example_images

def build_classify_tab(store: ModelStore, service: ClassifyService):
    """Builds the tab inside the caller's `gr.Tab` context.

    Returns:
        (refresh_weights, weights): the handler that refreshes the weights selector, and it.
    """
    examples = example_images(store.settings.assets_dir)
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
            gr.Markdown(text.GRADCAM_NOTE)
    explained = gr.State(None, time_to_live=RESULT_TTL_S)

    @shown
    def on_classify(payload, key):
        classified = service.classify(payload, key)
        top_labels = classified.top_labels
        return ({label: float(p) for label, p in classified.prediction.top},
                text.classify_info(classified.served, classified.seconds),
                gr.update(choices=top_labels, value=top_labels[0]), service.explain(classified),
                service.remember(classified))

    @shown
    def on_explain(label, result_key: str | None):
        if result_key is None or not label:
            return gr.update()
        return service.explain(service.recall(result_key), label)

    run.click(on_classify, [image_in, weights], [labels_out, info_out, cam_class, cam_out, explained],
              preprocess=False, api_visibility="private", concurrency_limit=8, concurrency_id="classify")
    cam_class.input(on_explain, [cam_class, explained], [cam_out], api_visibility="private")

    # API-only endpoint: a hidden trigger whose event is the public `/classify`.
    api_out = gr.JSON(visible=False)
    api_trigger = gr.Button(visible=False)
    @shown
    def classify(image, weights: str | None = None) -> dict[str, float]:
        return service.top(image, weights)

    api_trigger.click(classify, [image_in, weights], [api_out], api_name="classify", preprocess=False,
                      concurrency_limit=8, concurrency_id="classify",
                      api_description="Classify an image: returns {label: probability} for the top 5 classes.")

    def refresh_weights(current):
        keys = store.available()
        choices = [(store.title(k), k) for k in keys]
        value = current if current in keys else (keys[0] if keys else None)
        return gr.update(choices=choices, value=value, visible=len(keys) > 1 or not keys)

    return refresh_weights, weights
