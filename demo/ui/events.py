"""What every event handler shares: failures become short messages on the page, never a traceback
in the log for a visitor's mistake, never a server path or raw Python text on the page."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import gradio as gr

from demo.errors import public_text
from demo.services import UserError

logger = logging.getLogger("demo.events")

INTERNAL_ERROR = "Something went wrong on the server ({kind}); it has been logged. Please try again."


def errors_as_messages(handler: Callable) -> Callable:
    """Runs an event handler: a `UserError` becomes its message on the page (`gr.Error`) and one
    log line; anything else is logged with its traceback (a bug) and the page gets a generic
    message naming only the exception's kind."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error as exc:
            exc.print_exception = False  # a message for the visitor, not a bug
            raise
        except UserError as exc:
            message = public_text(exc)
            logger.info("%s: refused: %s", handler.__name__, message[:200])
            raise gr.Error(message, print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - the visitor gets a message, the log the traceback
            logger.exception("%s failed", handler.__name__)
            raise gr.Error(INTERNAL_ERROR.format(kind=type(exc).__name__), print_exception=False) from None

    return run
