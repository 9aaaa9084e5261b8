"""The Classify tab: top-5 labels, timing, weights in use, and Grad-CAM ("where did it look?"),
with example photos that fit the live label set; and the public `/classify` and `/gradcam`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from demo.services import UserError
from demo.services.classify import RESULT_TTL_S, ClassifyService
from demo.services.examples import ExampleService
from demo.store import ModelStore
from demo.ui import text
from demo.ui.events import errors_as_api_errors, errors_as_messages

EXAMPLE_COLUMNS = 5
# Scrolls the top 5 to the top of the screen when they start below its upper half (a phone, where
# the columns stack); leaves a desktop, where they sit beside the photo, where it is.
SHOW_ANSWER_JS = """() => { const answer = document.querySelector('#top5'); if (!answer) return;
  const top = answer.getBoundingClientRect().top;
  if (top < 0 || top > window.innerHeight / 2) answer.scrollIntoView({block: 'start', behavior: 'smooth'}); }"""


@dataclass(frozen=True)
class Refresh:
    """A handler the page runs when it loads and on every tick of the status timer."""

    fn: Callable
    inputs: list[gr.components.Component]
    outputs: list[gr.components.Component]


@dataclass(frozen=True)
class ClassifyTab:
    """What the layout wires to the Explore tab (the photo) and to the page's load and timer."""

    image: gr.Image
    refreshes: tuple[Refresh, ...]


@dataclass(frozen=True)
class ClassifyView:
    """The tab's components."""

    image: gr.Image
    upload_note: gr.Markdown
    weights: gr.Dropdown
    run: gr.Button
    examples: gr.Gallery
    examples_credit: gr.Markdown
    top5: gr.Label
    info: gr.Markdown
    cam_class: gr.Radio
    cam: gr.Image
    cam_note: gr.Markdown
    explained: gr.State  # a key of service.remember, not the result
    examples_for: gr.State  # which weights the shown examples are for: resent only on a change


def example_items(photos) -> list[tuple[str, str]]:
    """Gallery items (path, caption) of `ExamplePhoto`s."""
    return [(str(p.path), p.caption) for p in photos]


def _layout(max_upload: str) -> ClassifyView:
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            image = gr.Image(label="Image", type="filepath", sources=["upload", "webcam", "clipboard"], height=360,
                             elem_id="classify-image")
            upload_note = gr.Markdown(text.upload_note(max_upload), elem_id="upload-note")
            weights = gr.Dropdown(label="Weights", choices=[], value=None, interactive=True,
                                  info="Which pretrained weights and label set to use.")
            run = gr.Button("Classify", variant="primary")
            # The gallery's own label floats over its first thumbnails: a heading above it instead.
            gr.Markdown(text.EXAMPLES_HEAD, elem_id="classify-examples-head")
            examples = gr.Gallery(show_label=False, columns=EXAMPLE_COLUMNS, height="auto",
                                  allow_preview=False, object_fit="cover", interactive=False,
                                  elem_id="classify-examples")
            credit = gr.Markdown(elem_id="examples-credit")
        with gr.Column(scale=6):
            top5 = gr.Label(label="Top 5", num_top_classes=5, elem_id="top5")
            info = gr.Markdown(elem_id="classify-info")
            cam_class = gr.Radio(label="Explain class", choices=[], interactive=True)
            # JPEG: encoding Gradio's default WebP was a large share of click-to-result (bench/README.md).
            cam = gr.Image(label="Grad-CAM", type="pil", interactive=False, height=360, elem_id="gradcam",
                           format="jpeg")
            cam_note = gr.Markdown(text.GRADCAM_NOTE, elem_id="gradcam-note")
            gr.Markdown(text.WIRING_NOTE, elem_id="wiring-note")
    return ClassifyView(image, upload_note, weights, run, examples, credit, top5, info, cam_class, cam, cam_note,
                        gr.State(None, time_to_live=RESULT_TTL_S), gr.State(None))


def _cleared(view: ClassifyView) -> dict:
    """The outputs with no answer in them: what a new photo, or a failed classification, leaves."""
    return {view.top5: None, view.info: "", view.cam_class: gr.update(choices=[], value=None), view.cam: None,
            view.explained: None, view.cam_note: text.GRADCAM_NOTE}


