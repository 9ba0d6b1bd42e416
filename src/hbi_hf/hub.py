"""Sharing HBI checkpoints on the Hugging Face Hub: the model, its processor and its model card in one repository.

Every HBI model class, the estimator and the processor inherit transformers' `push_to_hub`. The helpers here add the
HBI model card and upload everything in a single commit:

```python
>>> from hbi_hf.hub import push_to_hub
>>> push_to_hub("org/hbi-msrvtt", model, processor=processor, dataset_name="msrvtt", eval_results=results)
```

`push_folder_to_hub` uploads a trained output folder (config, safetensors weights, processor files,
`eval_results.json`, as `scripts/train_retrieval.py` and `scripts/evaluate_retrieval.py --output_dir` write it),
rendering its card from the folder's config and measured results. The card's `model-index` comes from
[`~model_card.model_index_results`], the builder the scripts used for `eval_results.json`.

With `HF_HUB_OFFLINE=1`, or when the endpoint (`HF_ENDPOINT`, by default https://huggingface.co) cannot be reached,
a push raises [`HBIHubUnreachableError`] saying which.
"""

import importlib
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard, constants
from huggingface_hub.errors import OfflineModeIsEnabled
from huggingface_hub.utils import filter_repo_objects
from transformers import AutoConfig, PreTrainedModel
from transformers.utils import logging

from .model_card import EVAL_RESULTS_NAME, HBIEvalResults, load_eval_results, render_model_card

logger = logging.get_logger(__name__)

CARD_NAME = "README.md"
FOLDER_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "runs/**", "*.bin", "*.pt", "*.pth", "*.pkl", ".*"]
"""Never uploaded from an output folder: Trainer checkpoints and logs, and pickled files (weights go as
safetensors only)."""


class HBIHubUnreachableError(ConnectionError):
    """Raised when a push cannot reach the Hub: offline mode (`HF_HUB_OFFLINE=1`) or an unreachable endpoint."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exceptions of the HTTP client huggingface_hub uses (httpx2 in 2.x, httpx in 1.x)."""
    errors = []
    for module_name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module_name).TransportError)
        except ImportError:
            continue
    return tuple(errors)


@contextmanager
def _reaching_the_hub(repo_id: str) -> Iterator[None]:
    """Turn "offline" and "cannot connect" into an [`HBIHubUnreachableError`] naming `HF_HUB_OFFLINE` or the
    endpoint; checks offline mode before any request."""
    offline = (
        f"cannot push to {repo_id}: huggingface_hub is in offline mode (HF_HUB_OFFLINE=1 is set). Unset HF_HUB_OFFLINE "
        "on a machine that can reach the Hub to push."
    )
    if constants.HF_HUB_OFFLINE:
        raise HBIHubUnreachableError(offline)
    try:
        yield
    except OfflineModeIsEnabled as error:
        raise HBIHubUnreachableError(offline) from error
    except _transport_errors() as error:
        raise HBIHubUnreachableError(
            f"cannot push to {repo_id}: the Hub endpoint {constants.ENDPOINT} (HF_ENDPOINT) cannot be reached "
            f"({type(error).__name__}: {error}). Check the network, or HF_ENDPOINT if it is set."
        ) from error


def _as_results(eval_results: HBIEvalResults | Mapping[str, float] | None, dataset_name: str | None):
    if eval_results is None or isinstance(eval_results, HBIEvalResults):
        return eval_results
    return HBIEvalResults(dict(eval_results), dataset_name)


def save_for_hub(
    output_dir: str | Path,
    model: PreTrainedModel,
    processor=None,
    model_card: ModelCard | None = None,
    eval_results: HBIEvalResults | Mapping[str, float] | None = None,
) -> Path:
    """Write what a Hub repository of an HBI checkpoint holds: `save_pretrained` of the model (safetensors) and of
    the processor, `eval_results.json` when results are given, and the card as `README.md`."""
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    if processor is not None:
        processor.save_pretrained(output_dir)
    eval_results = _as_results(eval_results, None)
    if eval_results is not None:
        (output_dir / EVAL_RESULTS_NAME).write_text(eval_results.to_json())
    if model_card is not None:
        model_card.save(output_dir / CARD_NAME)
    return output_dir


