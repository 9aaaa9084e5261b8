"""The decode gate's costs (issue 30, item 6): what a decode really holds, per format and mode,
measured here, and the gate that shares that memory: small decodes never wait behind big ones,
turns go round the clients, and a request waits for its turn before it takes a working slot."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import threading

import pytest
from PIL import Image

from demo.services import payloads
from demo.services.payloads import FORMAT_BYTES_PER_PIXEL, MODE_BYTES_PER_PIXEL, DecodeGate, decode_cost

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]

# (format, mode written): every figure of the cost table is measured by at least one of these.
CASES = [("PNG", "L"), ("PNG", "LA"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "I;16"),
         ("WEBP", "RGB"), ("WEBP", "RGBA"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGBA"), ("TIFF", "CMYK"),
         ("TIFF", "I"), ("TIFF", "F"), ("AVIF", "RGB"), ("JPEG", "RGB"), ("JPEG", "L")]

MEASURE = textwrap.dedent('''
    import io, json, sys, warnings
    warnings.simplefilter("ignore")
    from demo.limits import map_big_blocks
    map_big_blocks()  # freed blocks go back at once: the peak of each decode is its own
    import numpy as np
    from PIL import Image
    from demo.services.payloads import DECODE_SIDE, decode_cost
    from xception_core.inputs.images import load_image
    side = int(sys.argv[1])
    options = {"WEBP": dict(quality=50, method=0), "PNG": dict(compress_level=1), "AVIF": dict(speed=10),
               "TIFF": dict(compression="tiff_lzw")}
    noise = np.random.default_rng(0).integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
    Image.init()
    results = []
    for kind, mode in json.loads(sys.argv[2]):
        if kind not in Image.SAVE:
            continue
        buffer = io.BytesIO()
        Image.fromarray(noise).resize((side, side)).convert(mode).save(buffer, kind, **options.get(kind, {}))
        data = buffer.getvalue()
        with Image.open(io.BytesIO(data)) as header:
            read_mode, pixels = header.mode, side * side  # side < DECODE_SIDE * 2: a JPEG is not scaled
        def status(key):
            return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
        before = status("VmRSS:")
        open("/proc/self/clear_refs", "w").write("5")  # VmHWM back to VmRSS
        image = load_image(data, DECODE_SIDE)
        peak = status("VmHWM:") - before
        del image
        results.append([kind, mode, read_mode, peak / pixels, decode_cost(data) / pixels])
    print(json.dumps(results))
''')


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_cost_table_is_what_decodes_measure():
    """Each format and mode decoded at 2400×2400 (5.8 MP) in a fresh process: the peak it adds
    (VmHWM, reset before each) is at most what `decode_cost` charges, and the charge is no more
    than 40% (plus a byte) above it (a table of guesses would fail one side or the other)."""
    done = subprocess.run([sys.executable, "-c", MEASURE, "2400", json.dumps(CASES)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    print("\n".join(f"{k} {m} (read as {r}): measured {p:.2f} B/px, charged {c:.2f}" for k, m, r, p, c in rows))
    assert {k for k, *_ in rows} >= {"PNG", "WEBP", "GIF", "BMP", "TIFF", "JPEG"}
    for kind, mode, read_mode, measured, charged in rows:
        assert measured <= charged <= 1.4 * measured + 1.0, (kind, mode, read_mode, measured, charged)
    webp = next(c for k, _, _, _, c in rows if k == "WEBP")
    assert webp >= 15, "a WebP's decode costs about 16 bytes a pixel, not 4"
    charged_modes = {r for k, _, r, _, _ in rows if k not in FORMAT_BYTES_PER_PIXEL}
    assert set(MODE_BYTES_PER_PIXEL) <= charged_modes | {"I;16", "I"}, "every mode in the table is measured"


def _image(kind: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (20, 120, 200)).save(buffer, kind)
    return buffer.getvalue()


def test_decode_cost_scales_a_jpeg_as_the_decoder_does():
    """A 4000×3000 JPEG decodes at half scale (the decoder's DCT scaling for a 1536 px side), so
    it is charged for 2000×1500; a PNG of that size for all of it."""
    jpeg, png = _image("JPEG", (4000, 3000)), _image("PNG", (4000, 3000))
    assert decode_cost(jpeg) == int(2000 * 1500 * MODE_BYTES_PER_PIXEL["RGB"])
    assert decode_cost(png) == int(4000 * 3000 * MODE_BYTES_PER_PIXEL["RGB"])
    assert decode_cost(b"not an image") == 0


def test_small_decodes_never_wait_behind_big_ones_and_turns_go_round_the_clients():
    """The big pool fits one big decode: the attacker's second and third wait, a visitor's big
    one is served right after the attacker's running one (before its waiting ones), and a small
    decode from anyone is granted at once the whole time."""
    gate = DecodeGate(small_bytes=10, small_pool=30, big_pool=100)
    running = gate.ticket(100, ("attacker", "a"))
    queued = [gate.ticket(100, ("attacker", f"a{i}")) for i in range(2)]
    visitor = gate.ticket(100, ("visitor", "v"))
    assert running.granted.is_set() and not any(t.granted.is_set() for t in queued + [visitor])
    small = gate.ticket(5, ("visitor", "v2"))
    assert small.granted.is_set(), "a small decode never waits behind big ones"
    gate.release(small)
    gate.release(running)
    assert queued[0].granted.is_set() and not visitor.granted.is_set()  # the attacker's next in line
    gate.release(queued[0])
    assert visitor.granted.is_set() and not queued[1].granted.is_set(), "round robin: the visitor's turn"
    assert gate.peak <= 100 + 30
    gate.release(visitor)
    gate.release(queued[1])
    assert gate.held() == 0 and gate.waiting() == 0


def test_a_thread_waits_for_its_turn_and_a_cancelled_wait_gives_its_place_up():
    gate = DecodeGate(small_bytes=0, small_pool=0, big_pool=10)
    first = gate.ticket(10, ("a", ""))
    entered = threading.Event()

    def decode() -> None:
        with gate.turn(10, ("b", "")):
            entered.set()

    thread = threading.Thread(target=decode)
    thread.start()
    assert not entered.wait(0.2)
    gone = gate.ticket(10, ("c", ""))
    gate.release(gone)  # a client that left while waiting
    gate.release(first)
    assert entered.wait(10)
    thread.join(10)
    assert gate.held() == 0 and gate.waiting() == 0


def test_a_page_decode_uses_its_events_turn_and_others_wait_for_one(monkeypatch):
    """`decode_image` with a granted prepaid turn (the page's event) does not queue again; without
    one it takes a turn for its cost."""
    gate = DecodeGate()
    taken = []
    real = gate.ticket
    monkeypatch.setattr(gate, "ticket", lambda cost, who=("", ""): (taken.append(cost), real(cost, who))[1])
    monkeypatch.setattr(payloads, "DECODES", gate)
    data = _image("PNG", (64, 48))
    payloads.decode_image(data)
    assert taken == [decode_cost(data)]
    prepaid = gate.ticket(decode_cost(data), ("page", "s"))
    token = payloads.DECODE_PREPAID.set(prepaid)
    try:
        payloads.decode_image(data)
    finally:
        payloads.DECODE_PREPAID.reset(token)
    assert taken == [decode_cost(data)] * 2, "no second turn inside the event's"
    gate.release(prepaid)


def test_a_running_events_uncovered_decode_waits_a_bounded_time():
    """A running event's handler holds a working slot: a decode its door turn did not cover may
    not wait for turns that events queued behind that slot hold; after its timeout it decodes,
    counted as forced."""
    gate = DecodeGate(small_bytes=0, small_pool=0, big_pool=10)
    queued = gate.ticket(10, ("queued", "q"))  # a queued event's turn: the whole pool
    with gate.turn(10, ("running", "r"), timeout=0.05) as ticket:
        assert ticket.granted.is_set() and gate.forced == 1
    gate.release(queued)
    assert gate.held() == 0 and gate.waiting() == 0
