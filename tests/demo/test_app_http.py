"""The real server over HTTP with gradio_client: correct answers, clean errors for every kind
of bad input, a server that survives them, and concurrent calls that never mix answers."""

from __future__ import annotations

import io
import json
import struct
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from xception_core.io.assets import example_images
from xception_core.settings import Settings
from xception_core.weights.fetch import preset_samples as _preset_samples


def preset_samples(name: str):
    return _preset_samples(name, Settings.from_env().cache_dir)

pytestmark = pytest.mark.slow


def classify(client, path) -> dict[str, float]:
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), api_name="/classify")


def test_kitchenware_photo_gets_its_label(client):
    sample = next(s for s in preset_samples("kitchenware") if s.label)
    result = classify(client, sample.path)
    assert max(result, key=result.get) == sample.label


def test_example_gets_a_top5(client):
    result = classify(client, example_images()[0].path)
    assert 1 <= len(result) <= 5
    assert all(0.0 <= p <= 1.0 for p in result.values())
    assert sum(result.values()) <= 1.0 + len(result) * 5e-7 + 1e-12  # each rounded to 6 decimals


def _png_bomb(side: int = 30000) -> bytes:
    """A real 30000×30000 PNG (1-bit, all white): ~100 KB on disk, 900 M pixels decoded."""
    row = b"\x00" + b"\xff" * (side // 8)
    raw = zlib.compress(row * side, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def odd_inputs(tmp_path_factory) -> dict[str, tuple[str, bool]]:
    """name -> (path, whether a result is expected; False = a clean error is expected)."""
    folder = tmp_path_factory.mktemp("odd")
    photo = Image.open(preset_samples("kitchenware")[0].path).convert("RGB")
    jpeg = _save(photo, "JPEG", quality=90)
    png = _save(photo.resize((200, 150)), "PNG")
    palette = Image.new("P", (120, 90), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (30, 20, 90, 70))
    frames = [Image.new("RGB", (64, 48), c) for c in ((200, 0, 0), (0, 200, 0))]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    cases = {
        "not_an_image.jpg": (b"%PDF-1.4 definitely not a picture", False),
        "empty.png": (b"", False),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], False),
        "truncated.png": (png[: len(png) // 2], False),
        "bomb.png": (_png_bomb(), False),
        "one_pixel.png": (_save(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), True),
        "strip.png": (_save(Image.new("RGB", (20000, 20), (90, 90, 90)), "PNG"), True),
        "cmyk.jpg": (_save(photo.convert("CMYK"), "JPEG"), True),
        "sixteen_bit.png": (_save(Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)), "PNG"), True),
        "palette_alpha.png": (_save(palette, "PNG", transparency=0), True),
        "animated.gif": (_save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0), True),
        "animated.webp": (_save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100), True),
        "exif_rotated.jpg": (_save(photo, "JPEG", exif=exif), True),
    }
    out = {}
    for name, (data, ok) in cases.items():
        path = folder / name
        path.write_bytes(data)
        out[name] = (str(path), ok)
    return out


def test_every_odd_input_gets_an_answer_or_a_clean_error(client, odd_inputs, live_server, live_log):
    from gradio_client.exceptions import AppError

    for name, (path, ok) in odd_inputs.items():
        if ok:
            result = classify(client, path)
            # Each probability is rounded to 6 decimals: five of them may sum to 1 + 2.5e-6.
            assert len(result) == 5 and sum(result.values()) <= 1 + len(result) * 5e-7 + 1e-12, name
        else:
            with pytest.raises(AppError) as excinfo:
                classify(client, path)
            message = str(excinfo.value)
            assert message and "Traceback" not in message and 'File "' not in message, (name, message)
    # Still alive and correct afterwards.
    with urllib.request.urlopen(live_server + "/healthz", timeout=5) as r:
        assert json.load(r)["ready"]
    test_kitchenware_photo_gets_its_label(client)


def test_error_messages_say_what_was_wrong(client, odd_inputs):
    from gradio_client.exceptions import AppError

    expectations = {"not_an_image.jpg": "not a recognised image", "empty.png": "empty",
                    "truncated.jpg": "truncated", "bomb.png": "pixels"}
    for name, words in expectations.items():
        with pytest.raises(AppError, match=words):
            classify(client, odd_inputs[name][0])


def test_exif_rotation_is_applied(odd_inputs):
    from xception_core.inputs.images import load_image

    upright = Image.open(preset_samples("kitchenware")[0].path)
    assert load_image(odd_inputs["exif_rotated.jpg"][0]).size == (upright.height, upright.width)


def test_uploads_over_the_cap_are_refused(client, live_server, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (11 * 1024 * 1024))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # gradio_client checks first
        classify(client, big)
    # A raw upload that skips the client's check is refused by the server itself.
    import httpx

    response = httpx.post(f"{live_server}/gradio_api/upload", files={"files": ("big.png", big.read_bytes())}, timeout=60)
    assert response.status_code == 413, response.text[:200]


def test_sixteen_concurrent_calls_match_their_sequential_answers(client):
    from gradio_client import handle_file

    paths = [s.path for s in preset_samples("kitchenware")[:12]] + [e.path for e in example_images()[:4]]
    assert len(paths) == 16
    sequential = [classify(client, p) for p in paths]
    jobs = [client.submit(handle_file(str(p)), api_name="/classify") for p in paths]
    concurrent = [job.result(timeout=120) for job in jobs]
    for path, seq, conc in zip(paths, sequential, concurrent):
        assert list(seq) == list(conc), path  # same labels, same order
        np.testing.assert_allclose(list(conc.values()), list(seq.values()), atol=1e-4, err_msg=str(path))


def test_concurrent_clients_in_threads(live_server):
    """Separate clients (separate sessions) at once, as separate users."""
    from gradio_client import Client

    paths = [s.path for s in preset_samples("kitchenware")[:8]]

    def one(path):
        return classify(Client(live_server + "/", verbose=False), path)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, paths))
    assert all(len(r) == 5 for r in results)


def test_api_cannot_read_server_files_by_path(live_server):
    """A raw API call naming a server-side path (not an upload) is refused before it is read."""
    import httpx

    for path in ("/etc/hostname", str(example_images()[0].path)):
        response = httpx.post(f"{live_server}/gradio_api/call/classify",
                              json={"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, None]}, timeout=30)
        event_id = response.json()["event_id"]
        with httpx.stream("GET", f"{live_server}/gradio_api/call/classify/{event_id}", timeout=60) as stream:
            events = [line for line in stream.iter_lines() if line.startswith("event:")]
        assert events and events[-1] == "event: error", (path, events)
