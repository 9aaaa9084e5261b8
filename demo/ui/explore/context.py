"""What Explore's sub-tabs share: the services, the visitor's photo, the figures already drawn, and
the fills that run once the model is described.

A sub-tab is one module with a `SUB_TAB` (`SubTab`): its title, id and a `build(ctx, tab)` that lays
it out inside its `gr.Tab`, wires its own events and returns a small record of its components.
What crosses sub-tabs goes through the `ExploreContext`: the `Photo`, and `fill(...)` for
components filled from the model's description (the timer that waits for the model, and the
At a glance controls that choose what is described, run every fill; `demo.ui.explore.tab`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import plotly.graph_objects as go

from demo.services.compare import CompareService
from demo.services.examples import ExampleService
from demo.services.explore import ExploreService
from demo.services.knockout import KnockoutService
from demo.services.operation import OperationService
from demo.store import ModelStore, ServedModel
from demo.ui.classify_tab import example_items
from demo.ui.events import errors_as_messages
from demo.ui.figures import Theme
from xception_core.runtime.introspection import ModelDescription


def payload_path(payload: Any) -> str | None:
    """The file path of an image payload as the browser sent it (None: no photo, or not a file)."""
    path = payload.get("path") if isinstance(payload, dict) else None
    return path if isinstance(path, str) else None


@dataclass(frozen=True)
class Photo:
    """The visitor's photo. Activations renders `image` in its layout and shows the photo's maps;
    Article vs paper compares both wirings on it; opening Explore takes the Classify photo into it.

    A sub-tab that answers a new photo listens on `on_new`, never on `image.change`: Gradio's
    image fires `change` again, with the same photo, when the sub-tab that lays it out is first
    drawn and whenever the page updates around it, so views hung on `image.change` re-rendered
    after each other's answers for as long as the session lasted. `shown` takes the photo's path
    on every `image.change` and, being a `gr.State`, fires its own `change` only when the path is
    a new one: once per photo chosen, whichever control chose it (an example, an upload, the
    webcam, a paste, a clear, the Classify photo taken along).

    Attributes:
        image: The photo (a file of Gradio's upload folder; handlers get the raw payload).
        record_key: The activation cache's key of the photo's paper-wiring forward pass.
        taken: The Classify photo taken into `image` last (taken once: a photo picked since stays).
        shown: The path of the photo the sub-tabs answered last ("" for none).
    """

    image: gr.Image
    record_key: gr.State
    taken: gr.State
    shown: gr.State

    @classmethod
    def create(cls) -> Photo:
        """Inside the Explore tab, before its sub-tabs: every sub-tab can then use the photo,
        whichever of them lays out `image`."""
        image = gr.Image(label="Image", type="filepath", sources=["upload", "webcam", "clipboard"], height=300,
                         elem_id="explore-image", render=False)
        photo = cls(image, gr.State(None), gr.State(None), gr.State(""))
        image.change(lambda payload: payload_path(payload) or "", image, photo.shown, preprocess=False,
                     api_visibility="private", show_progress="hidden")
        return photo

    def on_new(self, fn: Callable, inputs: Sequence[Any], outputs: Sequence[Any], **options: Any) -> None:
        """Runs `fn` once per new photo (`shown` changed; see the class), with `inputs` read then."""
        self.shown.change(fn, list(inputs), list(outputs), **options)


@dataclass(frozen=True)
class Described:
    """What the fills get: the description the page shows, and the loaded model's.

    Attributes:
        which: `LOADED` or `REFERENCE` (the At a glance choice).
        description: `describe()` of `which`: the model that runs here, or the 299 px reference.
        loaded: `describe()` of the model that runs here, whatever `which` is.
        served: The model that runs here.
        theme: The reader's page (dark or light, narrow or wide).
    """

    which: str
    description: ModelDescription
    loaded: ModelDescription
    served: ServedModel
    theme: Theme


@dataclass(frozen=True, eq=False)  # one fill is itself, whatever its fields
class Fill:
    """Components a sub-tab fills from the description (`Described`).

    Attributes:
        outputs: What `make` returns one value for, in this order.
        make: (described, *values of `inputs`) → one value per output.
        inputs: The sub-tab's own controls that `make` reads (a control of an `again` fill runs
            the `again` fills when it changes).
        again: Run again when the reader changes what is described (else once, when the model
            is ready: e.g. the example photos).
    """

    outputs: tuple[gr.components.Component, ...]
    make: Callable[..., Sequence[Any]]
    inputs: tuple[gr.components.Component, ...] = ()
    again: bool = True


class FigureCache:
    """Figures of model descriptions, drawn once per (figure, description, theme, options) and kept
    for the `size` most recently used. A description is its own key (a frozen record: hashing one
    costs microseconds), so a cached figure always shows the numbers of the description asked for."""

    def __init__(self, size: int = 64):
        self.size = size
        self._figures: OrderedDict[Hashable, go.Figure] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._figures)

    def get(self, make: Callable[..., go.Figure], description: ModelDescription, theme: Theme,
            **options: Hashable) -> go.Figure:
        """`make(description, theme=theme, **options)`, from the cache when drawn before."""
        key = (make, description, theme, tuple(sorted(options.items())))
        with self._lock:
            if key in self._figures:
                self._figures.move_to_end(key)
                return self._figures[key]
        figure = make(description, theme=theme, **options)  # outside the lock: drawing takes milliseconds
        with self._lock:
            self._figures[key] = figure
            while len(self._figures) > self.size:
                self._figures.popitem(last=False)
        return figure


@dataclass
class ExploreContext:
    """What a sub-tab's `build` may use besides its own components.

    Attributes:
        client: The browser's report ({dark, width}); figures follow its theme and width.
        graph: Builds the Netron view inside the Graph sub-tab (None: no folder to export to).
        operation: One separable step number by number (Inside one operation, and `/operation`).
        knockouts: Knockouts and the lesion study (Knockouts, and `/knockout`).
        compare: Xception against Inception V3 (Xception vs Inception V3, and `/compare`).
    """

    store: ModelStore
    service: ExploreService
    examples: ExampleService
    client: gr.JSON
    graph: Callable | None
    photo: Photo
    operation: OperationService
    knockouts: KnockoutService
    compare: CompareService
    figures: FigureCache = field(default_factory=FigureCache)
    fills: list[Fill] = field(default_factory=list)

    def fill(self, outputs: Sequence[gr.components.Component], make: Callable[..., Sequence[Any]],
             inputs: Sequence[gr.components.Component] = (), again: bool = True) -> None:
        """Registers a `Fill` (see there)."""
        self.fills.append(Fill(tuple(outputs), make, tuple(inputs), again))

    def wire_examples(self, gallery: gr.Gallery) -> None:
        """`gallery` shows the live weights' example photos once the model is ready; a click on one
        makes it Explore's photo (every sub-tab that shows examples wires its gallery here)."""
        self.fill([gallery], lambda described: (example_items(self.examples.examples(described.served)),),
                  again=False)

        @errors_as_messages
        def on_example(evt: gr.SelectData):
            photos = self.examples.examples(self.service.model())
            if not isinstance(evt.index, int) or not 0 <= evt.index < len(photos):
                return gr.skip()
            return str(photos[evt.index].path)

        gallery.select(on_example, None, self.photo.image, api_visibility="private", queue=False)


@dataclass(frozen=True)
class SubTab:
    """One sub-tab of Explore, in the order `demo.ui.explore.tab.SUB_TABS` gives.

    Attributes:
        id: The `gr.Tab` id (what `gr.Tabs(selected=...)` names).
        title: The tab's label.
        elem_id: The tab's HTML id.
        teaser: What the previous sub-tab's Next button calls it ("Next: <teaser> →").
        build: Lays the sub-tab out inside its `gr.Tab` (given) and wires it; returns its record.
        offered: Whether the previous sub-tab points here with a Next button.
    """

    id: str
    title: str
    elem_id: str
    teaser: str
    build: Callable[[ExploreContext, gr.Tab], Any]
    offered: Callable[[ExploreContext], bool] = lambda ctx: True
