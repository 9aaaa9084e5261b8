"""Teach's downloads: the taught head alone (`.npz`) or Xception with it (`.keras`), written to a
folder of the session's own, named at random, that goes with the session.

The server's file budget may trim those files (oldest first) and its janitor remove the emptied
folders: a folder is made again whenever a download is prepared, and `present` tells a download
that was trimmed (the page then asks for it to be prepared again)."""

from __future__ import annotations

import secrets
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from demo.services.teach.records import Trained
from xception_core.io.heads import save_head, save_taught_model
from xception_core.runtime.extractor import FINAL_BLOCK

if TYPE_CHECKING:
    from xception_core.model import LoadedModel

HEAD_FILE = "taught_head.npz"
MODEL_FILE = "xception_taught.keras"
FILES = {"head": HEAD_FILE, "model": MODEL_FILE}


class Downloads:
    """Per-session download folders under `root`, and the files written there.

    Args:
        root: Where the folders go; the UI passes one inside Gradio's upload folder so downloads
            are served without a copy.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._export_lock = threading.Lock()  # one ~90 MB .keras build at a time

    def folder(self, current: Path | None) -> Path:
        """The session's folder (`current`, made again if the janitor removed it, else a new one)."""
        if current is not None:
            current.mkdir(parents=True, exist_ok=True)
            return current
        folder = self.root / secrets.token_hex(16)
        folder.mkdir(parents=True, exist_ok=False)
        return folder

    @staticmethod
    def remove(folder: Path | None) -> None:
        """Deletes a session's folder and every file in it."""
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def present(folder: Path | None, kind: str) -> bool:
        """Whether the `kind` ('head' or 'model') download prepared in `folder` is still there."""
        return folder is not None and (folder / FILES[kind]).is_file()

    @staticmethod
    def head(folder: Path, trained: Trained, input_size: int) -> Path:
        """The taught head alone as a small `.npz` (weights, bias, class names)."""
        return save_head(folder / HEAD_FILE, trained.head, trained.class_names, block=FINAL_BLOCK,
                         input_size=input_size, base=trained.weights_title)

    def model(self, folder: Path, trained: Trained, loaded: LoadedModel) -> Path:
        """Xception with the taught head as a `.keras` file (~90 MB), the only one in `folder`.
        One export runs at a time."""
        with self._export_lock:
            for old in folder.glob("*.keras"):
                old.unlink(missing_ok=True)
            return save_taught_model(folder / MODEL_FILE, loaded, trained.head, trained.class_names)
