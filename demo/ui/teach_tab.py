"""The Teach tab: name classes, add photos, train a classifier on Xception's features, see its
cross-validated accuracy and the photos' map block by block, classify a new photo, download.

Every event works on the visitor's own session (`gr.Request.session_hash`) in a `TeachService`;
the session is forgotten when the page closes (`unload`) or after it idles. Heavy events
(extracting features, exporting the model) run one at a time in Gradio's worker threads, off the
event loop and in their own queue, so the Classify tab keeps answering meanwhile.
"""

from __future__ import annotations

import base64
import io

import gradio as gr
from PIL import Image

from demo.services import UserError
from demo.services.teach import TeachService
from demo.store import ModelStore
from demo.ui import teach_figures, teach_text
from demo.ui.events import shown
from xception_core.runtime.extractor import FINAL_BLOCK, TRANSFER_BLOCKS

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


def build_teach_tab(store: ModelStore, blocks: gr.Blocks) -> TeachService:
    """Builds the tab inside the caller's `gr.Tab` context; `blocks` gets the session cleanup."""
    service = TeachService(store, store.settings.upload_dir / "teach")
    limits = service.limits
    gr.Markdown(teach_text.INTRO)
    gr.Markdown(teach_text.limits(limits))
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=300):
            class_name = gr.Dropdown(label="Class name", choices=[], value=None, allow_custom_value=True,
                                     interactive=True, elem_id="teach-class",
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
    gr.Markdown(teach_text.BLOCK_NOTE)
    block = gr.Radio(label="Features from", choices=[(teach_text.BLOCK_LABELS[b], b) for b in TRANSFER_BLOCKS],
                     value=FINAL_BLOCK, interactive=True, elem_id="teach-block")
    with gr.Row(equal_height=False):
        with gr.Column(scale=6, min_width=300):
            map_plot = gr.Plot(label="Map of your photos", elem_id="teach-map")
        with gr.Column(scale=5, min_width=300):
            accuracy_plot = gr.Plot(label="Accuracy by block", elem_id="teach-accuracy")
            confusion_plot = gr.Plot(label="Confusion matrix", elem_id="teach-confusion")
    gr.Markdown(teach_text.CLASSIFY_NOTE)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=300):
            new_photo = gr.Image(label="A new photo", sources=["upload", "webcam", "clipboard"], type="filepath",
                                 height=240, elem_id="teach-new")
            classify = gr.Button("Classify with my classifier", variant="primary", elem_id="teach-classify")
            unseen = service.unseen_photos()
            sample = gr.Dropdown(label="…or a kitchenware photo the starter set has not seen",
                                 choices=[(p.stem, i) for i, p in enumerate(unseen)], value=None,
                                 visible=bool(unseen), interactive=True, elem_id="teach-unseen")
        with gr.Column(scale=6, min_width=300):
            top = gr.Label(label="Your classes", num_top_classes=5, elem_id="teach-top")
            result = gr.HTML(elem_id="teach-result-box")
    gr.Markdown(teach_text.DOWNLOAD_NOTE)
    with gr.Row():
        prepare = gr.Button("Prepare downloads", elem_id="teach-prepare")
        model_file = gr.DownloadButton("Model (.keras)", visible=False, elem_id="teach-dl-model")
        head_file = gr.DownloadButton("Head only (.npz)", visible=False, elem_id="teach-dl-head")

    def refreshed(session: str, keep: str | None = None):
        classes = service.classes(session)
        names = [n for n, _ in classes]
        return (teach_text.overview(classes, limits.max_photos_per_class),
                gr.update(choices=names, value=keep if keep in names else None),
                gr.update(choices=names, value=None))

    hidden = gr.update(visible=False, value=None)

    @shown
    def on_add(name, paths, snap, request: gr.Request, progress=gr.Progress()):
        session = _session(request)
        payloads = (list(paths) if isinstance(paths, (list, tuple)) else [paths] if paths else []) + ([snap] if snap else [])
        report = service.add_photos(session, name, payloads,
                                    lambda d, t: progress((d, t), desc="Extracting features", unit="photos"))
        view, names, removable = refreshed(session, " ".join(str(name).split()))
        return (teach_text.add_report(" ".join(str(name).split()), report), view, names, removable, None, None,
                hidden, hidden)

    @shown
    def on_starter(request: gr.Request, progress=gr.Progress()):
        session = _session(request)
        report = service.add_starter_set(session, lambda d, t: progress((d, t), desc="Extracting features",
                                                                        unit="photos"))
        return (teach_text.starter_report(report), *refreshed(session), hidden, hidden)

    @shown
    def on_remove(name, request: gr.Request):
        session = _session(request)
        service.remove_class(session, name)
        return (*refreshed(session), hidden, hidden)

    @shown
    def on_clear(request: gr.Request):
        session = _session(request)
        service.clear(session)
        return (*refreshed(session), hidden, hidden)

    def figures(trained, name: str):
        r = trained.blocks[name]
        names = [p.name for p in trained.photos]
        urls = [p.data_url for p in trained.photos]
        fmap = teach_figures.feature_map_figure(r.map.points, trained.labels, r.cv.predicted, trained.class_names,
                                                names, urls, title=teach_text.map_title(trained, name),
                                                explained=r.map.explained)
        acc = teach_figures.accuracy_by_block_figure(
            [teach_text.BLOCK_LABELS[b].split(" · ")[0] for b in trained.blocks],
            [trained.blocks[b].cv.accuracy for b in trained.blocks], [trained.blocks[b].dims for b in trained.blocks],
            chance=trained.chance, selected=teach_text.BLOCK_LABELS[name].split(" · ")[0],
            title="Cross-validated accuracy, block by block")
        conf = teach_figures.confusion_figure(r.cv.confusion, trained.class_names,
                                              title=f"Confusion matrix ({teach_text.BLOCK_LABELS[name]})")
        return teach_text.train_summary(trained, name), fmap, acc, conf

    @shown
    def on_train(name, request: gr.Request):
        trained = service.train(_session(request))
        return figures(trained, _block(name))

    @shown
    def on_block(name, request: gr.Request):
        try:
            trained = service.trained(_session(request))
        except UserError:
            return gr.update(), gr.update(), gr.update(), gr.update()
        return figures(trained, _block(name))

    def answer(prediction):
        return ({n: p for n, p in prediction.top},
                teach_text.result_images(_data_url(prediction.image), _data_url(prediction.cam)))

    @shown
    def on_classify(path, request: gr.Request):
        return (*answer(service.classify(_session(request), path)), None)

    @shown
    def on_sample(index, request: gr.Request):
        if index is None:
            return gr.update(), gr.update()
        return answer(service.classify_unseen(_session(request), index))

    @shown
    def on_prepare(request: gr.Request, progress=gr.Progress()):
        session = _session(request)
        progress(0.1, desc="Writing the head")
        head = service.export_head(session)
        progress(0.3, desc="Writing Xception + your classifier (~90 MB)")
        model = service.export_model(session)
        return (gr.update(value=str(model), visible=True, label=f"Model (.keras, {model.stat().st_size / 2**20:.0f} MB)"),
                gr.update(value=str(head), visible=True, label=f"Head only (.npz, {head.stat().st_size / 1024:.0f} KB)"))

    def on_unload(request: gr.Request):
        service.end(getattr(request, "session_hash", "") or "")

    add.click(on_add, [class_name, files, snapshot], [added, overview, class_name, remove_name, files, snapshot,
                                                      model_file, head_file], preprocess=False, **HEAVY)
    starter.click(on_starter, None, [added, overview, class_name, remove_name, model_file, head_file], **HEAVY)
    remove.click(on_remove, [remove_name], [overview, class_name, remove_name, model_file, head_file], **LIGHT)
    clear.click(on_clear, None, [overview, class_name, remove_name, model_file, head_file], **LIGHT)
    train.click(on_train, [block], [summary, map_plot, accuracy_plot, confusion_plot], **LIGHT)
    block.input(on_block, [block], [summary, map_plot, accuracy_plot, confusion_plot], **LIGHT)
    classify.click(on_classify, [new_photo], [top, result, new_photo], preprocess=False, **LIGHT)
    sample.input(on_sample, [sample], [top, result], **LIGHT)
    prepare.click(on_prepare, None, [model_file, head_file], **HEAVY)
    blocks.unload(on_unload)
    return service
