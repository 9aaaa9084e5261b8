"""One FastAPI app on one port: the Gradio UI at `/`, Netron and model exports beside it.

Spaces expose a single port, so nothing here starts a second server. Routes are registered
before Gradio is mounted at `/`, which would otherwise shadow them.

Budgets for a public URL (figures measured with them are in bench/README.md, "Soak"):
one request-body limit on every route, uploads and data URLs capped alike, sessions that expire
and are capped in number, generated files deleted by age and kept under a byte budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import threading
from typing import TYPE_CHECKING, Any

import fastapi
import pydantic
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount

from demo.errors import FILE_NOT_SERVED, NO_SUCH_EVENT, public_text
from demo.fonts import add_font_routes
from demo.http_api import refusal_answer, register_http_api, under_api
from demo.log_filter import configure_logging
from demo.limits import (
    BodyLimitMiddleware,
    BodyLoad,
    Chore,
    EmptyFolders,
    FileBudget,
    Housekeeping,
    OrphanHeartbeats,
    EventGate,
    SessionSweep,
    UploadGate,
    deadline_protocol,
    map_big_blocks,
    release_free_memory,
)
from demo.netron.exports import register_exports
from demo.netron.routes import add_netron_routes
from demo.ports import exit_if_port_taken
from demo.runs import FILES_NAME, claim, is_run_folder, sweep_dead
from demo.services.examples import EXAMPLES_FOLDER
from demo.services.payloads import MAX_UPLOAD_BYTES
from demo.store import IMPORTS, ModelStore, Store
from demo.ui import text
from xception_core.settings import Settings

if TYPE_CHECKING:
    import gradio as gr

logger = logging.getLogger(__name__)

QUEUE_SIZE = 64  # requests waiting beyond this are refused at once rather than piling up
STARTING_ROUTE = "page-starting"  # the route at `/` until the page is mounted
PAGE_WAITS_FOR_WEIGHTS_S = 5.0  # longest the page's build waits for the default weights (`build_page_later`)


def make_store(settings: Settings) -> Store:
    """The store `settings.model_store` names: models in this process, or replicas on Ray Serve."""
    if settings.model_store == "ray":
        from demo.store_remote import RemoteModelStore  # needs requirements-scale.txt

        return RemoteModelStore.connect(settings)
    return ModelStore(settings)


@dataclass(frozen=True)
class Budgets:
    """Per-request, per-session and disk budgets of the server.

    Attributes:
        upload_bytes: Largest image upload (multipart) and largest decoded data URL.
        body_bytes: Largest request body on any route: a data URL of `upload_bytes` in JSON.
        max_sessions: Sessions kept in memory (Gradio's default is 10,000); the least recently
            used go first. With housekeeping dropping page-config snapshots a session costs
            ~20 KB, and results it may need again are bounded by the services themselves.
        session_ttl_s: A session unused this long is dropped with its state (per-session
            results expire sooner: `demo.services.classify.RESULT_TTL_S`).
        files_age_s: Uploads and generated images older than this are deleted (Gradio's delete_cache).
        files_budget_bytes: Visitors' files on disk at most (uploads, generated images, Teach's
            downloads), oldest deleted first; uploads and downloads reserve their room first.
        files_headroom_bytes: Of that budget, what trims and reservations leave free for the
            files events write between two sweeps (overlays, generated images).
        file_min_age_s: Never delete a file younger than this (an upload about to be used).
        sweep_s: How often housekeeping runs.
        body_deadline_s: A request's whole body must arrive within this long of its start, on
            every route (408 otherwise); a trickle does not extend it.
        header_deadline_s: A request's line and headers must arrive within this long (uvicorn
            answers 408 and closes otherwise: `demo.limits.deadline_protocol`).
        held_body_bytes: Most bytes held at once by request bodies still arriving, all requests
            together; a body that would pass it is refused (503).
        json_items: Most objects, arrays and items in a JSON body (`demo.limits.json_items`);
            Gradio's largest legitimate one (Teach's add of 30 files) has a few hundred.
        queue_share: Most events one session may have waiting in the queue (`demo.limits.EventGate`).
        address_share: Most events one client address may have waiting: behind a proxy,
            uvicorn's FORWARDED_ALLOW_IPS must name it (on a Space, `*`: only its proxy reaches the
            container) for its X-Forwarded-For to give the visitor's address; otherwise every
            visitor shares this one share.
    """

    upload_bytes: int = MAX_UPLOAD_BYTES
    body_bytes: int = MAX_UPLOAD_BYTES * 4 // 3 + 64 * 1024
    max_sessions: int = 1000
    session_ttl_s: float = 20 * 60
    files_age_s: int = 30 * 60
    files_budget_bytes: int = 200 * 2**20
    files_headroom_bytes: int = 16 * 2**20
    file_min_age_s: float = 30.0
    sweep_s: float = 10.0
    body_deadline_s: float = 60.0
    header_deadline_s: float = 10.0
    held_body_bytes: int = 160 * 2**20
    json_items: int = 20_000
    queue_share: int = 8
    address_share: int = 32


def page_folders(upload_dir: Path) -> tuple[Path, ...]:
    """The folders of the page's own files under `upload_dir` (the examples): read-only to events,
    outside every budget and cleaner, never expiring."""
    return (Path(upload_dir) / EXAMPLES_FOLDER,)


def protect_page_files(upload_dir: Path) -> tuple[Path, ...]:
    """Makes the page's own folders Gradio static paths: a file there is served and read where it
    lies, never copied into Gradio's cache nor added to the file sets its age-based cleaner
    (`delete_cache`) and `FileBudget` delete from, also when a client names it as an event's input.
    Returns the folders (made if missing)."""
    import gradio as gr
    from gradio.data_classes import _StaticFiles

    folders = page_folders(upload_dir)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    known = set(_StaticFiles.all_paths)
    gr.set_static_paths([f for f in folders if f.resolve() not in known])
    return folders


def housekeeping(blocks: gr.Blocks, budgets: Budgets, upload_dir: Path) -> Housekeeping:
    """The chores that keep sessions, files and memory within `budgets`, in the order they run.
    `upload_dir` is this process's own upload folder (`use_own_folder`): no chore looks outside it,
    except the sweep of the folders ended processes left beside its run folder (`demo.runs`), and
    none touches the page's own files (`page_folders`)."""
    sessions = SessionSweep(blocks, ttl_s=budgets.session_ttl_s)
    heartbeats = OrphanHeartbeats(blocks)
    folders = EmptyFolders(upload_dir, min_age_s=budgets.file_min_age_s, keep=page_folders(upload_dir))
    files = FileBudget(blocks, budget_bytes=budgets.files_budget_bytes, min_age_s=budgets.file_min_age_s,
                       folders=folders, protected=page_folders(upload_dir), headroom_bytes=budgets.files_headroom_bytes)

    def stop_orphans() -> str | None:
        stopped = heartbeats()
        return f"{stopped} orphaned heartbeats stopped" if stopped else None

    def release_memory() -> None:  # nothing worth a log line
        release_free_memory()

    chores = [
        Chore("sessions", lambda: sessions().summary()),
        Chore("heartbeats", stop_orphans),
        Chore("files", lambda: files().summary(), blocking=True),
        Chore("empty folders", folders.sweep, blocking=True),
        Chore("memory", release_memory, blocking=True),
    ]
    run = Path(upload_dir).parent
    if Path(upload_dir).name == FILES_NAME and is_run_folder(run):  # folders of processes that ended since
        chores.append(Chore("ended processes", lambda: sweep_dead(run.parent).summary(), blocking=True))
    return Housekeeping(chores, page_watchers=(sessions, heartbeats, files))


