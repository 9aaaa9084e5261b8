"""The Explore tab's API over HTTP, against the real server (`python app.py`, kitchenware weights)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xception_core.io.assets import example_images

pytestmark = pytest.mark.slow

BLOCKS = [f"block{i}" for i in range(1, 15)]
# Output shapes at the kitchenware weights' 150×150 input, paper wiring: 150 → 74 → 72 → 36 → 18 → 9 → 5.
SHAPES_150 = {"block1": [72, 72, 64], "block2": [36, 36, 128], "block3": [18, 18, 256], "block4": [9, 9, 728],
              **{f"block{i}": [9, 9, 728] for i in range(5, 13)}, "block13": [5, 5, 1024], "block14": [5, 5, 2048]}


def activations(client, path, block: str) -> dict:
    from gradio_client import handle_file

    answer, _maps = client.predict(handle_file(str(path)), block, api_name="/activations")
    return answer


def test_architecture_json(client):
    arch = client.predict(api_name="/architecture")
    assert isinstance(arch["total_params"], int) and isinstance(arch["learned_params"], int)
    blocks = arch["blocks"]
    assert [b["name"] for b in blocks] == BLOCKS + ["head"]
    for b in blocks:
        assert {"name", "flow", "output_shape", "params", "macs"} <= set(b)
        assert all(isinstance(d, int) for d in b["output_shape"]) and isinstance(b["params"], int)
        assert isinstance(b["macs"], int) and b["macs"] >= 0
    assert [b["flow"] for b in blocks] == ["entry"] * 4 + ["middle"] * 8 + ["exit"] * 2 + ["head"]
    assert {b["name"]: b["output_shape"] for b in blocks[:14]} == SHAPES_150
    assert blocks[-1]["output_shape"] == [6]
    assert arch["total_params"] == sum(b["params"] for b in blocks)
    assert arch["learned_params"] + arch["moving_statistics_params"] == arch["total_params"]
    # The kitchenware head (Dense 100 + Dense 6) on Xception's 20,861,480 feature-extractor weights.
    assert sum(b["params"] for b in blocks[:14]) == 20_861_480
    assert arch["input_shape"] == [150, 150, 3] and arch["weights"] == "kitchenware"


def test_activations_json_and_one_forward_per_image(client, tmp_path):
    # A picture no other test sends, so the first call must run the model.
    rng = np.random.default_rng(123)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(path)
    first = activations(client, path, "block4")
    assert first["block"] == "block4" and first["shape"] == [9, 9, 728]
    assert len(first["channel_means"]) == 728 and all(isinstance(v, float) for v in first["channel_means"])
    assert first["cache_hit"] is False and first["forward_ms"] > 0
    assert first["weights"] == "kitchenware" and first["variant"] == "paper" and first["input_size"] == 150
    # Another block of the same image: served from the cache, no second forward pass.
    second = activations(client, path, "block14")
    assert second["cache_hit"] is True and second["forward_ms"] is None
    assert second["shape"] == [5, 5, 2048] and len(second["channel_means"]) == 2048
    assert min(second["channel_means"]) >= 0.0  # block 14 ends with a ReLU in the paper's wiring
    assert second["after_relu"] is True and first["after_relu"] is False
    again = activations(client, path, "block4")
    assert again["cache_hit"] is True and again["channel_means"] == first["channel_means"]


def test_activations_for_every_block_of_an_example(client):
    example = example_images()[0].path
    for block in ("block1", "block13"):
        result = activations(client, example, block)
        assert result["shape"] == SHAPES_150[block]
        assert len(result["channel_means"]) == SHAPES_150[block][-1]


def test_activations_errors_are_clean(client, tmp_path):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Unknown block 'block15'"):
        activations(client, example_images()[0].path, "block15")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"%PDF-1.4 not an image")
    with pytest.raises(AppError, match="not a recognised image") as excinfo:
        activations(client, bad, "block4")
    assert "Traceback" not in str(excinfo.value)
