"""A 48 MP photo costs the server a display copy, not its full size (issue 9, item 1): the
decoder scales JPEGs down, other formats shrink right after decoding, every picture sent back
(Grad-CAM overlay, kept copy) is at most the display side."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.services.payloads import DECODE_SIDE, payload_to_image
from xception_core.inputs.images import DISPLAY_SIDE, display_copy, load_image

ROOT = Path(__file__).resolve().parents[2]


def _jpeg(width: int, height: int, exif_orientation: int | None = None) -> bytes:
    small = np.random.default_rng(0).integers(0, 255, (height // 100, width // 100, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    image.save(buffer, "JPEG", quality=80, exif=exif)
    return buffer.getvalue()


def test_a_48_mp_jpeg_is_decoded_at_reduced_scale_and_kept_upright(tmp_path):
    data = _jpeg(8000, 6000)
    image = payload_to_image({"path": _write(tmp_path, "big.jpg", data)}, tmp_path)
    assert max(image.size) <= DECODE_SIDE and image.size[0] > image.size[1]
    rotated = payload_to_image({"path": _write(tmp_path, "rot.jpg", _jpeg(8000, 6000, exif_orientation=6))}, tmp_path)
    assert rotated.size == (image.size[1], image.size[0]), "EXIF orientation still applied after scaling"


def test_a_7000_px_png_shrinks_right_after_decoding(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (7000, 7000), (20, 120, 200)).save(buffer, "PNG")  # ~150 KB on disk, 147 MB decoded
    assert len(buffer.getvalue()) < 1_000_000
    image = payload_to_image({"path": _write(tmp_path, "big.png", buffer.getvalue())}, tmp_path)
    assert image.size == (DECODE_SIDE, DECODE_SIDE) and image.getpixel((5, 5)) == (20, 120, 200)


def test_small_images_are_untouched_and_full_size_loading_still_exists(tmp_path):
    data = _jpeg(1200, 900)
    assert payload_to_image({"path": _write(tmp_path, "s.jpg", data)}, tmp_path).size == (1200, 900)
    assert load_image(_jpeg(3000, 2000)).size == (3000, 2000)


def test_display_copies_are_bounded_and_never_upscaled():
    big = Image.new("RGB", (3000, 1000))
    assert display_copy(big).size == (DISPLAY_SIDE, 341)
    small = Image.new("L", (300, 200))
    copy = display_copy(small)
    assert copy.size == (300, 200) and copy.mode == "RGB"


def test_the_grad_cam_overlay_is_drawn_on_the_display_copy(tmp_path):
    from tests.conftest import shared_loaded, store_serving
    from demo.services.classify import ClassifyService
    from xception_core.settings import Settings

    store = store_serving(shared_loaded(96, 6, seed=0), Settings(upload_dir=tmp_path))
    service = ClassifyService(store, wait_s=120)
    classified = service.classify({"path": _write(tmp_path, "big.jpg", _jpeg(8000, 6000))})
    assert max(classified.image.size) <= DISPLAY_SIDE
    # What the session keeps for "explain another class": an encoded copy, not megabytes of pixels.
    assert len(classified.display_jpeg) < 400_000 and classified.prediction.features.nbytes < 1_000_000
    overlay = service.explain(classified)
    assert overlay.size == classified.image.size


def test_peak_memory_of_decoding_a_48_mp_photo_is_a_fraction_of_its_full_size(tmp_path):
    """Measured in a fresh process (VmHWM, reset after the imports): the full-size pixels alone
    would be 144 MB."""
    path = _write(tmp_path, "big.jpg", _jpeg(8000, 6000))
    code = textwrap.dedent(f"""
        from pathlib import Path
        from demo.services.payloads import payload_to_image
        from xception_core.inputs.images import display_copy

        def status(key):
            line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
            return int(line.split()[1]) / 1024

        Path("/proc/self/clear_refs").write_text("5")  # peak := now
        before = status("VmRSS:")
        image = payload_to_image({{"path": {str(path)!r}}}, Path({str(tmp_path)!r}))
        display_copy(image)
        print(status("VmHWM:") - before)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    added_mb = float(out.stdout.strip().splitlines()[-1])
    print(f"peak RSS added by decoding a 48 MP JPEG: {added_mb:.0f} MB")
    assert added_mb < 72  # half of the full-size pixels: a full-size decode or copy fails this


def _write(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def test_results_kept_for_explaining_are_bounded_whatever_the_number_of_sessions():
    from demo.services import UserError
    from demo.services.classify import ClassifyService

    service = ClassifyService(store=None, results_kept=3)  # type: ignore[arg-type]
    results = [object() for _ in range(5)]
    keys = [service.remember(result) for result in results]  # type: ignore[arg-type]
    assert len(service._results) == 3
    assert [service.recall(key) for key in keys[2:]] == results[2:]  # the newest three, each its own
    for stale in (keys[0], keys[1], "no-such-key", 12345, None):
        with pytest.raises(UserError, match="expired"):
            service.recall(stale)
