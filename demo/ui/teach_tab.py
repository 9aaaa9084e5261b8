"""The Teach tab: name classes, add photos, train a classifier on Xception's features, see its
cross-validated accuracy and the photos' map block by block, classify a new photo, download.

Every event works on the visitor's own session (`gr.Request.session_hash`) in a `TeachService`;
the session is forgotten when the page closes (`unload`) or after it idles. Heavy events
(extracting features, exporting the model) run one at a time in Gradio's worker threads, off the
event loop and in their own queue, so the Classify tab keeps answering meanwhile. While photos are
being added (the visitor's or the starter set), the buttons that would act on the half-built set
are disabled (`TeachView.locked`); the service refuses such events too, for a client that calls
them directly.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from demo.services import UserError
from demo.services.teach import TaughtPrediction, TeachLimits, TeachService, Trained
from demo.store import ModelStore
from demo.ui import teach_figures, teach_text
from demo.ui.figures import Theme, theme_of
from demo.ui.text import file_size
from demo.ui.events import errors_as_messages
from xception_core.runtime.extractor import TRANSFER_BLOCKS

HEAVY = dict(concurrency_limit=1, concurrency_id="teach-heavy", api_visibility="private")
LIGHT = dict(concurrency_limit=2, concurrency_id="teach-light", api_visibility="private")


def _session(request: gr.Request | None) -> str:
    session = getattr(request, "session_hash", None)
    if not session:
        raise UserError("This page has no session; reload it.")
    return session


def _data_url(image: Image.Image) -> str:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _block(value) -> str:
    if value not in TRANSFER_BLOCKS:
        raise UserError("Choose one of the listed blocks.")
    return value


@dataclass(frozen=True)
class TeachView:
    """The tab's components, in the order a visitor meets them."""

    intro: gr.Markdown
    class_name: gr.Dropdown
    files: gr.File
    snapshot: gr.Image
    add: gr.Button
    starter: gr.Button
    added: gr.Markdown
    remove_name: gr.Dropdown
    remove: gr.Button
    clear: gr.Button
    overview: gr.HTML
    train: gr.Button
    summary: gr.Markdown
    block: gr.Radio
    map_plot: gr.Plot
    accuracy_plot: gr.Plot
    confusion_plot: gr.Plot
    new_photo: gr.Image
    classify: gr.Button
    unseen: gr.Dropdown
    top: gr.Label
    result: gr.HTML
    try_note: gr.Markdown
    prepare: gr.Button
    model_file: gr.DownloadButton
    head_file: gr.DownloadButton

    @property
    def classes(self) -> list[gr.components.Component]:
        """What changes with the classes (`_classes_now`)."""
        return [self.overview, self.class_name, self.remove_name, self.try_note]

    @property
    def downloads(self) -> list[gr.components.Component]:
        """The download buttons, hidden again whenever the classes change."""
        return [self.model_file, self.head_file]

    @property
    def trained(self) -> list[gr.components.Component]:
        """What a training shows (`_training_figures`)."""
        return [self.summary, self.map_plot, self.accuracy_plot, self.confusion_plot]

    @property
    def locked(self) -> list[gr.components.Component]:
        """What is disabled while photos are being added: everything that changes the classes or
        uses them."""
        return [self.add, self.starter, self.remove, self.clear, self.train, self.classify, self.unseen, self.prepare]


def _photos_layout(limits: TeachLimits) -> dict:
    with gr.Column(scale=5, min_width=300):
        class_name = gr.Dropdown(label="Class name", choices=[], value=None, allow_custom_value=True, interactive=True,
                                 elem_id="teach-class",
                                 info="Type a new name (e.g. “mug”) or pick one to add more photos.")
        files = gr.File(label="Photos (choose several at once)", file_count="multiple", file_types=["image"],
                        type="filepath", elem_id="teach-files", height=120)
        snapshot = gr.Image(label="…or a webcam snapshot or a pasted image", sources=["webcam", "clipboard"],
                            type="filepath", height=200, elem_id="teach-snapshot")
        add = gr.Button("Add photos to this class", variant="secondary", elem_id="teach-add")
        gr.Markdown(teach_text.STARTER_NOTE)
        starter = gr.Button("Load the starter set", elem_id="teach-starter")
        added = gr.Markdown(elem_id="teach-added")
        with gr.Row():
            remove_name = gr.Dropdown(label="Remove a class", choices=[], value=None, interactive=True, scale=3)
            remove = gr.Button("Remove", scale=1, size="sm")
            clear = gr.Button("Clear all", scale=1, size="sm")
    with gr.Column(scale=6, min_width=300):
        overview = gr.HTML(teach_text.overview([], limits.max_photos_per_class), elem_id="teach-overview-box")
        train = gr.Button("Train", variant="primary", elem_id="teach-train")
        summary = gr.Markdown(elem_id="teach-summary")
    return dict(class_name=class_name, files=files, snapshot=snapshot, add=add, starter=starter, added=added,
                remove_name=remove_name, remove=remove, clear=clear, overview=overview, train=train, summary=summary)


