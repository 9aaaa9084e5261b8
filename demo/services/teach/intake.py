"""Teach's intake: a class name checked, image payloads decoded (or refused with a reason).

Nothing here deletes a file. A path in an event is the client's word only: Gradio names an upload
by its content, so two sessions that upload the same photo share one file, and a client may name
any file in the upload folder (an example, another visitor's upload). Uploads are visitors' files
and go with the server's file budget and age limit (`demo.limits.FileBudget`, Gradio's
`delete_cache`); what a session keeps is its decoded photos' features, in memory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from demo.services import UserError
from demo.services.payloads import payload_to_image
from demo.services.teach.records import NamedPhoto, TeachLimits

MAX_SHOWN_NAME = 40  # characters of a file name repeated in a refusal


class PhotoIntake:
    """Reads what a visitor hands Teach.

    Args:
        limits: The class-name length and the files accepted per add.
        upload_dir: Gradio's upload folder: the only files read (never deleted).
    """

    def __init__(self, limits: TeachLimits, upload_dir: Path):
        self.limits, self.upload_dir = limits, Path(upload_dir)

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

    def accepted(self, payloads: Sequence[Any]) -> tuple[list[Any], list[str]]:
        """The payloads one add takes (at most `max_files_per_add`), and the refusal for the rest."""
        cap = self.limits.max_files_per_add
        if len(payloads) <= cap:
            return list(payloads), []
        return list(payloads[:cap]), [f"{len(payloads) - cap} file(s) beyond {cap} at once"]

    def read(self, payloads: Sequence[Any], class_name: str, room: int
             ) -> tuple[list[tuple[str, Image.Image, Path | None]], list[str]]:
        """Decodes up to `room` photos for `class_name`: [(name to show, image, the upload's file or
        None)] and the refusals (undecodable, or beyond the room left)."""
        images: list[tuple[str, Image.Image, Path | None]] = []
        refused: list[str] = []
        for i, payload in enumerate(payloads):
            label = payload_name(payload, i)
            try:
                if len(images) >= room:
                    refused.append(self.full(label, class_name))
                    continue
                images.append((label, self.image(payload), self.source(payload)))
            except UserError as exc:
                refused.append(f"{label}: {exc}")
        return images, refused

    def full(self, label: str, class_name: str) -> str:
        """Why a photo was not added to a full class."""
        return f"{label}: “{class_name}” is full ({self.limits.max_photos_per_class} photos)"

    def source(self, payload: Any) -> Path | None:
        """The upload's file when the payload names one in the upload folder (read already), else None."""
        if isinstance(payload, NamedPhoto):
            return None
        path = payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)
        if not isinstance(path, str):
            return None
        path = Path(path).resolve()
        return path if path.is_relative_to(self.upload_dir.resolve()) and path.is_file() else None

    def image(self, payload: Any) -> Image.Image:
        """One payload decoded (a `NamedPhoto` as it is; an upload only from the upload folder)."""
        return payload.image if isinstance(payload, NamedPhoto) else payload_to_image(payload, self.upload_dir)


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
