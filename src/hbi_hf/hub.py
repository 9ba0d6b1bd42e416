"""Sharing HBI checkpoints on the Hugging Face Hub: the model, its processor and its model card in one repository.

Every HBI model class, the estimator and the processor inherit transformers' `push_to_hub`. The helpers here add the
HBI model card and upload everything in a single commit:

```python
>>> from hbi_hf.hub import push_to_hub
>>> push_to_hub("org/hbi-msrvtt", model, processor=processor, dataset_name="msrvtt", eval_results=results)
```

`push_folder_to_hub` uploads a trained output folder (config, safetensors weights, processor files,
`eval_results.json`), rendering its card from the folder's config and measured results.
"""

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, ModelCard
from transformers import AutoConfig, PreTrainedModel
from transformers.utils import logging

from .model_card import load_eval_results, render_model_card

logger = logging.get_logger(__name__)

EVAL_RESULTS_NAME = "eval_results.json"
FOLDER_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "runs/**", "*.bin", "*.pt", "*.pth", "*.pkl", ".*"]
"""Never uploaded from an output folder: Trainer checkpoints and logs, and pickled files (weights go as
safetensors only)."""


def save_for_hub(
    output_dir: str | Path,
    model: PreTrainedModel,
    processor=None,
    model_card: ModelCard | None = None,
    eval_results: Mapping[str, float] | None = None,
) -> Path:
    """Write what a Hub repository of an HBI checkpoint holds: `save_pretrained` of the model (safetensors) and of
    the processor, `eval_results.json` when results are given, and the card as `README.md`."""
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    if processor is not None:
        processor.save_pretrained(output_dir)
    if eval_results:
        (output_dir / EVAL_RESULTS_NAME).write_text(_format_results(eval_results))
    if model_card is not None:
        model_card.save(output_dir / "README.md")
    return output_dir


def _format_results(eval_results: Mapping[str, float]) -> str:
    return json.dumps(dict(eval_results), indent=2) + "\n"


def push_to_hub(
    repo_id: str,
    model: PreTrainedModel,
    processor=None,
    dataset_name: str | None = None,
    eval_results: Mapping[str, float] | None = None,
    model_card: ModelCard | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload HBI checkpoint",
) -> CommitInfo:
    """
    Upload `model`, `processor` and the model card to `repo_id` in one commit (the repository is created if needed).

    The card is `model_card` if given, else rendered by [`render_model_card`] from `model.config`, `dataset_name`
    and the measured `eval_results` (without results it says "not yet measured").

    Returns:
        [`huggingface_hub.CommitInfo`] of the commit that was made.
    """
    if model_card is None:
        if dataset_name is None:
            raise ValueError(
                "push_to_hub needs dataset_name (e.g. 'msrvtt') to render the model card, or a model_card"
            )
        model_card = render_model_card(model.config, dataset_name, eval_results, repo_id=repo_id)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        save_for_hub(folder, model, processor, model_card, eval_results)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    logger.info("pushed %s to %s (%s)", type(model).__name__, repo_id, commit.oid)
    return commit


def card_for_folder(folder: str | Path, dataset_name: str, repo_id: str | None = None) -> ModelCard:
    """Render the card of a saved checkpoint folder from its `config.json` and, if present, `eval_results.json`."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: not a saved checkpoint folder")
    config = AutoConfig.from_pretrained(folder)
    results_path = folder / EVAL_RESULTS_NAME
    eval_results = load_eval_results(results_path) if results_path.is_file() else None
    if eval_results is None:
        logger.warning("%s has no %s: the card will say the results are not yet measured", folder, EVAL_RESULTS_NAME)
    return render_model_card(config, dataset_name, eval_results, repo_id=repo_id)


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    dataset_name: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload HBI checkpoint",
) -> CommitInfo:
    """Upload a trained output folder with a freshly rendered `README.md`, leaving out Trainer checkpoints, logs and
    pickled files ([`FOLDER_IGNORE_PATTERNS`])."""
    folder = Path(folder)
    card = card_for_folder(folder, dataset_name, repo_id)
    card.save(folder / "README.md")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id, folder_path=folder, commit_message=commit_message, ignore_patterns=FOLDER_IGNORE_PATTERNS
    )


__all__ = ["EVAL_RESULTS_NAME", "card_for_folder", "push_folder_to_hub", "push_to_hub", "save_for_hub"]
