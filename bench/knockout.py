"""Section 7: knockouts (Explore › Knockouts, `/knockout`): the eight-block lesion sweep on one photo
against a classify, both on the served translation (ONNX Runtime, no TensorFlow).

The sweep is what the lesion study costs per photo: the photo's intact chain pass (every block
boundary kept) and, for each middle-flow block, the network with that block's branch removed,
run from the first changed block on (`KnockoutChain.run`). A classify is the served forward
(`TranslatedModel.forward`). Both interleaved, medians; the issue's target is a sweep of at most
6 classifies."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import _say, interleaved, load, photo, ratio, summarize


def served_translation(weights: str) -> Any:
    """The cached translation of `weights` served as the app serves it, or None when not cached."""
    from xception_core.runtime.translated import TranslatedModel, open_translation, translation_dir
    from xception_core.settings import Settings
    from xception_core.weights.fetch import cached_weights_sha256

    settings = Settings.from_env()
    sha = cached_weights_sha256(weights, settings.keras_home, settings.cache_dir)
    translation = open_translation(translation_dir(settings.cache_dir, sha), sha) if sha else None
    return None if translation is None else TranslatedModel(translation)


def bench_knockouts(args: argparse.Namespace) -> dict[str, Any]:
    """Section 7 (see the module's docstring)."""
    from xception_core.runtime.knockout import Knockout, chain_of

    section: dict[str, Any] = {"load_before": load()}
    served = served_translation(args.weights)
    if served is None:
        return {**section, "skipped": True, "why": f"no cached translation of {args.weights!r} (start the app once)"}
    chain = chain_of(served)
    start = time.perf_counter()
    chain.warm_up()
    section["sessions_built_ms"] = round((time.perf_counter() - start) * 1000, 1)
    x = photo(served.input_size)
    middle = [b for b in chain.blocks if chain.facts.shortcuts.get(b) == "identity"]

    def sweep() -> None:
        boundaries = chain.intact(x)
        for block in middle:
            chain.run(boundaries, [Knockout("skip_branch", block)])

    kept = chain.intact(x)

    def first_middle() -> None:  # one knockout on a photo whose intact pass is kept
        chain.run(kept, [Knockout("skip_branch", middle[0])])

    _say(f"knockouts: {args.repeats} interleaved rounds at {served.input_size} px ({len(middle)}-block sweep)")
    times = interleaved({"classify": lambda: served.forward(x), "intact_chain_pass": lambda: chain.intact(x),
                         "lesion_sweep": sweep, f"one_knockout_{middle[0]}": first_middle}, args.repeats)
    paths = {k: summarize(v) for k, v in times.items()}
    classify = paths["classify"]["median_ms"]
    section.update({
        "input_size": served.input_size, "weights": args.weights, "blocks_swept": middle, "paths": paths,
        "ratios": {"sweep_vs_classify": ratio(paths["lesion_sweep"]["median_ms"], classify),
                   "intact_chain_vs_classify": ratio(paths["intact_chain_pass"]["median_ms"], classify)},
        "load_after": load(),
    })
    return section


def lesion_table(weights: str = "kitchenware") -> dict[str, Any]:
    """The lesion study as the page runs it (`KnockoutService.lesion`) on a store serving `weights`."""
    from demo.services.knockout import KnockoutService
    from demo.store import ModelStore
    from xception_core.settings import Settings

    store = ModelStore(Settings.from_env(), [weights]).start()
    store.get(timeout=600)
    return KnockoutService(store).lesion().to_json()


if __name__ == "__main__":  # python -m bench.knockout [weights]: the lesion table, measured here
    import json
    import sys

    print(json.dumps(lesion_table(*sys.argv[1:2]), indent=1))