def disk_room(app: fastapi.FastAPI) -> Callable[[int], contextlib.AbstractContextManager[bool]]:
    """Reserves room on the app's disk budget (`FileBudget.room`) for a file an event is about to
    write; before the budget exists (the page is built first) there is nothing to reserve."""
    def room(size: int) -> contextlib.AbstractContextManager[bool]:
        budget = getattr(app.state, "file_budget", None)
        return budget.room(size) if budget is not None else contextlib.nullcontext(True)
    return room


def use_own_folder(store: Store) -> Path:
    """Points every file this process writes at a folder of its own under the configured upload
    root (`demo.runs`: the run folder's `files/`, beside its lock), after sweeping the folders of
    ended processes: the store's settings (which every service reads) and Gradio's cache
    (GRADIO_TEMP_DIR, which Gradio reads when a page and its components are built, and whenever
    it checks a path). Idempotent; returns the folder."""
    try:
        run = claim(store.settings.upload_dir)
    except OSError as exc:  # an upload root this process cannot write: uploads would fail anyway
        fallback = Path(tempfile.gettempdir()) / "xception-uploads"
        logger.warning("upload folder %s is not writable (%s); using %s", store.settings.upload_dir,
                       type(exc).__name__, fallback)
        run = claim(fallback)
    if store.settings.upload_dir != run.files:
        store.settings = dataclasses.replace(store.settings, upload_dir=run.files)
    os.environ["GRADIO_TEMP_DIR"] = str(run.files)
    return run.files


