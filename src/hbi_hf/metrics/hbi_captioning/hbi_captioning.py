"""Video captioning metrics of hbi-hf as an `evaluate` module: BLEU-4, METEOR, ROUGE-L and CIDEr from the COCO caption
evaluation toolkit (`pycocoevalcap`), after its PTB tokenizer (the computation is `hbi_hf.caption_metrics`).

Offline: the PTB tokenizer (Stanford CoreNLP 3.4.1) and METEOR 1.5 are Java programs whose jars, and METEOR's
paraphrase table, ship inside the `pycocoevalcap` wheel: they need a `java` executable and no network. BLEU, ROUGE-L
and CIDEr are Python. SPICE is not computed: it downloads Stanford CoreNLP 3.6.0 from nlp.stanford.edu on first use.
"""

import datasets
import evaluate

from hbi_hf.caption_metrics import caption_metrics

_DESCRIPTION = """Corpus-level BLEU-4, METEOR, ROUGE-L and CIDEr-D of generated captions against reference captions,
computed by the COCO caption evaluation code on PTB-tokenised, lower-cased text without punctuation. Each example is
one video: its prediction is the generated caption, its references every reference caption of that video. CIDEr's
document frequencies come from the references of all videos of the call, so it needs several videos."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): one generated caption per video.
    references (`list[list[str]]`): the reference captions of each video (at least one per video).
Returns:
    `dict`: `bleu_4`, `meteor`, `rouge_l`, `cider` (fractions, e.g. 0.481; papers report x100) and `num_videos`.
Raises:
    `hbi_hf.caption_metrics.JavaNotFoundError`: no `java` on the PATH (the tokenizer and METEOR need it).
    `ValueError`: a video without reference captions.
Example:
    >>> from hbi_hf import metrics
    >>> metrics.load("captioning").compute(predictions=["a cat runs"], references=[["a cat runs", "a cat is running"]])
"""

_CITATION = """@article{chen2015microsoft,
  title   = {Microsoft COCO Captions: Data Collection and Evaluation Server},
  author  = {Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  journal = {arXiv preprint arXiv:1504.00325},
  year    = {2015}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HbiCaptioning(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        keys = [str(index) for index in range(len(predictions))]
        return caption_metrics(
            dict(zip(keys, predictions, strict=True)),
            {key: list(captions) for key, captions in zip(keys, references, strict=True)},
        )
