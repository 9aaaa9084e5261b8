"""Explore's public API: `/architecture` (which → JSON), `/activations` (image, block, top_n →
JSON and channel maps), `/knockout` (image, knockouts → JSON), `/operation` (image, block, layer, row, col,
channel, variant, top → one separable step number by number, JSON) and `/compare` (image, size, rounds →
Xception against Inception V3, JSON), on hidden components of their own. The outputs' labels are the names the
clients give them; the inputs' labels describe each parameter; the handlers' parameter names are
the parameters' names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import json

import gradio as gr

from demo.services import UserError
from demo.services.compare import ROUNDS_DEFAULT, CompareService
from demo.services.explore import LOADED, ExploreService
from demo.services.knockout import KnockoutService, answer_json
from demo.services.operation import DEFAULT_TOP, OperationService, step_json
from demo.ui import text
from demo.ui.events import errors_as_api_errors, errors_as_messages
from demo.ui.explore.activations import DEFAULT_BLOCK
from demo.ui.explore.operation import DEFAULT_BLOCK as OP_BLOCK
from demo.ui.explore.operation import DEFAULT_LAYER as OP_LAYER


@dataclass(frozen=True)
class ExploreApi:
    which: gr.Textbox
    architecture: gr.JSON
    image: gr.Image
    block: gr.Textbox
    top_n: gr.Number
    activations: gr.JSON
    maps: gr.Gallery
    op_image: gr.Image
    op_block: gr.Textbox
    op_layer: gr.Textbox
    op_row: gr.Number
    op_col: gr.Number
    op_channel: gr.Number
    op_variant: gr.Textbox
    op_top: gr.Number
    operation: gr.JSON
    ko_image: gr.Image
    ko_items: gr.JSON
    knockout: gr.JSON
    cmp_image: gr.Image
    cmp_size: gr.Number
    cmp_rounds: gr.Number
    compare: gr.JSON


def _components() -> tuple[ExploreApi, gr.Button, gr.Button, gr.Button, gr.Button, gr.Button]:
    with gr.Column(visible=False):
        api = ExploreApi(
            which=gr.Textbox(label=text.API_WHICH, value=LOADED),
            architecture=gr.JSON(label="architecture"),
            image=gr.Image(label=text.API_IMAGE, type="filepath"),
            block=gr.Textbox(label=text.API_BLOCK, value=DEFAULT_BLOCK),
            top_n=gr.Number(label=text.API_TOP_N, value=8, precision=None),
            activations=gr.JSON(label="activations"),
            maps=gr.Gallery(label="maps", format="png"),
            op_image=gr.Image(label=text.API_IMAGE, type="filepath"),
            op_block=gr.Textbox(label=text.API_OP_BLOCK, value=OP_BLOCK),
            op_layer=gr.Textbox(label=text.API_OP_LAYER, value=OP_LAYER),
            op_row=gr.Number(label=text.API_OP_ROW, value=0, precision=None),
            op_col=gr.Number(label=text.API_OP_COL, value=0, precision=None),
            op_channel=gr.Number(label=text.API_OP_CHANNEL, value=0, precision=None),
            op_variant=gr.Textbox(label=text.API_OP_VARIANT, value="paper"),
            op_top=gr.Number(label=text.API_OP_TOP, value=DEFAULT_TOP, precision=None),
            operation=gr.JSON(label="operation"),
            ko_image=gr.Image(label=text.API_IMAGE, type="filepath"),
            ko_items=gr.JSON(label=text.API_KNOCKOUTS, value=[]),
            knockout=gr.JSON(label="knockout"),
            cmp_image=gr.Image(label=text.API_COMPARE_IMAGE, type="filepath"),
            cmp_size=gr.Number(label=text.API_SIZE, value=299, precision=None),
            cmp_rounds=gr.Number(label=text.API_ROUNDS, value=ROUNDS_DEFAULT, precision=None),
            compare=gr.JSON(label="compare"))
        return api, *(gr.Button(visible=False) for _ in range(5))


def architecture_handler(service: ExploreService, page: bool = False) -> Callable[[str], dict[str, Any]]:
    """The `/architecture` handler, which the page's "Show JSON" button runs too (`page`: its
    failures are toasts, not errors raised to a client)."""

    @(errors_as_messages if page else errors_as_api_errors)
    def architecture(which: str = LOADED) -> dict[str, Any]:
        """Xception block by block, for the loaded weights or the 299 px reference; or Inception V3
        module by module at 299 px ('inception_v3')."""
        return service.architecture((which or LOADED).strip() if isinstance(which, str) else which)

    return architecture


def operation_handler(service: OperationService) -> Callable[..., dict[str, Any]]:
    """The `/operation` handler (the service checks every argument)."""

    @errors_as_api_errors
    def operation(image, block: str = OP_BLOCK, layer: str = OP_LAYER, row: float = 0, col: float = 0,
                  channel: float = 0, variant: str = "paper", top: float = DEFAULT_TOP) -> dict[str, Any]:
        """One separable conv of the served model at one output position and channel of a photo, number by
        number: depthwise patches, kernels and sums, pointwise contributions, BatchNorm, ReLU, pool and
        residual sum, each stage beside the model's own value; the receptive field and the cost."""
        strip = lambda v: v.strip() if isinstance(v, str) else v  # noqa: E731
        return step_json(service.step(None, image, strip(block), strip(layer), row, col, channel, strip(variant),
                                      top))

    return operation


