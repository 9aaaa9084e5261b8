"""What every event handler shares: failures become short messages, never a traceback in the log
for a visitor's mistake, never a server path or raw Python text on the page.

One mechanism on the page: a refused or failed event says why in a toast and changes no input;
outputs it would leave stale are cleared (`clear=`), the others stay as they were. Raising
`gr.Error` instead would put an "Error" badge over every output of the event, inputs included
(Gradio marks all of them), and leave stale results beneath. The public API's handlers raise: a
client must get the failure as an error (`errors_as_api_errors`).
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr
from gradio.context import LocalContext

from demo.errors import public_text
from demo.services import UserError
from demo.store import WarmingUp

logger = logging.getLogger("demo.events")

INTERNAL_ERROR = "Something went wrong on the server ({kind}); it has been logged. Please try again."
REFUSED_TITLE = "Not done"
# The one feature that needs TensorFlow (Teach's .keras export) the first time after a start: the
# app serves without it and loads it on demand.
WARMING_UP = ("This feature is warming up: the server is loading TensorFlow for it in the background "
              "(a few seconds, once). Please try again in a moment.")
FAILED_TITLE = "Server error"
TOAST_SECONDS = 8


def _message(handler: Callable, exc: Exception) -> tuple[str, bool]:
    """(the message a visitor may read, whether it is their mistake); logs it (a bug with its traceback)."""
    if isinstance(exc, gr.Error):
        return str(exc.message), True
    if isinstance(exc, WarmingUp):
        logger.info("%s: warming up", handler.__name__)
        return WARMING_UP, False
    if isinstance(exc, UserError):
        message = public_text(exc)
        logger.info("%s: refused: %s", handler.__name__, message[:200])
        return message, True
    logger.exception("%s failed", handler.__name__, exc_info=exc)
    return INTERNAL_ERROR.format(kind=type(exc).__name__), False


def in_page_event() -> bool:
    """Whether this runs in a queued event of a page (toasts reach the page only from those)."""
    return LocalContext.event_id.get(None) is not None and LocalContext.blocks.get(None) is not None


def toast(message: str, mistake: bool = True) -> None:
    """A message in the page's toast area (the text is shown as text, never as HTML)."""
    gr.Warning(html.escape(message), duration=TOAST_SECONDS, title=REFUSED_TITLE if mistake else FAILED_TITLE)


def errors_as_messages(handler: Callable | None = None, *, clear: Callable[..., Any] | None = None) -> Callable:
    """Runs a page event's handler: a `UserError` (or `gr.Error`) becomes a toast and one log line;
    anything else (a bug) is logged with its traceback and the toast names only the exception's kind.

    Args:
        clear: Called with the handler's arguments after a failure; returns what the outputs
            become (e.g. `{top5: None}` so an old answer does not sit beside a new photo).
            Without it every output stays as it was (`gr.skip()`).

    Outside a queued page event (a direct call in a test, an unqueued event) the message is
    raised as `gr.Error`, the only way it can reach anyone there.
    """

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the visitor gets a message, the log the traceback
                message, mistake = _message(fn, exc)
                if not in_page_event():
                    raise gr.Error(message, print_exception=False) from None
                toast(message, mistake)
                return clear(*args, **kwargs) if clear is not None else gr.skip()

        return run

    return wrap(handler) if handler is not None else wrap


# What a refused input is called, by the words of Gradio's own refusal (which quotes the whole
# value, a 12 MB string included, and lists every choice).
_REFUSALS = (
    ("not in the list of choices", "A value sent is not one of the choices offered."),
    ("cannot be accessed", "A file sent is not one this server received or gave out."),
)
INPUT_REFUSED = "A value sent could not be read."


def _input_refusal(exc: Exception) -> str:
    if type(exc).__name__ == "InvalidPathError":  # gradio.exceptions: a path outside the upload folder
        return _REFUSALS[1][1]
    text = str(exc.message) if isinstance(exc, gr.Error) else ""
    for words, message in _REFUSALS:
        if words in text:
            return message
    return INPUT_REFUSED


def refuse_bad_inputs(blocks: gr.Blocks) -> gr.Blocks:
    """Every event's inputs, as Gradio checks and converts them before a handler runs, refused in
    a short message that echoes nothing and one log line, never a traceback: Gradio's own
    refusals quote the client's value whole (a 12 MB string sent to a radio came back in the
    answer and went into the log), and a forged file path cost a 25-line traceback."""
    preprocess = blocks.preprocess_data

    async def preprocess_data(block_fn, *args, **kwargs):
        try:
            return await preprocess(block_fn, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever Gradio raised: a client's bad value
            message = _input_refusal(exc)
            logger.info("%s: input refused: %s (%s)", getattr(block_fn, "name", "event"), message, type(exc).__name__)
            raise gr.Error(message, print_exception=False, title=REFUSED_TITLE) from None

    blocks.preprocess_data = preprocess_data
    return blocks


def errors_as_api_errors(handler: Callable) -> Callable:
    """Runs a public API handler: a `UserError` becomes `gr.Error` with its message (the client
    raises it) and one log line; anything else is logged with its traceback and the client gets a
    generic message naming only the exception's kind."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            message, _ = _message(handler, exc)
            raise gr.Error(message, print_exception=False) from None

    return run