def answer_unknown_events(app: fastapi.FastAPI) -> None:
    """An event index the page does not have (`fn_index` 99) answers 404 with a sentence, as
    Gradio's other refusals do ({"detail": ...}), not a bare 500 with a traceback in the log; any
    other unhandled error in Gradio's routes answers a sentence too (uvicorn logs its traceback:
    Starlette raises it again once answered)."""
    from demo.ui.events import INTERNAL_ERROR

    gradio_app = next(route.app for route in app.routes if isinstance(route, Mount) and route.path == "")

    async def unknown(request: fastapi.Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], int):  # Gradio's `fns[fn_index]`
            logger.info("%s: unknown event %d refused", request.url.path, exc.args[0])
            return JSONResponse({"detail": NO_SUCH_EVENT}, status_code=404)
        return JSONResponse({"detail": INTERNAL_ERROR.format(kind=type(exc).__name__)}, status_code=500)

    async def malformed(request: fastapi.Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer repeats each bad value whole (5 MB in, 5 MB out), and one it cannot
        # write as JSON (fn_index 1e400, a float infinity) turns into a 500 with a traceback.
        words = "; ".join(public_text(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg', '')}", 200)
                          for e in exc.errors()[:3])
        logger.info("%s: malformed request refused: %s", request.url.path, words)
        return JSONResponse({"detail": f"Malformed request: {words}."}, status_code=422)

    async def refused(request: fastapi.Request, exc: StarletteHTTPException) -> JSONResponse:
        # Gradio's own refusals, in its shape ({"detail": ...}), without what they quote: its 403
        # for a file it does not serve repeats the path asked for ("File not allowed: /tmp/...").
        detail = exc.detail
        if exc.status_code == 403 and isinstance(detail, str) and detail.startswith("File not allowed"):
            detail = FILE_NOT_SERVED
        elif isinstance(detail, str):
            detail = public_text(detail, 300)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    gradio_app.add_exception_handler(StarletteHTTPException, refused)
    gradio_app.add_exception_handler(KeyError, unknown)
    gradio_app.add_exception_handler(RequestValidationError, malformed)
    gradio_app.add_exception_handler(Exception, unknown)


class Health(pydantic.BaseModel):
    """`/healthz`'s answer, as `/docs` describes it (with an example, not a generic object)."""

    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{
        "ready": True, "page": True, "status": "**Model status: ready** · Kitchenware-6, offline weights: ready",
        "weights": ["kitchenware"]}]})

    ready: bool = pydantic.Field(description="The default weights are loaded and answer.")
    page: bool = pydantic.Field(True, description="The page (and Gradio's API under `/gradio_api/`) is built and "
                                                  "served; the plain HTTP API answers before it is.")
    status: str = pydantic.Field(description="The page's status line (Markdown): what is loading, ready or "
                                             "unavailable, and why.")
    weights: list[str] = pydantic.Field(description="Weights keys that answer now (`?weights=` takes them).")
    replicas: dict[str, int] | None = pydantic.Field(None, description="Model replicas by state (only on Ray Serve).")