def push_to_hub(
    repo_id: str,
    model: PreTrainedModel,
    processor=None,
    dataset_name: str | None = None,
    eval_results: HBIEvalResults | Mapping[str, float] | None = None,
    model_card: ModelCard | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload HBI checkpoint",
) -> CommitInfo:
    """
    Upload `model`, `processor`, the measured results and the model card to `repo_id` in one commit (the repository
    is created if needed).

    The card is `model_card` if given, else rendered by [`render_model_card`] from `model.config`, `dataset_name`
    and the measured `eval_results` (a dict of metrics measured on `dataset_name`, or [`HBIEvalResults`]; without
    results the card says "not yet measured").

    Returns:
        [`huggingface_hub.CommitInfo`] of the commit that was made.

    Raises:
        [`HBIHubUnreachableError`]: offline mode, or the endpoint cannot be reached.
    """
    eval_results = _as_results(eval_results, dataset_name)
    if model_card is None:
        if dataset_name is None:
            raise ValueError(
                "push_to_hub needs dataset_name (e.g. 'msrvtt') to render the model card, or a model_card"
            )
        model_card = render_model_card(model.config, dataset_name, eval_results, repo_id=repo_id)
    api = HfApi(token=token)
    with _reaching_the_hub(repo_id), tempfile.TemporaryDirectory() as folder:
        api.create_repo(repo_id, private=private, exist_ok=True)
        save_for_hub(folder, model, processor, model_card, eval_results)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    logger.info("pushed %s to %s (%s)", type(model).__name__, repo_id, commit.oid)
    return commit


def card_for_folder(folder: str | Path, dataset_name: str | None = None, repo_id: str | None = None) -> ModelCard:
    """
    Render the card of a saved checkpoint folder from its `config.json` and, if present, `eval_results.json`.

    Args:
        folder: the checkpoint folder.
        dataset_name (`str`, *optional*): the release the card describes; defaults to the dataset the folder's
            `eval_results.json` was measured on.

    Raises:
        `FileNotFoundError`: no `config.json`. `ValueError`: no dataset name given or recorded, an invalid results
            file, or results measured on another dataset than `dataset_name` (the message names the file).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: not a saved checkpoint folder")
    config = AutoConfig.from_pretrained(folder)
    results_path = folder / EVAL_RESULTS_NAME
    eval_results = load_eval_results(results_path) if results_path.is_file() else None
    if eval_results is None:
        logger.warning("%s has no %s: the card will say the results are not yet measured", folder, EVAL_RESULTS_NAME)
    recorded = eval_results.dataset_name if eval_results is not None else None
    dataset_name = dataset_name or recorded
    if dataset_name is None:
        raise ValueError(f"{folder}: give the dataset the card describes (dataset_name); {results_path} names none")
    if recorded is not None and recorded != dataset_name:
        raise ValueError(
            f"{results_path} was measured on {recorded!r}, but the card was asked for {dataset_name!r}: leave out "
            "dataset_name, or evaluate the checkpoint on that dataset"
        )
    return render_model_card(config, dataset_name, eval_results, repo_id=repo_id)


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    dataset_name: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload HBI checkpoint",
) -> CommitInfo:
    """
    Upload a trained output folder and its freshly rendered card ([`card_for_folder`]) in one commit, leaving out
    Trainer checkpoints, logs and pickled files ([`FOLDER_IGNORE_PATTERNS`]). The folder is not modified: a
    `README.md` in it is replaced on the Hub by the rendered card.

    Raises:
        [`HBIHubUnreachableError`]: offline mode, or the endpoint cannot be reached.
    """
    folder = Path(folder)
    card = card_for_folder(folder, dataset_name, repo_id)
    files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    uploads = filter_repo_objects(files, ignore_patterns=[*FOLDER_IGNORE_PATTERNS, CARD_NAME])
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in uploads]
    operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=str(card).encode()))
    api = HfApi(token=token)
    with _reaching_the_hub(repo_id):
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message)
    logger.info("pushed %s to %s (%s)", folder, repo_id, commit.oid)
    return commit


__all__ = [
    "CARD_NAME",
    "EVAL_RESULTS_NAME",
    "FOLDER_IGNORE_PATTERNS",
    "HBIHubUnreachableError",
    "card_for_folder",
    "push_folder_to_hub",
    "push_to_hub",
    "save_for_hub",
]