def knockout_items(value: Any) -> Any:
    """A client's knockout list: JSON text is read (a malformed one refused in a sentence)."""
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else []
        except ValueError:
            raise UserError("Knockouts must be JSON: a list of {kind, block, layer?, channels?} objects.") from None
    return [] if value is None else value


def knockout_handler(service: KnockoutService) -> Callable[..., dict[str, Any]]:
    """The `/knockout` handler (the service checks every knockout)."""

    @errors_as_api_errors
    def knockout(image, knockouts: Any = None) -> dict[str, Any]:
        """The served network with blocks, shortcuts, channels knocked out or ReLUs inserted, on a photo:
        intact and knocked top-5, and how each later block's output moved."""
        return answer_json(service.knockout(image, knockout_items(knockouts)))

    return knockout


def compare_handler(service: CompareService) -> Callable[..., dict[str, Any]]:
    """The `/compare` handler (the service checks every argument)."""

    @errors_as_api_errors
    def compare(image=None, size: float = 299, rounds: float = ROUNDS_DEFAULT) -> dict[str, Any]:
        """Xception against Inception V3: totals, placement and the paper's figures at `size`; with a
        photo, both forwards timed on it and both top-5 when Inception V3 has its ImageNet weights."""
        return service.compare_json(image, size, rounds)

    return compare


def build_explore_api(service: ExploreService, operation_service: OperationService,
                      knockout_service: KnockoutService, compare_service: CompareService) -> ExploreApi:
    """The hidden components and the five public events (after the sub-tabs, like Classify's)."""
    (api, architecture_trigger, activations_trigger, operation_trigger, knockout_trigger,
     compare_trigger) = _components()

    @errors_as_api_errors
    def activations(image, block: str = DEFAULT_BLOCK, top_n: float = 8):
        """One block's activations for a photo, with its most active channels as maps."""
        return service.activation_maps(image, block, top_n)

    architecture_trigger.click(architecture_handler(service), [api.which], api.architecture, api_name="architecture",
                               api_description=text.API_ARCHITECTURE)
    activations_trigger.click(activations, [api.image, api.block, api.top_n], [api.activations, api.maps],
                              preprocess=False, api_name="activations", concurrency_id="explore-forward",
                              concurrency_limit=2, api_description=text.API_ACTIVATIONS)
    operation_trigger.click(operation_handler(operation_service),
                            [api.op_image, api.op_block, api.op_layer, api.op_row, api.op_col, api.op_channel,
                             api.op_variant, api.op_top], api.operation, preprocess=False, api_name="operation",
                            concurrency_id="explore-forward", concurrency_limit=2, api_description=text.API_OPERATION)
    knockout_trigger.click(knockout_handler(knockout_service), [api.ko_image, api.ko_items], api.knockout,
                           preprocess=False, api_name="knockout", concurrency_id="explore-forward",
                           concurrency_limit=2, api_description=text.API_KNOCKOUT)
    compare_trigger.click(compare_handler(compare_service), [api.cmp_image, api.cmp_size, api.cmp_rounds],
                          api.compare, preprocess=False, api_name="compare", concurrency_id="explore-forward",
                          concurrency_limit=2, api_description=text.API_COMPARE)
    return api