def create_app(settings: Settings | None = None, store: Store | None = None,
               budgets: Budgets | None = None) -> fastapi.FastAPI:
    """Builds the app with its page; model loading starts in the background right away."""
    app = create_api_app(settings, store, budgets)
    mount_page(app, build_page(app))
    return app


def create_api_app(settings: Settings | None = None, store: Store | None = None,
                   budgets: Budgets | None = None) -> fastapi.FastAPI:
    """The app without its page (no Gradio imported): `/healthz`, the plain HTTP API, Netron and
    the exports, every budget's middleware; `/` says the page is starting until `mount_page`.
    Model loading starts in the background right away."""
    budgets = budgets or Budgets()
    store = (store or make_store(settings or Settings())).start()
    run_folder = use_own_folder(store).parent

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI):
        app.state.loop = asyncio.get_running_loop()
        app.state.page_context = contextlib.AsyncExitStack()
        for ready in app.state.on_startup:  # e.g. the page's build, once the server listens
            ready(app)
        try:
            yield
        finally:
            await app.state.page_context.aclose()  # the page's housekeeping and Gradio's own lifespan
            # After Gradio's own shutdown (it deletes what it cached): the whole folder, where the
            # app is the process's only one (`main`). uvicorn ends the process by re-raising
            # SIGTERM, so no exit hook would run; a killed process's folder is swept by the others.
            if getattr(app.state, "owns_folder", False):
                shutil.rmtree(run_folder, ignore_errors=True)

    app = fastapi.FastAPI(title="Xception Explorer", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.store = store
    app.state.budgets = budgets
    app.state.body_load = BodyLoad()
    app.state.blocks = app.state.file_budget = None
    app.state.on_startup = []

    @app.get("/healthz", response_model=Health, response_model_exclude_none=True,
             summary="Whether the model is loaded, in the page's words")
    def healthz() -> dict:
        health = {"ready": store.is_ready(), "page": app.state.blocks is not None,
                  "status": public_text(text.status_line(store.statuses(), store.is_ready()), 2000),
                  "weights": [public_text(key, 200) for key in store.available()]}
        if (replicas := store.replicas()) is not None:
            health["replicas"] = replicas
        return health

    add_font_routes(app)  # the page's and Netron's fallback font, from the app itself
    register_exports(app, store, add_netron_routes)  # sets app.state.exports
    # The plain HTTP API takes the page's upload cap, so both refuse the same files.
    register_http_api(app, store, max_bytes=budgets.upload_bytes, max_waiting=QUEUE_SIZE,
                      body_deadline_s=budgets.body_deadline_s, address_share=budgets.address_share)

    @app.get("/", include_in_schema=False, name=STARTING_ROUTE)
    def starting() -> HTMLResponse:
        # Until the page is mounted (then Gradio's "/" answers: this route is taken out).
        return HTMLResponse(text.PAGE_STARTING, status_code=503, headers={"Retry-After": "1"})

    # Its refusals on the API's paths are problem documents, as the API's OpenAPI description says.
    # The disk budget holds when an upload arrives (its refusal comes after the body limit's).
    app.add_middleware(UploadGate, budget=lambda: app.state.file_budget, path="/gradio_api/upload",
                       max_bytes=budgets.body_bytes)
    app.add_middleware(BodyLimitMiddleware, max_bytes=budgets.body_bytes, answer=refusal_answer,
                       deadline_s=budgets.body_deadline_s, held_cap=budgets.held_body_bytes,
                       max_json_items=budgets.json_items, raw_body=under_api, load=app.state.body_load)
    return app


def build_page(app: fastapi.FastAPI) -> gr.Blocks:
    """The page (imports Gradio and the UI: under `IMPORTS`, never beside a loader's import)."""
    with IMPORTS:
        from demo.ui.layout import build_demo

        budgets: Budgets = app.state.budgets
        protect_page_files(app.state.store.settings.upload_dir)
        blocks = build_demo(app.state.store, app.state.exports, max_upload=f"{budgets.upload_bytes // 2**20}mb",
                            disk=disk_room(app))
    blocks.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)
    # Age-based deletion of uploads and generated images by Gradio itself (every 5 minutes).
    blocks.delete_cache = (300, budgets.files_age_s)
    blocks.state_session_capacity = budgets.max_sessions
    return blocks


