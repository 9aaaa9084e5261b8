"""Knockouts on the translated network against an independent reference: a Keras functional
model rebuilt from the same weights with the change made by hand (`tests.conftest.knocked_keras`),
for each kind of knockout, on random weights at a small size and (slow) on the offline weights;
and the refusals, which are sentences."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import knocked_keras, random_loaded
from xception_core.runtime.knockout import (
    Knockout, KnockoutChain, KnockoutError, NetworkFacts, chain_of, parse_knockouts, probabilities,
)
from xception_core.runtime.ort import FEATURES, OUTPUT
from xception_core.runtime.translated import TranslatedModel, translate

SIZE, CLASSES = 71, 5

# One of each kind, and two together (the lesion of several blocks, a mix of kinds).
CASES = {
    "skip_branch": [{"kind": "skip_branch", "block": "block7"}],
    "skip_several": [{"kind": "skip_branch", "block": "block5"}, {"kind": "skip_branch", "block": "block11"}],
    "skip_conv_block": [{"kind": "skip_branch", "block": "block13"}],
    "drop_shortcut": [{"kind": "drop_shortcut", "block": "block9"}],
    "drop_conv_shortcut": [{"kind": "drop_shortcut", "block": "block3"}],
    "zero_channels": [{"kind": "zero_channels", "block": "block6", "channels": [0, 3, 700]}],
    "relu_between": [{"kind": "relu_between", "block": "block13", "layer": "block13_sepconv2"}],
    "mixed": [{"kind": "relu_between", "block": "block2", "layer": "block2_sepconv1"},
              {"kind": "zero_channels", "block": "block14", "channels": [5]},
              {"kind": "skip_branch", "block": "block12"}],
}


@pytest.fixture(scope="module")
def loaded():
    return random_loaded(SIZE, CLASSES, seed=4)


@pytest.fixture(scope="module")
def served(loaded):
    return TranslatedModel(translate(loaded, [f"c{i}" for i in range(CLASSES)], "cd" * 32))


@pytest.fixture(scope="module")
def chain(served):
    return chain_of(served)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)


def knocked(chain: KnockoutChain, served: TranslatedModel, images, items):
    """(features, probabilities, knockouts) of the chain with `items` knocked out."""
    knockouts = parse_knockouts(items, chain.facts)
    out = chain.run(chain.intact(images), knockouts)
    return out[FEATURES], probabilities(served, out[OUTPUT]), knockouts


def test_the_intact_chain_is_the_served_forward(chain, served, images):
    features, probs = served.forward(images)
    out = chain.intact(images)
    np.testing.assert_allclose(probabilities(served, out[OUTPUT]), probs, atol=1e-6)
    np.testing.assert_allclose(out[FEATURES], features, atol=1e-5, rtol=1e-5)
    assert set(chain.block_outputs()) == set(served.info.arch.block_names)


@pytest.mark.parametrize("case", list(CASES))
def test_each_knockout_matches_keras_rebuilt_by_hand(case, loaded, chain, served, images):
    features, probs, knockouts = knocked(chain, served, images, CASES[case])
    ref_features, reference = (np.asarray(a) for a in knocked_keras(loaded, knockouts)(images, training=False))
    np.testing.assert_allclose(probs, reference, atol=1e-4)
    # Random weights give near-uniform probabilities: the features show the knockout did something.
    intact, _ = served.forward(images)
    scale = np.abs(intact).max()
    np.testing.assert_allclose(features / scale, ref_features / scale, atol=1e-6)
    # Random blocks add little to the residual stream: a change 5× the agreement is still a change.
    assert np.abs(ref_features - intact).max() / scale > 5e-6, "the knockout changes the network (the test can fail)"


def test_a_skipped_identity_branch_is_not_run_and_starts_at_its_block(chain):
    (k,) = parse_knockouts(CASES["skip_branch"], chain.facts)
    assert chain.first_changed([k]) == chain.index["block7"]
    segment = chain.segments[chain.index["block7"]]
    assert segment.identity_from is not None
    assert chain.segments[chain.index["block13"]].identity_from is None  # a conv shortcut runs


def test_knockouts_are_sorted_and_joined(chain):
    items = [{"kind": "zero_channels", "block": "block9", "channels": [4, 2]},
             {"kind": "skip_branch", "block": "block5"},
             {"kind": "zero_channels", "block": "block9", "channels": [2, 1]}]
    assert parse_knockouts(items, chain.facts) == (
        Knockout("skip_branch", "block5"), Knockout("zero_channels", "block9", channels=(1, 2, 4)))
    assert parse_knockouts([], chain.facts) == ()


@pytest.mark.parametrize(("items", "words"), [
    ({"kind": "skip_branch"}, "must be a list"),
    ([{"kind": "melt", "block": "block5"}], "unknown kind 'melt'"),
    ([{"kind": "skip_branch", "block": "block99"}], "unknown block 'block99'"),
    ([{"kind": "skip_branch", "block": "block1"}], "block1 has no shortcut"),
    ([{"kind": "drop_shortcut", "block": "block14"}], "block14 has no shortcut"),
    ([{"kind": "relu_between", "block": "block5", "layer": "block6_sepconv1"}], "unknown layer 'block6_sepconv1'"),
    ([{"kind": "relu_between", "block": "block1", "layer": "block1_conv1"}], "no separable"),
    ([{"kind": "zero_channels", "block": "block5", "channels": [728]}], "channel 728 is not a whole number"),
    ([{"kind": "zero_channels", "block": "block5", "channels": [1.5]}], "channel 1.5"),
    ([{"kind": "zero_channels", "block": "block5", "channels": []}], "non-empty list"),
    ([{"kind": "zero_channels", "block": "block5"}], "has no 'channels'"),
    ([{"kind": "skip_branch", "block": "block5", "channels": [1]}], "takes no 'channels'"),
    ([{"kind": "skip_branch", "block": "block5"}, {"kind": "drop_shortcut", "block": "block5"}], "leaves it nothing"),
    ([{"kind": "skip_branch", "block": "block5"}] * 65, "At most 64"),
    (["block5"], "must be an object"),
])
def test_refusals_are_sentences(items, words, chain):
    with pytest.raises(KnockoutError) as caught:
        parse_knockouts(items, chain.facts)
    message = str(caught.value)
    assert words in message and message.endswith(".") and "\n" not in message


def test_the_facts_come_from_the_layer_graph():
    from xception_core.arch.registry import architecture

    arch = architecture()
    facts = NetworkFacts.of(arch.graph("paper"), arch.block_names)
    assert [b for b, s in facts.shortcuts.items() if s == "identity"] == [f"block{i}" for i in range(5, 13)]
    assert [b for b, s in facts.shortcuts.items() if s == "conv"] == ["block2", "block3", "block4", "block13"]
    assert facts.channels["block14"] == 2048 and facts.separables["block13"] == ("block13_sepconv1", "block13_sepconv2")


@pytest.fixture(scope="module")
def offline():
    """The cached translation of the offline kitchenware weights (what serving runs)."""
    from xception_core.runtime.translated import open_translation, translation_dir
    from xception_core.settings import Settings
    from xception_core.weights.fetch import cached_weights_sha256

    settings = Settings.from_env()
    sha = cached_weights_sha256("kitchenware", settings.keras_home, settings.cache_dir)
    translation = open_translation(translation_dir(settings.cache_dir, sha), sha) if sha else None
    if translation is None:
        pytest.skip("the kitchenware translation is not cached here (start the app once)")
    served = TranslatedModel(translation)
    return served, chain_of(served)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["skip_several", "skip_conv_block", "drop_shortcut", "zero_channels",
                                  "relu_between", "mixed"])
def test_each_knockout_matches_keras_on_the_offline_weights(case, offline, kitchenware_loaded, kitchenware_samples):
    from xception_core.runtime.ort import softmax
    from xception_core.weights.presets import preprocessing_for

    served, chain = offline
    prep = preprocessing_for(served.info.preset)
    photos = np.stack([prep(s.path, served.input_size) for s in kitchenware_samples[:3]])
    _, probs, knockouts = knocked(chain, served, photos, CASES[case])
    _, logits = knocked_keras(kitchenware_loaded, knockouts)(photos, training=False)
    reference = softmax(np.asarray(logits))
    np.testing.assert_allclose(probs, reference, atol=1e-4)
    assert np.abs(reference - served.forward(photos)[1]).max() > 3e-4, "the knockout changes the answer"
