"""Teach's intake: a class name checked, image payloads decoded (or refused with a reason), and
each upload deleted once read, so a visitor's photo lives only in their session's memory."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from demo.services import UserError
from demo.services.payloads import payload_to_image
from demo.services.teach.records import NamedPhoto, TeachLimits

logger = logging.getLogger(__name__)

MAX_SHOWN_NAME = 40  # characters of a file name repeated in a refusal


class PhotoIntake:
    """Reads what a visitor hands Teach.

    Args:
        limits: The class-name length and the files accepted per add.
        upload_dir: Gradio's upload folder: the only files read, and the only ones deleted.
        keep_dir: A folder inside it whose files are never deleted (Teach's downloads).
    """

    def __init__(self, limits: TeachLimits, upload_dir: Path, keep_dir: Path):
        self.limits, self.upload_dir, self.keep_dir = limits, Path(upload_dir), Path(keep_dir)

    def class_name(self, name: Any) -> str:
        """A class name from a client: whitespace collapsed, at most `max_name` characters."""
        if not isinstance(name, str) or not name.strip():
            raise UserError("Name the class first (for example “mug”).")
        name = " ".join(name.split())
        if len(name) > self.limits.max_name:
            raise UserError(f"Class names are at most {self.limits.max_name} characters.")
        if any(not ch.isprintable() for ch in name):
            raise UserError("Class names may not contain control characters.")
        return name

    def accepted(self, payloads: Sequence[Any], delete_uploads: bool) -> tuple[list[Any], list[str]]:
        """The payloads one add takes (at most `max_files_per_add`), and the refusal for the rest,
        whose uploads are deleted unread."""
        cap = self.limits.max_files_per_add
        if len(payloads) <= cap:
            return list(payloads), []
        self.discard(payloads[cap:], delete_uploads)
        return list(payloads[:cap]), [f"{len(payloads) - cap} file(s) beyond {cap} at once"]

    def read(self, payloads: Sequence[Any], class_name: str, room: int, delete_uploads: bool
             ) -> tuple[list[tuple[str, Image.Image]], list[str]]:
        """Decodes up to `room` photos for `class_name`: [(name to show, image)] and the refusals
        (undecodable, or beyond the room left). Every upload is deleted once read."""
        images: list[tuple[str, Image.Image]] = []
        refused: list[str] = []
        for i, payload in enumerate(payloads):
            label = payload_name(payload, i)
            try:
                if len(images) >= room:
                    refused.append(self.full(label, class_name))
                    continue
                images.append((label, self.image(payload)))
            except UserError as exc:
                refused.append(f"{label}: {exc}")
            finally:
                self.delete_upload(payload, delete_uploads)
        return images, refused

    def full(self, label: str, class_name: str) -> str:
        """Why a photo was not added to a full class."""
        return f"{label}: “{class_name}” is full ({self.limits.max_photos_per_class} photos)"

    def image(self, payload: Any) -> Image.Image:
        """One payload decoded (a `NamedPhoto` as it is; an upload only from the upload folder)."""
        return payload.image if isinstance(payload, NamedPhoto) else payload_to_image(payload, self.upload_dir)

    def discard(self, payloads: Sequence[Any], delete_uploads: bool) -> None:
        """Deletes the uploads of payloads that will not be read."""
        for payload in payloads:
            self.delete_upload(payload, delete_uploads)

    def delete_upload(self, payload: Any, enabled: bool = True) -> None:
        """Removes an uploaded file once read; only inside Gradio's upload folder, never Teach's
        own downloads."""
        if not enabled:
            return
        path = payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)
        if path is None and isinstance(payload, str):
            path = payload
        if not isinstance(path, str):
            return
        try:
            resolved = Path(path).resolve()
            if (resolved.is_relative_to(self.upload_dir.resolve()) and resolved.is_file()
                    and not resolved.is_relative_to(self.keep_dir.resolve())):
                resolved.unlink(missing_ok=True)
        except OSError as exc:  # a file another request already removed
            logger.debug("could not delete upload: %s", exc)


def payload_name(payload: Any, index: int) -> str:
    """The name to show for the `index`-th payload of an add: its file name, cut short."""
    if isinstance(payload, NamedPhoto):
        return payload.name
    if isinstance(payload, dict):
        name = payload.get("orig_name") or Path(str(payload.get("path") or "")).name
    else:
        name = getattr(payload, "orig_name", None) or Path(str(getattr(payload, "path", "") or "")).name
    name = str(name or f"photo {index + 1}")
    return name if len(name) <= MAX_SHOWN_NAME else name[: MAX_SHOWN_NAME - 3] + "…"