def _wire_classify(view: ClassifyView, service: ClassifyService, examples: ExampleService) -> None:
    """A new photo (uploaded, snapped or pasted: classified at once), the Classify button, a click
    on an example (shown, then classified), another class explained, other weights chosen."""

    @errors_as_messages(clear=lambda *args: _cleared(view))
    def on_classify(payload, key):
        if payload is None:  # the photo was removed: so is its answer
            return _cleared(view)
        classified = service.classify(payload, key)
        top_labels = classified.top_labels
        grid = classified.prediction.features.shape[0]
        return {view.top5: {label: float(p) for label, p in classified.prediction.top},
                view.info: text.classify_info(classified.served, classified.seconds, classified.image.size),
                view.cam_class: gr.update(choices=top_labels, value=top_labels[0]),
                view.cam: service.explain(classified), view.explained: service.remember(classified),
                view.cam_note: text.gradcam_note(grid, classified.served.input_size)}

    @errors_as_messages
    def on_explain(label, result_key: str | None):
        if result_key is None or not label:
            return gr.skip()
        return service.explain(service.recall(result_key), label)

    @errors_as_messages
    def on_example(key, evt: gr.SelectData):
        photos = examples.examples(service.model(key))
        index = evt.index if isinstance(evt.index, int) else -1
        if not 0 <= index < len(photos):
            return gr.skip()
        return str(photos[index].path)

    outputs = list(_cleared(view))
    classify = dict(preprocess=False, api_visibility="private", concurrency_limit=8, concurrency_id="classify")
    clear = dict(fn=lambda: _cleared(view), inputs=None, outputs=outputs, api_visibility="private", queue=False,
                 show_progress="hidden")
    view.run.click(on_classify, [view.image, view.weights], outputs, **classify)
    # A new photo never sits beside the last one's answer: the answer goes at once, and the new
    # photo is classified without a click (as an example is).
    # ...and an example stays marked only while it is the photo shown (-1: Gradio 6's gallery keeps
    # its mark on an update to None; no thumbnail has index -1).
    view.image.input(fn=lambda: {**_cleared(view), view.examples: gr.update(selected_index=-1)},
                     inputs=None, outputs=[*outputs, view.examples], api_visibility="private", queue=False,
                     show_progress="hidden").then(on_classify, [view.image, view.weights], outputs, **classify)
    view.weights.input(**clear)
    view.cam_class.input(on_explain, [view.cam_class, view.explained], [view.cam], api_visibility="private")
    # A click on an example shows it and classifies it: one click to an answer.
    view.examples.select(on_example, [view.weights], [view.image], api_visibility="private", queue=False).success(
        on_classify, [view.image, view.weights], outputs, **classify)
    # On a phone the answer is below the examples: the page goes to it at the click, so the top 5
    # fill in view (the browser alone: nothing to ask the server).
    view.examples.select(None, None, None, js=SHOW_ANSWER_JS, api_visibility="private", queue=False)


def find_class(labels: tuple[str, ...] | list[str], asked: str) -> str:
    """The label `asked` names, ignoring case and spaces at the ends or repeated ("  Fork " → "fork").

    Raises:
        UserError: No such class; the message lists the classes (the first few of a long list).
    """
    def key(name: str) -> str:
        return " ".join(name.split()).casefold()

    by_key = {key(label): label for label in labels}
    found = by_key.get(key(asked))
    if found is None:
        raise UserError(text.unknown_class(asked, labels))
    return found


def _build_api(service: ClassifyService) -> None:
    """`/classify` and `/gradcam`, on hidden components of their own: the outputs' labels are the
    names the clients give them (`top5`, `heatmap`, `score`, as the README says); the inputs'
    labels describe each parameter; the handlers' parameter names are the parameters' names."""
    with gr.Column(visible=False):
        api_image = gr.Image(label=text.API_IMAGE, type="filepath")
        api_weights = gr.Textbox(label=text.API_WEIGHTS, value="")
        api_class = gr.Textbox(label=text.API_CLASS, value="")
        api_top5 = gr.JSON(label="top5")
        api_heatmap = gr.Image(label="heatmap", type="pil", format="png")
        api_score = gr.JSON(label="score")
        api_classify = gr.Button(visible=False)
        api_gradcam = gr.Button(visible=False)

    @errors_as_api_errors
    def classify(image, weights: str = "") -> dict[str, float]:
        """Classify a photo: the 5 most probable classes of the weights, with probabilities."""
        return service.top(image, weights or None)

    @errors_as_api_errors
    def gradcam(image, class_name: str = "", weights: str = ""):
        """Where the model looked for one class: a Grad-CAM heat map over the photo, and the class's score."""
        served = service.model(weights or None)
        asked = class_name if isinstance(class_name, str) else ""
        label = find_class(served.labels, asked) if asked.strip() else None  # refused before any work
        classified = service.classify(image, weights or None, k=len(served.labels))
        label = label or classified.top_labels[0]
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


def _refreshes(store: ModelStore, service: ClassifyService, examples: ExampleService, view: ClassifyView,
               max_upload: str) -> tuple[Refresh, ...]:
    """The weights list, and the examples and upload note of the chosen weights, as the store loads."""

    def refresh_weights(current):
        keys = store.available()
        choices = [(store.title(k), k) for k in keys]
        value = current if current in keys else (keys[0] if keys else None)
        return gr.update(choices=choices, value=value, visible=len(keys) > 1 or not keys)

    def refresh_examples(key, shown_for):
        """The examples and the upload note for the selected (else default) weights, once loaded
        (nothing is resent while the status poll ticks and the weights stay the same)."""
        if not store.is_ready():
            return gr.skip()
        try:
            served = service.model(key if key in store.available() else None)
        except Exception:  # noqa: BLE001 - shown by the status line
            return gr.skip()
        if served.key == shown_for:
            return gr.skip()
        photos = examples.examples(served)
        return (example_items(photos), text.examples_credit(photos),
                text.upload_note(max_upload, served.input_size), served.key)

    examples_refresh = Refresh(refresh_examples, [view.weights, view.examples_for],
                               [view.examples, view.examples_credit, view.upload_note, view.examples_for])
    view.weights.input(examples_refresh.fn, examples_refresh.inputs, examples_refresh.outputs,
                       api_visibility="private")
    return Refresh(refresh_weights, [view.weights], [view.weights]), examples_refresh


def build_classify_tab(store: ModelStore, service: ClassifyService, examples: ExampleService,
                       max_upload: str) -> ClassifyTab:
    """Builds the tab inside the caller's `gr.Tab` context."""
    view = _layout(max_upload)
    _wire_classify(view, service, examples)
    _build_api(service)
    return ClassifyTab(view.image, _refreshes(store, service, examples, view, max_upload))
