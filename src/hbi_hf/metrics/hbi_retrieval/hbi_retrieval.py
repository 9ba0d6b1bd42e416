"""Text-video retrieval metrics of hbi-hf as an `evaluate` module: R@1/5/10, Rsum, median and mean rank of both
directions, several captions per video, pessimistic ties (the computation is `hbi_hf.retrieval_metrics`)."""

import datasets
import evaluate
import torch

from hbi_hf.retrieval_metrics import compute_retrieval_metrics

_DESCRIPTION = """Text-to-video (`t2v_*`) and video-to-text (`v2t_*`) R@1, R@5, R@10 (percent), Rsum, median rank MdR
and mean rank MnR of a text x video score matrix. Each example is one text (caption): its prediction is its row of
scores against every video of the gallery, its reference the index of the video it describes. Several captions may
describe one video; for video-to-text a video's rank is that of its best-placed caption. Ties count pessimistically:
a rank is 1 + the number of wrong candidates scoring at least as high as the best correct one, so a model that scores
everything alike ranks last, never first."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]`, or a `(n_text, n_video)` tensor / array): the score of every text against every
        video; higher means more similar.
    references (`list[int]`): the video (column) each text describes; every video needs at least one text.
    dual_softmax (`bool`, *optional*, defaults to `False`): also report the figures after dual-softmax re-ranking
        under `dsl_t2v_*` / `dsl_v2t_*` (transductive; never mixed into the plain figures).
    dual_softmax_inverse_temperature (`float`, *optional*, defaults to 100.0): lambda of the re-ranking.
Returns:
    `dict[str, float]`: `t2v_R@1`, `t2v_R@5`, `t2v_R@10`, `t2v_Rsum`, `t2v_MdR`, `t2v_MnR` and the same for `v2t_`.
Raises:
    `ValueError`: a NaN or infinite score (naming how many, and their text rows and video columns: such a matrix has
        no ranking and never gives figures), a reference outside the gallery, or a video without any text.
Example:
    >>> from hbi_hf import metrics
    >>> metrics.load("retrieval").compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 1])["t2v_R@1"]
    100.0
"""

_CITATION = """@article{jin2024hierarchical,
  title   = {Hierarchical Banzhaf Interaction for General Video-Language Representation Learning},
  author  = {Jin, Peng and Li, Hao and Yuan, Li and Yan, Shuicheng and Chen, Jie},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence (TPAMI)},
  year    = {2024}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HbiRetrieval(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(
        self,
        predictions,
        references,
        dual_softmax: bool = False,
        dual_softmax_inverse_temperature: float = 100.0,
    ) -> dict[str, float]:
        scores = torch.as_tensor(predictions, dtype=torch.float32)
        if scores.ndim != 2:
            raise ValueError("predictions must hold one row of video scores per text, all of the same length")
        return compute_retrieval_metrics(
            scores,
            torch.as_tensor(references, dtype=torch.long),
            dual_softmax=dual_softmax,
            dual_softmax_inverse_temperature=dual_softmax_inverse_temperature,
        )
