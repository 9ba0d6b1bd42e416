"""Open-ended video QA accuracy of hbi-hf as an `evaluate` module: top-1 accuracy over every question, a question
whose answer lies outside the model's answer vocabulary counted as wrong (the computation is
`hbi_hf.task_training.videoqa_accuracy`)."""

import datasets
import evaluate

from hbi_hf.task_training import videoqa_accuracy

_DESCRIPTION = """Top-1 accuracy of answer classification over *all* questions. A question whose reference answer is
outside the answer vocabulary (reference label -1, as `hbi_hf.task_training.add_answer_labels` gives it) can never be
answered: it stays in the denominator and counts as wrong, and the number of such questions is reported, so the figure
is comparable with papers that evaluate on the full test set."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): the predicted answer id of every question.
    references (`list[int]`): the answer id of every question; -1 (any negative id) for an answer outside the
        vocabulary.
Returns:
    `dict`: `accuracy` (a fraction, e.g. 0.435; papers report x100), `num_questions`, `num_out_of_vocabulary`.
Raises:
    `ValueError`: no questions.
Example:
    >>> from hbi_hf import metrics
    >>> metrics.load("videoqa").compute(predictions=[3, 1, 2], references=[3, 0, -1])
    {'accuracy': 0.3333333333333333, 'num_questions': 3, 'num_out_of_vocabulary': 1}
"""

_CITATION = """@inproceedings{xu2017video,
  title     = {Video Question Answering via Gradually Refined Attention over Appearance and Motion},
  author    = {Xu, Dejing and Zhao, Zhou and Xiao, Jun and Wu, Fei and Zhang, Hanwang and He, Xiangnan and Zhuang, Yueting},
  booktitle = {ACM Multimedia},
  year      = {2017}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HbiVideoqa(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        return videoqa_accuracy(list(predictions), list(references))
