"""Explore's public API: `/architecture` (which → JSON) and `/activations` (image, block, top_n →
JSON and channel maps), on hidden components of their own. The outputs' labels are the names the
clients give them; the inputs' labels describe each parameter; the handlers' parameter names are
the parameters' names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from demo.services.explore import LOADED, ExploreService
from demo.ui import text
from demo.ui.events import errors_as_api_errors, errors_as_messages
from demo.ui.explore.activations import DEFAULT_BLOCK


@dataclass(frozen=True)
class ExploreApi:
    which: gr.Textbox
    architecture: gr.JSON
    image: gr.Image
    block: gr.Textbox
    top_n: gr.Number
    activations: gr.JSON
    maps: gr.Gallery


def _components() -> tuple[ExploreApi, gr.Button, gr.Button]:
    with gr.Column(visible=False):
        api = ExploreApi(
            which=gr.Textbox(label=text.API_WHICH, value=LOADED),
            architecture=gr.JSON(label="architecture"),
            image=gr.Image(label=text.API_IMAGE, type="filepath"),
            block=gr.Textbox(label=text.API_BLOCK, value=DEFAULT_BLOCK),
            top_n=gr.Number(label=text.API_TOP_N, value=8, precision=None),
            activations=gr.JSON(label="activations"),
            maps=gr.Gallery(label="maps", format="png"))
        return api, gr.Button(visible=False), gr.Button(visible=False)


def architecture_handler(service: ExploreService, page: bool = False) -> Callable[[str], dict[str, Any]]:
    """The `/architecture` handler, which the page's "Show JSON" button runs too (`page`: its
    failures are toasts, not errors raised to a client)."""

    @(errors_as_messages if page else errors_as_api_errors)
    def architecture(which: str = LOADED) -> dict[str, Any]:
        """Xception block by block, for the loaded weights or the 299 px reference."""
        return service.architecture((which or LOADED).strip() if isinstance(which, str) else which)

    return architecture


def build_explore_api(service: ExploreService) -> ExploreApi:
    """The hidden components and the two public events (after the sub-tabs, like Classify's)."""
    api, architecture_trigger, activations_trigger = _components()

    @errors_as_api_errors
    def activations(image, block: str = DEFAULT_BLOCK, top_n: float = 8):
        """One block's activations for a photo, with its most active channels as maps."""
        return service.activation_maps(image, block, top_n)

    architecture_trigger.click(architecture_handler(service), [api.which], api.architecture, api_name="architecture",
                               api_description=text.API_ARCHITECTURE)
    activations_trigger.click(activations, [api.image, api.block, api.top_n], [api.activations, api.maps],
                              preprocess=False, api_name="activations", concurrency_id="explore-forward",
                              concurrency_limit=2, api_description=text.API_ACTIVATIONS)
    return api