def _layout(service: TeachService) -> TeachView:
    intro = gr.Markdown(teach_text.INTRO, elem_id="teach-intro")
    gr.Markdown(teach_text.limits(service.limits))
    with gr.Row(equal_height=False):
        photos = _photos_layout(service.limits)
    gr.Markdown(teach_text.BLOCK_NOTE)
    block = gr.Radio(label="Features from", choices=[(teach_text.BLOCK_LABELS[b], b) for b in TRANSFER_BLOCKS],
                     value=None, interactive=True, elem_id="teach-block")
    with gr.Row(equal_height=False):
        with gr.Column(scale=6, min_width=300):
            map_plot = gr.Plot(label="Map of your photos", elem_id="teach-map")
        with gr.Column(scale=5, min_width=300):
            accuracy_plot = gr.Plot(label="Accuracy by block", elem_id="teach-accuracy")
            confusion_plot = gr.Plot(label="Confusion matrix", elem_id="teach-confusion")
    gr.Markdown(teach_text.CLASSIFY_NOTE)
    # Which block's classifier answers here, beside the box that tries it (Train may have shown another first).
    try_note = gr.Markdown(teach_text.try_note(None), elem_id="teach-try-note")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=300):
            new_photo = gr.Image(label="A new photo", sources=["upload", "webcam", "clipboard"], type="filepath",
                                 height=240, elem_id="teach-new")
            classify = gr.Button("Classify with my classifier", variant="primary", elem_id="teach-classify")
            unseen_photos = service.unseen_photos()
            unseen = gr.Dropdown(label="…or a kitchenware photo the starter set has not seen",
                                 choices=teach_text.unseen_choices(unseen_photos), value=None,
                                 visible=bool(unseen_photos), interactive=True, elem_id="teach-unseen")
        with gr.Column(scale=6, min_width=300):
            top = gr.Label(label="Your classes", num_top_classes=5, elem_id="teach-top")
            result = gr.HTML(elem_id="teach-result-box")
    gr.Markdown(teach_text.DOWNLOAD_NOTE)
    with gr.Row():
        prepare = gr.Button("Prepare downloads", elem_id="teach-prepare")
        model_file = gr.DownloadButton("Model (.keras)", visible=False, elem_id="teach-dl-model")
        head_file = gr.DownloadButton("Head only (.npz)", visible=False, elem_id="teach-dl-head")
    return TeachView(intro=intro, **photos, block=block, map_plot=map_plot, accuracy_plot=accuracy_plot,
                     confusion_plot=confusion_plot, new_photo=new_photo, classify=classify, unseen=unseen, top=top,
                     result=result, try_note=try_note, prepare=prepare, model_file=model_file, head_file=head_file)


def _classes_now(service: TeachService, view: TeachView, session: str, keep: str | None = None) -> dict:
    """The classes as they are now, with the downloads hidden (they no longer match). Updates are
    made fresh each time: Gradio consumes an update's value when it sends it."""
    classes = service.classes(session)
    names = [n for n, _ in classes]
    return {view.overview: teach_text.overview(classes, service.limits.max_photos_per_class),
            view.class_name: gr.update(choices=names, value=keep if keep in names else None),
            view.remove_name: gr.update(choices=names, value=None),
            view.try_note: teach_text.try_note(None),
            **{button: gr.update(visible=False, value=None) for button in view.downloads}}


