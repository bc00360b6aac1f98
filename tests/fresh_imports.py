"""What importing and first using ``mmkd_utils`` does in a fresh interpreter, as JSON.

Run once per test session by the ``fresh_imports`` fixture (tests/conftest.py): starting
Python and importing torch and open_clip takes seconds, so every "importing X stays light"
test reads its facts from this one run instead of starting an interpreter of its own.
The steps run in an order where each fact is recorded before a later step could change
it; a step that raises is recorded as its error and the later steps still run.
"""

from __future__ import annotations

import json
import sys
import traceback

facts: dict[str, object] = {}

# As if the optional extras were not installed: nothing is meant to import them at import
# time, and each step below would fail if something did.
for optional in ("pytorch_grad_cam",):
    sys.modules[optional] = None  # type: ignore[assignment]


def modules(*names: str) -> list[str]:
    """Which of ``names`` are imported now."""
    return sorted(name for name in names if name in sys.modules)


def step(name: str):
    """Run the decorated function now; record its result, or its error, under ``name``."""

    def run(function):
        try:
            facts[name] = function()
        except Exception:  # recorded for the test that reads it
            facts[name] = {"error": traceback.format_exc()}
        return function

    return run


import torch  # noqa: E402

before = [str(torch.get_default_dtype()), torch.get_num_threads()]


@step("prompts")
def _():
    import mmkd_utils.model.classifier  # noqa: F401
    import mmkd_utils.prompts as p

    return {"banks_read_at_import": p.banks._builtin_banks.cache_info().currsize}


@step("package")
def _():
    import mmkd_utils  # noqa: F401

    after = [str(torch.get_default_dtype()), torch.get_num_threads()]
    return {"torch_settings_changed": after != before, "imported": modules("matplotlib.pyplot")}


@step("widgets")
def _():
    import mmkd_utils.widgets  # noqa: F401

    return {"imported": modules("ipywidgets", "matplotlib.pyplot")}


@step("plotting")
def _():
    import mmkd_utils.plotting  # noqa: F401

    return {"imported": modules("matplotlib.pyplot", "umap")}


@step("saliency")
def _():
    import mmkd_utils.tasks.saliency  # noqa: F401  (its grad-cam is imported on first use)

    return {"imported": modules("matplotlib.pyplot")}


@step("bar_charts")
def _():
    import mmkd_utils.plotting as p

    p.plot_probability_bars([0.2, 0.8], ["a", "b"])
    p.plot_predictions([[[0.0]]], [[0.2, 0.8]], ["a", "b"])
    return {"imported": modules("matplotlib.pyplot")}


@step("maps")
def _():
    import numpy as np
    import pandas as pd

    import mmkd_utils.plotting as p

    x = np.random.default_rng(0).normal(size=(6, 4))
    p.plot_embedding_map(x, list("aabbcc"), thumbnails=[np.zeros((4, 4))] * 6)
    p.plot_similarity_heatmap(x, x[:2], list("abcdef"), ["u", "v"])
    gallery = {"query": ["q"], "rank": [1], "path": [np.zeros((4, 4))], "score": [0.5]}
    p.plot_gallery(pd.DataFrame(gallery))
    return {"imported": modules("matplotlib.pyplot", "umap")}


@step("banks")
def _():
    import mmkd_utils.prompts as p

    unread = p.banks._builtin_banks.cache_info().currsize
    p.list_tasks()
    return {"before_use": unread, "after_use": p.banks._builtin_banks.cache_info().currsize}


print(json.dumps(facts))
