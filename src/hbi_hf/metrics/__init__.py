"""The package's metrics as `evaluate` modules, shipped with the package and loaded by path (no Hub involved).

| name | module | what it computes |
|---|---|---|
| `"retrieval"` | `hbi_retrieval/hbi_retrieval.py` | text-to-video and video-to-text R@1/5/10, Rsum, MdR, MnR |
| `"videoqa"` | `hbi_videoqa/hbi_videoqa.py` | top-1 accuracy, out-of-vocabulary answers counted as wrong |
| `"captioning"` | `hbi_captioning/hbi_captioning.py` | BLEU-4, METEOR, ROUGE-L, CIDEr (COCO caption toolkit; needs Java) |

```python
>>> from hbi_hf import metrics
>>> retrieval = metrics.load("retrieval")  # the same as evaluate.load(metrics.metric_path("retrieval"))
>>> retrieval.compute(predictions=scores, references=text_to_video)  # scores (n_text, n_video), one row per text
```

`evaluate.load` copies the module script into its modules cache (`HF_MODULES_CACHE`, by default
`~/.cache/huggingface/modules`) and writes its temporary Arrow files under its metrics cache (`~/.cache/huggingface/
metrics`, or `cache_dir`); nothing is fetched from the Hub, so it works with `HF_HUB_OFFLINE=1`.
"""

from pathlib import Path

METRIC_MODULES = {"retrieval": "hbi_retrieval", "videoqa": "hbi_videoqa", "captioning": "hbi_captioning"}
"""Short name -> folder (and script name) of each module in this package."""


def metric_path(name: str) -> Path:
    """The installed folder of the `evaluate` module `name` (one of [`METRIC_MODULES`]); `evaluate.load` accepts it.

    Raises:
        `ValueError`: for an unknown name.
    """
    if name not in METRIC_MODULES:
        raise ValueError(f"unknown HBI metric {name!r}; known: {sorted(METRIC_MODULES)}")
    return Path(__file__).resolve().parent / METRIC_MODULES[name]


def load(name: str, **kwargs):
    """`evaluate.load` of the package's module `name` by its installed path; `kwargs` go to `evaluate.load`
    (`cache_dir`, `keep_in_memory`, `experiment_id`, ...).

    Returns:
        `evaluate.EvaluationModule`: call `.compute(predictions=..., references=...)` or `.add_batch` then
        `.compute()`.
    """
    import evaluate

    return evaluate.load(str(metric_path(name)), **kwargs)


def compute(name: str, **inputs) -> dict[str, float]:
    """Load the module `name` keeping its data in memory (nothing is written to the metrics cache) and compute it on
    `inputs` (`predictions`, `references` and the module's options)."""
    return load(name, keep_in_memory=True).compute(**inputs)


__all__ = ["METRIC_MODULES", "compute", "load", "metric_path"]
