"""The 'Inside one operation' service, driven directly on a tiny random model: its answers equal the
served model's own numbers, every argument is checked, and its caches do what they promise."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from demo.services import UserError
from demo.services.operation import MAX_TOP, OperationService, ServerPhoto
from xception_core.arch.receptive import receptive_table
from xception_core.io.assets import example_images
from xception_core.runtime.patches import MAX_PHOTOS, PatchSearch

SIZE = 96


@pytest.fixture(scope="module")
def service(store):
    return OperationService(store)


def upload(upload_dir, name: str, seed: int, size=(300, 200)) -> dict:
    rng = np.random.default_rng(seed)
    path = upload_dir / name
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


@pytest.fixture(scope="module")
def photo(upload_dir):
    return upload(upload_dir, "photo.png", 0)


@pytest.mark.parametrize("variant", ["paper", "article"])
def test_a_click_equals_the_models_own_numbers(service, photo, variant):
    first = service.step(None, photo, "block4", "block4_sepconv2", 0, 3, 9, variant)
    step = first.step
    assert not first.cache_hit and first.forward_seconds > 0 and first.image.shape == (SIZE, SIZE, 3)
    assert step.plan.layer == "block4_sepconv2" and step.variant == variant and len(step.depthwise) == 4
    for layer, model_value in step.model.items():  # the pass's own values at the same place
        ours = next(s.value for s in step.stages() if s.layer == layer)
        assert ours == pytest.approx(model_value, rel=1e-4, abs=1e-5)
    assert first.output_map.shape == step.grid
    assert first.output_map[0, 3] == pytest.approx(step.model[step.plan.batchnorm])
    assert list(first.input_maps) == [d.channel for d in step.depthwise]
    for shown in step.depthwise:  # each patch is the input map's window (zeros past the border)
        padded = np.pad(first.input_maps[shown.channel], 1)
        assert np.array_equal(padded[0:3, 3:6], shown.inputs)
    # The next click: by key, no payload, no pass.
    second = service.step(first.photo, None, "block4", 2, 5, 5, 9, variant, top=MAX_TOP)
    assert second.cache_hit and second.forward_seconds is None and len(second.step.depthwise) == MAX_TOP
    # Another block of the same photo: a pass from the kept photo, still no payload.
    other = service.step(first.photo, None, "block14", "block14_sepconv1", 1, 1, 0, variant)
    assert not other.cache_hit and other.step.plan.feed == "block13_add"


def test_every_argument_is_checked(service, photo):
    good = dict(photo=None, payload=photo, block="block5", layer="block5_sepconv1", row=0, col=0, channel=0)
    (h, w) = service.grid("block5", "block5_sepconv1")
    bad = [
        (dict(block="block1"), "the stem"),
        (dict(block="x" * 5000), "Unknown block"),
        (dict(block=None), "Unknown block"),
        (dict(layer="block5_sepconv4"), "has the separable convs"),
        (dict(layer="block6_sepconv1"), "has the separable convs"),
        (dict(layer=0), "has the separable convs"),
        (dict(layer=True), "has the separable convs"),
        (dict(row=h), "Row must be a whole number from 0"),
        (dict(row=-1), "Row must be"),
        (dict(col=1.5), "Column must be"),
        (dict(col="nan"), "Column must be"),
        (dict(channel=728), "Channel must be a whole number from 0 to 727"),
        (dict(channel=[1]), "Channel must be"),
        (dict(payload=None), "No image yet"),
        (dict(photo="0" * 24, payload=None), "no longer in memory"),
        (dict(payload={"path": "/etc/passwd"}), "not an upload"),
    ]
    for change, message in bad:
        args = {**good, **change}
        with pytest.raises(UserError, match=message) as caught:
            service.step(args["photo"], args["payload"], args["block"], args["layer"], args["row"], args["col"],
                         args["channel"])
        assert len(str(caught.value)) < 300 and "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" not in str(caught.value)
    with pytest.raises(UserError, match="Wiring must be one of"):
        service.step(None, photo, "block5", 1, 0, 0, 0, variant="resnet")
    with pytest.raises(UserError, match="Channels shown"):
        service.step(None, photo, "block5", 1, 0, 0, 0, top=MAX_TOP + 1)


def test_fields_and_clicks_on_the_photo(service):
    table = service.receptive_table("paper")
    assert table == receptive_table(SIZE, "paper") and table[-1].grid == (3, 3)
    field = service.receptive_field("block3_add", 1, 2)
    assert field.input_size == (SIZE, SIZE) and (field.row, field.col) == (1, 2)
    with pytest.raises(UserError, match="Unknown layer"):
        service.receptive_field("predictions", 0, 0)
    with pytest.raises(UserError, match="Row must be"):
        service.receptive_field("block14_sepconv2_act", 3, 0)
    assert service.position_at("block2", "block2_sepconv1", 0, SIZE - 1) == (0, service.grid("block2", 1)[1] - 1)
    with pytest.raises(UserError, match="x must be a number"):
        service.position_at("block2", 1, 0, SIZE)
    assert service.separable_layers("block13") == ("block13_sepconv1", "block13_sepconv2")


def test_what_a_channel_looks_for(service, store, upload_dir, photo):
    examples = [ServerPhoto(e.path, e.title) for e in example_images()[:3]]
    photos = [*examples, ("my photo", photo), ("another", upload(upload_dir, "b.png", 1))]
    found = service.channel_patches(photos, "block3", 17, "paper", k=3)
    assert found.passes == 5 and len(found.patches) == 3 and found.peaks.shape == (5,)
    assert found.patches[0].value == found.peaks.max() and found.layer == "block3_add"
    assert {p.label for p in found.patches} <= {"my photo", "another", *(e.label for e in examples)}
    again = service.channel_patches(photos, "block9", 700, "paper")
    assert again.passes == 0 and len(again.patches) == 5  # every photo known: a lookup, no decoding
    with pytest.raises(UserError, match="At most 64 photos"):
        service.channel_patches([("p", photo)] * (MAX_PHOTOS + 1), "block3", 0)
    with pytest.raises(UserError, match="No photos"):
        service.channel_patches([], "block3", 0)
    with pytest.raises(UserError, match=r"Photo 2: expected \(label, image\)"):
        service.channel_patches([("p", photo), "not a pair"], "block3", 0)
    with pytest.raises(UserError, match="Photo 1 .*not an upload"):
        service.channel_patches([("p", {"path": "/etc/hosts"})], "block3", 0)
    with pytest.raises(UserError, match="Channel must be a whole number from 0 to 255"):
        service.channel_patches(photos, "block3", 256)
    with pytest.raises(UserError, match="Patches must be"):
        service.channel_patches(photos, "block3", 0, k=0)
    assert all(isinstance(p, ServerPhoto) for p in service.default_photos())


def test_a_forgotten_photo_is_read_again(store, upload_dir):
    """Photos seen before are passed by key; when their summary is gone, they are decoded again."""
    service = OperationService(store, search=PatchSearch(max_bytes=1))  # keeps only the newest summary
    photos = [(f"p{i}", upload(upload_dir, f"f{i}.png", 10 + i)) for i in range(3)]
    first = service.channel_patches(photos, "block6", 3)
    again = service.channel_patches(photos, "block6", 3)
    assert (first.passes, again.passes) == (3, 2)
    assert np.allclose(first.peaks, again.peaks)
    assert [p.photo for p in first.patches] == [p.photo for p in again.patches]


def test_the_strongest_channel_is_the_largest_batchnorm_output_there(service, photo):
    first = service.step(None, photo, "block6", "block6_sepconv2", 2, 1, 0, "paper")
    best = service.strongest_channel(first.photo, None, "block6", 2, 2, 1, "paper")
    values = [service.step(first.photo, None, "block6", 2, 2, 1, c, "paper", top=1).step.batchnorm.value
              for c in range(0, 728, 7)] + [service.step(first.photo, None, "block6", 2, 2, 1, best, top=1)
                                             .step.batchnorm.value]
    assert values[-1] == max(values)  # no channel sampled beats it, each recomputed from the weights
    with pytest.raises(UserError, match="Row must be"):
        service.strongest_channel(first.photo, None, "block6", 2, 99, 1)
