"""Captioning metrics: BLEU-4, METEOR, ROUGE-L and CIDEr(-D) from the COCO caption evaluation code (`pycocoevalcap`).

The package's PTB tokenizer (Stanford CoreNLP) and METEOR are Java programs run as subprocesses, so a `java`
executable must be on the PATH; [`require_java`] says so clearly before any work starts. SPICE is not computed (it
downloads extra models at run time).
"""

import shutil
import subprocess

from transformers.utils import logging

logger = logging.get_logger(__name__)


class JavaNotFoundError(RuntimeError):
    """Raised when the `java` executable that the COCO caption tokenizer and METEOR need is missing."""


def require_java() -> str:
    """Return the path of `java`, or raise [`JavaNotFoundError`] explaining how to install it."""
    java = shutil.which("java")
    if java is None:
        raise JavaNotFoundError(
            "Caption metrics need Java: pycocoevalcap's PTB tokenizer and METEOR run `java`, which is not on the PATH. "
            "Install a Java runtime (e.g. `apt-get install -y openjdk-17-jre-headless`) and retry."
        )
    probe = subprocess.run([java, "-version"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise JavaNotFoundError(f"`{java} -version` failed (exit {probe.returncode}): {probe.stderr.strip()}")
    return java


def caption_metrics(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    r"""
    Corpus-level captioning metrics of the COCO caption evaluation code.

    Args:
        predictions (`dict[str, str]`): one generated caption per video id.
        references (`dict[str, list[str]]`): the reference captions of every video id; same ids as `predictions`.

    Returns:
        `dict` with `bleu_4`, `meteor`, `rouge_l` and `cider` (fractions, e.g. 0.481; papers report x100), and
        `num_videos`.

    CIDEr weighs n-grams by their inverse document frequency over the videos' references, so it needs several
    videos: on a single video every n-gram has IDF log(1/1) = 0 and CIDEr is 0 whatever the caption. Fewer than 2
    videos log a warning.

    Raises:
        `ValueError`: no videos, different video ids in the two dicts, or a video without references.
        [`JavaNotFoundError`]: no `java` on the PATH.
    """
    if set(predictions) != set(references):
        missing, extra = set(references) - set(predictions), set(predictions) - set(references)
        raise ValueError(
            f"predictions and references must cover the same video ids; missing predictions for {sorted(missing)[:5]}"
            f", predictions without references for {sorted(extra)[:5]}"
        )
    empty = [video_id for video_id, captions in references.items() if not captions]
    if empty:
        raise ValueError(f"every video needs at least one reference caption; none for {sorted(empty)[:5]}")
    if not predictions:
        raise ValueError("caption_metrics needs at least one video; got none")
    if len(predictions) < 2:
        logger.warning(
            "caption_metrics got a single video: CIDEr's IDF needs several videos (on one, every n-gram has IDF 0 "
            "and CIDEr is 0 whatever the caption); evaluate on the whole test set"
        )
    require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({key: [{"caption": c} for c in captions] for key, captions in references.items()})
    res = tokenizer.tokenize({key: [{"caption": caption}] for key, caption in predictions.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor, _ = Meteor().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {
        "bleu_4": float(bleu[3]),
        "meteor": float(meteor),
        "rouge_l": float(rouge),
        "cider": float(cider),
        "num_videos": len(predictions),
    }


__all__ = ["JavaNotFoundError", "caption_metrics", "require_java"]