def _wire_photos(service: TeachService, view: TeachView) -> None:
    """Adding photos (the visitor's or the starter set), removing a class, clearing all."""

    @errors_as_messages
    def on_add(name, paths, snap, request: gr.Request, progress=gr.Progress()):
        session = _session(request)
        payloads = (list(paths) if isinstance(paths, (list, tuple)) else [paths] if paths else []) + ([snap] if snap else [])
        report = service.add_photos(session, name, payloads,
                                    lambda done, total: progress((done, total), desc="Extracting features", unit="photos"))
        name = " ".join(str(name).split())
        return {view.added: teach_text.add_report(name, report, service.limits.max_photos_per_class),
                **_classes_now(service, view, session, name), view.files: None, view.snapshot: None}

    @errors_as_messages
    def on_starter(request: gr.Request, progress=gr.Progress()):
        session = _session(request)
        report = service.add_starter_set(
            session, lambda done, total: progress((done, total), desc="Extracting features", unit="photos"))
        return {view.added: teach_text.starter_report(report), **_classes_now(service, view, session)}

    @errors_as_messages
    def on_remove(name, request: gr.Request):
        session = _session(request)
        service.remove_class(session, name)
        return _classes_now(service, view, session)

    @errors_as_messages
    def on_clear(request: gr.Request):
        session = _session(request)
        service.clear(session)
        return _classes_now(service, view, session)

    classes = [*view.classes, *view.downloads]
    _while_adding(view.add.click, view).then(
        on_add, [view.class_name, view.files, view.snapshot], [view.added, *classes, view.files, view.snapshot],
        preprocess=False, **HEAVY).then(**_unlock(view))
    _while_adding(view.starter.click, view).then(on_starter, None, [view.added, *classes], **HEAVY).then(**_unlock(view))
    view.remove.click(on_remove, [view.remove_name], classes, **LIGHT)
    view.clear.click(on_clear, None, classes, **LIGHT)


def _while_adding(trigger, view: TeachView):
    """`trigger` (a button's `click`) first disables `view.locked` at once, without the queue, so
    nothing acts on the set while the photos are being added; `_unlock` enables them again after
    the add, whether it succeeded or not (`.then`)."""
    return trigger(lambda: [gr.update(interactive=False) for _ in view.locked], None, view.locked, queue=False,
                   api_visibility="private")


def _unlock(view: TeachView) -> dict:
    """Arguments of the `.then` that enables `view.locked` again."""
    return dict(fn=lambda: [gr.update(interactive=True) for _ in view.locked], inputs=None, outputs=view.locked,
                queue=False, api_visibility="private")


def _training_figures(trained: Trained, block: str, theme: Theme) -> tuple:
    """The summary, the photos' map, accuracy by block and the confusion matrix, for `block`'s
    features, in the page's theme."""
    result = trained.blocks[block]
    short = {b: teach_text.BLOCK_LABELS[b].split(" · ")[0] for b in trained.blocks}
    photo_map = teach_figures.feature_map_figure(
        result.map.points, trained.labels, result.cv.predicted, trained.class_names,
        [p.name for p in trained.photos], [p.data_url for p in trained.photos],
        title=teach_text.map_title(trained, block), explained=result.map.explained, theme=theme)
    accuracy = teach_figures.accuracy_by_block_figure(
        list(short.values()), [trained.blocks[b].cv.accuracy for b in trained.blocks],
        [trained.blocks[b].dims for b in trained.blocks], chance=trained.chance, selected=short[block],
        title="Cross-validated accuracy, block by block", theme=theme)
    confusion = teach_figures.confusion_figure(result.cv.confusion, trained.class_names,
                                               title=f"Confusion matrix ({teach_text.BLOCK_LABELS[block]})",
                                               theme=theme)
    return teach_text.train_summary(trained, block), photo_map, accuracy, confusion


def _wire_training(service: TeachService, view: TeachView, client: gr.JSON) -> None:
    """Training, and the figures of another block's features (`client`: the page's theme)."""

    @errors_as_messages
    def on_train(client_value, request: gr.Request):
        trained = service.train(_session(request))
        return (*_training_figures(trained, trained.best_block, theme_of(client_value)),
                gr.update(value=trained.best_block), teach_text.try_note(trained))

    @errors_as_messages
    def on_block(name, client_value, request: gr.Request):
        try:
            trained = service.trained(_session(request))
        except UserError:  # not trained yet: the choice applies to the next training
            return gr.skip()
        return _training_figures(trained, _block(name), theme_of(client_value))

    view.train.click(on_train, [client], [*view.trained, view.block, view.try_note], **LIGHT)
    view.block.input(on_block, [view.block, client], view.trained, **LIGHT)


