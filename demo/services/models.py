"""The one way a service gets a served model: the key checked, loading waited for, and every
failure turned into a `UserError` a visitor can read."""

from __future__ import annotations

from typing import Any

from demo.errors import echo, public_text, unavailable_words
from demo.services import UserError
from demo.store import ServedModel, Store
from xception_core.weights.source import WeightsUnavailableError

MODEL_WAIT_S = 600.0  # a first start may download ~90 MB of weights


def served_model(store: Store, key: Any = None, wait_s: float = MODEL_WAIT_S) -> ServedModel:
    """The store's model for `key` (a client's value: default weights when None or empty).

    Raises:
        UserError: `key` is not a string or not one of the store's candidates, the weights are
            still loading after `wait_s` seconds, or they could not be loaded.
    """
    if key is not None and not isinstance(key, str):
        raise UserError(f"Weights must be named by a string, got {type(key).__name__}.")
    if key and key not in store.candidates:
        available = ", ".join(store.available()) or "none yet"
        raise UserError(f"unknown weights {echo(key)}; available: {available}.")
    try:
        return store.get(key or None, timeout=wait_s)
    except TimeoutError as exc:
        raise UserError(f"{exc}.") from None
    except WeightsUnavailableError:  # its text names web addresses and OS errors: the recorded cause instead
        available = ", ".join(store.available()) or "none"
        raise UserError(f"{unavailable_words(store.statuses(), key or None)} Weights available: {available}.") from None
    except ValueError as exc:
        raise UserError(public_text(exc)) from None