def mount_page(app: fastapi.FastAPI, blocks: gr.Blocks) -> None:
    """Mounts the page at `/` in place of the starting page, with its housekeeping: before the app
    serves (its lifespan then starts them), or on a running app from any thread (started here,
    in the app's event loop)."""
    with IMPORTS:
        import gradio as gr

        from demo.ui.layout import CSS
    budgets: Budgets = app.state.budgets
    app.state.events = EventGate(blocks, budgets.queue_share, budgets.address_share,
                                 upload_dir=app.state.store.settings.upload_dir)
    running = getattr(app.state, "loop", None) is not None
    started = app.router.lifespan_context
    gr.mount_gradio_app(
        # show_error=False: an exception that is not a gr.Error (Gradio's own, or a bug) reaches
        # the client as a bare "Error", never as raw Python text with server paths in it.
        app, blocks, path="/", ssr_mode=False, max_file_size=budgets.upload_bytes, show_error=False, css=CSS,
        footer_links=["api"],
    )
    answer_unknown_events(app)
    # Gradio checks that a request's file paths were uploaded by a user only once the Blocks
    # "have launched", which mount_gradio_app never marks: without this, an API caller could
    # name any file on the server ({"path": "/etc/passwd"}) and have it copied into the cache.
    blocks.has_launched = True
    housekeeping_ = housekeeping(blocks, budgets, app.state.store.settings.upload_dir)
    housekeeping_.page_watchers += (app.state.events,)  # it follows a reloaded page too
    events = app.state.events
    housekeeping_.chores += (Chore("decode turns", lambda: (
        f"{n} decode turns of events gone ended" if (n := events.drop_stale_turns()) else None)),)
    app.state.housekeeping = housekeeping_
    app.state.file_budget = next(w for w in housekeeping_.page_watchers if isinstance(w, FileBudget))
    gradio = app.routes.pop()  # Gradio's Mount, appended last: it takes the starting page's place
    routes = app.router.routes
    routes.insert(next(i for i, r in enumerate(routes) if getattr(r, "name", None) == STARTING_ROUTE), gradio)
    if running:  # Gradio's lifespan (mount_gradio_app wrapped the app's) would never run: run it here
        app.router.lifespan_context = started
        asyncio.run_coroutine_threadsafe(_start_page(app, gradio.app), app.state.loop).result()
    else:
        app.router.lifespan_context = _with_page(app.router.lifespan_context, app)
    routes[:] = [r for r in routes if getattr(r, "name", None) != STARTING_ROUTE]
    app.state.blocks = blocks


async def _start_page(app: fastapi.FastAPI, gradio_app: Any) -> None:
    """What Gradio's lifespan starts (its queue), and the page's housekeeping, until the app stops."""
    stack: contextlib.AsyncExitStack = app.state.page_context
    await stack.enter_async_context(gradio_app.router.lifespan_context(gradio_app))
    blocks = gradio_app.get_blocks()
    blocks.run_startup_events()
    await blocks.run_extra_startup_events()
    task = asyncio.create_task(app.state.housekeeping.run(app.state.budgets.sweep_s))

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)


def _with_page(lifespan: Callable, app: fastapi.FastAPI) -> Callable:
    """`lifespan` (the app's, with Gradio's inside) plus the page's housekeeping."""

    @contextlib.asynccontextmanager
    async def run(outer: fastapi.FastAPI):
        async with lifespan(outer) as state:
            task = asyncio.create_task(app.state.housekeeping.run(app.state.budgets.sweep_s))
            try:
                yield state
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return run