def _wire_trying(service: TeachService, view: TeachView) -> None:
    """The taught classifier on a new photo, or on a starter-set photo it has not seen."""

    def answer(prediction: TaughtPrediction) -> tuple:
        return ({name: p for name, p in prediction.top},
                teach_text.result_images(_data_url(prediction.image), _data_url(prediction.cam)))

    @errors_as_messages
    def on_classify(path, request: gr.Request):
        return (*answer(service.classify(_session(request), path)), None)

    @errors_as_messages
    def on_unseen(index, request: gr.Request):
        if index is None:
            return gr.skip()
        return answer(service.classify_unseen(_session(request), index))

    view.classify.click(on_classify, [view.new_photo], [view.top, view.result, view.new_photo], preprocess=False,
                        **LIGHT)
    view.unseen.input(on_unseen, [view.unseen], [view.top, view.result], **LIGHT)


def _wire_downloads(service: TeachService, view: TeachView) -> None:
    @errors_as_messages
    def on_prepare(request: gr.Request, progress=gr.Progress()):
        session = _session(request)
        progress(0.1, desc="Writing the head")
        head = service.export_head(session)
        progress(0.3, desc="Writing Xception + your classifier")
        model = service.export_model(session)
        return (gr.update(value=str(model), visible=True, label=f"Model (.keras, {file_size(model.stat().st_size)})"),
                gr.update(value=str(head), visible=True, label=f"Head only (.npz, {file_size(head.stat().st_size)})"))

    view.prepare.click(on_prepare, None, view.downloads, **HEAVY)

    # The file budget may have trimmed a prepared download since: the click (which downloads in the
    # browser) also asks the server, and a trimmed one says to prepare it again and hides itself.
    for button, kind in ((view.model_file, "model"), (view.head_file, "head")):
        @errors_as_messages(clear=lambda *_, **__: gr.update(visible=False, value=None))
        def on_download(request: gr.Request, kind: str = kind):
            service.check_download(_session(request), kind)
            return gr.skip()

        button.click(on_download, None, button, **LIGHT)


def _wire_intro(store: ModelStore, service: TeachService, view: TeachView, blocks: gr.Blocks) -> None:
    """The introduction names the live weights once they are known (on load, and while they load)."""

    def intro_now():
        if not store.is_ready():
            return teach_text.INTRO
        try:
            return teach_text.intro(service.model())
        except UserError:  # failed: the header says why
            return teach_text.INTRO

    blocks.load(intro_now, None, view.intro, api_visibility="private", queue=False)
    timer = gr.Timer(2.0)  # never ask the store while building: a Serve ingress builds inside its event loop
    timer.tick(intro_now, None, view.intro, api_visibility="private", queue=False)
    timer.tick(lambda: gr.Timer(active=not store.settled()), None, timer, api_visibility="private", queue=False)


def teach_service(store: ModelStore, disk: Callable[[int], AbstractContextManager[bool]] | None = None) -> TeachService:
    """The Teach tab's service, its downloads inside Gradio's upload folder (served without a copy);
    `disk` reserves room for a download on the server's disk budget (`TeachService`)."""
    return TeachService(store, store.settings.upload_dir / "teach", disk=disk)


def build_teach_tab(store: ModelStore, blocks: gr.Blocks, client: gr.JSON | None = None,
                    service: TeachService | None = None) -> TeachService:
    """Builds the tab inside the caller's `gr.Tab` context; `blocks` gets the session cleanup;
    `client` is the browser's report ({dark, width}) the figures follow (None: light); `service`:
    one shared with other tabs (default: a new `teach_service`, with no disk budget)."""
    client = client if client is not None else gr.JSON(visible=False)
    service = service if service is not None else teach_service(store)
    view = _layout(service)
    _wire_intro(store, service, view, blocks)
    _wire_photos(service, view)
    _wire_training(service, view, client)
    _wire_trying(service, view)
    _wire_downloads(service, view)

    def on_unload(request: gr.Request):
        service.end(getattr(request, "session_hash", "") or "")

    blocks.unload(on_unload)
    return service