def build_page_later(app: fastapi.FastAPI, on_page: Callable[[fastapi.FastAPI], None] | None = None) -> None:
    """Builds and mounts the page in a thread of its own once the app serves (its lifespan has
    started), so `/api/v1/classify` and `/healthz` answer while Gradio is imported and the page
    built; then `on_page(app)`. A failed build is logged and `/` keeps saying the page is starting."""

    def build() -> None:
        # On a warm start the weights are ready within a couple of seconds: the first classify
        # then does not share the cores with Gradio's import. A longer load (a translation) is
        # not waited for: the page says what is loading.
        with contextlib.suppress(Exception):
            app.state.store.get(None, timeout=PAGE_WAITS_FOR_WEIGHTS_S)
        try:
            with IMPORTS:  # whatever Gradio's mount imports too: never beside a loader's import
                mount_page(app, build_page(app))
        except Exception:  # noqa: BLE001 - the API still serves; the log says why the page does not
            logger.exception("the page could not be built")
            return
        logger.info("page ready")
        if on_page is not None:
            on_page(app)

    app.state.on_startup.append(lambda app: threading.Thread(target=build, name="page-builder", daemon=True).start())


def server_config(app: fastapi.FastAPI, host: str, port: int | None = None, **options):
    """The `uvicorn.Config` the app is served with: its budgets' header and body deadlines kept by
    the HTTP protocol itself (`demo.limits.deadline_protocol`, h11 with its limit on header size)."""
    import uvicorn

    budgets: Budgets = app.state.budgets
    # The protocol's body deadline is the backstop: the middleware's answers in words first.
    http = deadline_protocol(budgets.header_deadline_s, budgets.body_deadline_s + 5.0)
    options.setdefault("log_level", "warning")
    return uvicorn.Config(app, host=host, port=port or 0, http=http, **options)


def main(settings: Settings | None = None, store: Store | None = None,
         on_app: Callable[[fastapi.FastAPI], None] | None = None) -> None:
    """`python app.py`: settings from the environment, read once here, then the server.

    `app.py` passes a store it already started, so the weights load while the app is made, and
    `on_app`, called with the app once its page is mounted (Gradio's reload mode starts there).
    The plain HTTP API answers as soon as the server listens; the page is built meanwhile, in a
    thread (`build_page_later`), except in Gradio's reload mode (`gradio app.py`, which watches
    the page it was handed when it starts).
    """
    configure_logging()
    settings = settings or Settings.from_env()
    exit_if_port_taken(settings)
    map_big_blocks()
    with IMPORTS:  # never beside a loader's TensorFlow import
        import uvicorn

        app = create_api_app(settings, store)
        config = server_config(app, settings.host, settings.port, timeout_graceful_shutdown=2)
        config.load()  # uvicorn's own imports (protocols, loop), before the page's build imports beside it
        warm_request_imports()
    app.state.owns_folder = True  # the process's one app: its folder goes when it stops
    if reload_requested():
        mount_page(app, build_page(app))
        if on_app is not None:
            on_app(app)
    else:
        build_page_later(app, on_app)
    print(f"Xception Explorer on http://{settings.host}:{settings.port}", flush=True)
    uvicorn.Server(config).run()


def reload_requested() -> bool:
    """Whether `gradio app.py` (reload mode) started this process (what `gradio.http_server`
    reads, without importing Gradio)."""
    return bool(os.getenv("GRADIO_WATCH_DIRS", ""))


def warm_request_imports() -> None:
    """Imports what serving a request would import on first use (Pillow's image plugins, the
    multipart parser, anyio's thread pool), so that no request thread imports a module while the
    page's build imports Gradio in its thread: concurrent imports can deadlock (`IMPORTS`)."""
    import anyio._backends._asyncio  # noqa: F401 - what anyio loads at its first call in the loop
    import anyio.to_thread  # noqa: F401
    import multipart  # noqa: F401 - python-multipart, Starlette's form parser
    from PIL import Image

    Image.init()
