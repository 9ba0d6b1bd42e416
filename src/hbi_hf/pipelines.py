"""transformers `pipeline()` tasks for HBI models, registered with `PIPELINE_REGISTRY` when `hbi_hf` is imported:

* `"zero-shot-video-classification"`: a video and candidate labels -> each label's probability;
* `"video-text-retrieval"`: texts and videos -> for each text, the videos ranked by their HBI score.

```python
import hbi_hf  # registers the tasks
from transformers import pipeline

classifier = pipeline("zero-shot-video-classification", model="MODEL")  # a saved HBI model with its processor
classifier("clip.mp4", candidate_labels=["a dog runs", "a car drives"])
# [{"label": ..., "score": ...}, {"label": ..., "score": ...}]: best first, the scores sum to 1
retriever = pipeline("video-text-retrieval", model="MODEL")
retriever(["a dog runs"], videos=["a.mp4", "b.mp4"], top_k=1)
# [[{"video": ..., "index": ..., "score": ..., "rank": 1}]]: one ranking per text
```

Both load the model with `AutoModel` (an [`HBIModel`]; a saved [`HBIForRetrieval`] gives its encoder) and the
processor saved beside it with `AutoProcessor` ([`HBIProcessor`]: CLIP tokenizer + [`HBIVideoProcessor`]).
"""

import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .errors import HBIInputError
from .modeling_hbi import HBIVideoFeatures

VIDEO_BATCH_SIZE = 8
"""Videos decoded and encoded together by the pipelines (memory grows with it)."""


def _as_list(value, name: str) -> list:
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise HBIInputError(f"{name}: give at least one")
    return items


class _HBIPipeline(Pipeline):
    """What both tasks share: the processor saved with the model, videos encoded by batches."""

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def _encode_videos(self, videos: list) -> HBIVideoFeatures:
        """`HBIVideoFeatures` of `videos` (paths or decoded frames), `VIDEO_BATCH_SIZE` at a time."""
        parts = []
        for start in range(0, len(videos), VIDEO_BATCH_SIZE):
            inputs = self.processor(videos=videos[start : start + VIDEO_BATCH_SIZE], return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self.device, self.model.dtype)
            video_mask = inputs.get("video_mask")
            video_mask = None if video_mask is None else video_mask.to(self.device)
            parts.append(self.model.get_video_features(pixel_values, video_mask))
        return HBIVideoFeatures.concatenate(parts)

    def _encode_texts(self, texts: list[str]):
        inputs = self.processor(text=texts, return_tensors="pt")
        return self.model.get_text_features(
            inputs["input_ids"].to(self.device), inputs["attention_mask"].to(self.device)
        )


class HBIZeroShotVideoClassificationPipeline(_HBIPipeline):
    r"""
    Zero-shot video classification: the probability of each candidate label for a video, the softmax over the labels
    of the HBI logits (`score / temperature`, [`HBIModel.score`] and `logit_scale`), as CLIP's zero-shot image
    classification does for images.

    Call with a video (a path, or decoded frames `(frames, H, W, 3)`) or a list of them, and
    `candidate_labels` (`list[str]`); `hypothesis_template` (default `"{}"`) turns a label into the text scored,
    e.g. `"a video of {}"`.

    Returns:
        For one video, `list[dict]` of `{"label", "score"}` sorted by decreasing score (the scores sum to 1); for a list
        of videos, one such list per video.

    Raises:
        [`HBIInputError`]: no candidate labels, an empty label, a template without `{}`.
    """

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template=None, **kwargs):
        preprocess = {}
        if candidate_labels is not None:
            preprocess["candidate_labels"] = candidate_labels
        if hypothesis_template is not None:
            preprocess["hypothesis_template"] = hypothesis_template
        return preprocess, {}, {}

    def __call__(self, videos, **kwargs):
        return super().__call__(videos, **kwargs)

    def preprocess(self, video, candidate_labels=None, hypothesis_template="{}"):
        labels = _as_list(candidate_labels or [], "candidate_labels")
        if any(not str(label).strip() for label in labels):
            raise HBIInputError(f"candidate_labels: every label needs words; got {labels}")
        if "{}" not in hypothesis_template:
            raise HBIInputError(
                f"hypothesis_template must contain {{}} (where the label goes); got {hypothesis_template!r}"
            )
        return {"video": video, "labels": labels, "texts": [hypothesis_template.format(label) for label in labels]}

    def _forward(self, model_inputs):
        with torch.no_grad():
            text_features = self._encode_texts(model_inputs["texts"])
            video_features = self._encode_videos([model_inputs["video"]])
            logits = self.model.logit_scale() * self.model.score(text_features, video_features)[:, 0]
        return {"labels": model_inputs["labels"], "logits": logits.float().cpu()}

    def postprocess(self, model_outputs):
        probabilities = model_outputs["logits"].softmax(0).tolist()
        ranked = sorted(zip(model_outputs["labels"], probabilities), key=lambda pair: -pair[1])
        return [{"label": label, "score": score} for label, score in ranked]


class HBIVideoTextRetrievalPipeline(_HBIPipeline):
    r"""
    Text-to-video retrieval: for each text, the videos ranked by their HBI score ([`HBIModel.score`], the fused
    similarity of Eq. 12 at the levels of `similarity_level_weights`; higher is better).

    Call with `texts` (a string or a list) and `videos` (paths or decoded frames); `top_k` (default: every video) keeps
    the best ones.

    Returns:
        `list` (one per text) of `list[dict]` `{"video", "index", "score", "rank"}` sorted by decreasing score, where
        `video` is the video as given when it is a path (else `None`) and `index` its position in `videos`.

    Raises:
        [`HBIInputError`]: no text or no video, an empty text, `top_k < 1`.
    """

    def _sanitize_parameters(self, videos=None, top_k=None, **kwargs):
        preprocess, postprocess = {}, {}
        if videos is not None:
            preprocess["videos"] = videos
        if top_k is not None:
            postprocess["top_k"] = top_k
        return preprocess, {}, postprocess

    def __call__(self, texts, videos=None, top_k=None, **kwargs):
        texts = _as_list(texts, "texts")
        if any(not text.strip() for text in texts):
            raise HBIInputError(f"texts: every text needs words; got {texts}")
        return super().__call__({"texts": texts}, videos=videos, top_k=top_k, **kwargs)

    def preprocess(self, inputs, videos=None):
        return {"texts": inputs["texts"], "videos": _as_list(videos if videos is not None else [], "videos")}

    def _forward(self, model_inputs):
        with torch.no_grad():
            scores = self.model.score(
                self._encode_texts(model_inputs["texts"]), self._encode_videos(model_inputs["videos"])
            )
        return {"videos": model_inputs["videos"], "scores": scores.float().cpu()}

    def postprocess(self, model_outputs, top_k=None):
        if top_k is not None and top_k < 1:
            raise HBIInputError(f"top_k must be >= 1; got {top_k}")
        videos, scores = model_outputs["videos"], model_outputs["scores"]
        keep = min(top_k or len(videos), len(videos))
        results = []
        for row in scores:
            best = row.topk(keep)
            results.append(
                [
                    {
                        "video": videos[i] if isinstance(videos[i], str) else None,
                        "index": i,
                        "score": score,
                        "rank": rank,
                    }
                    for rank, (score, i) in enumerate(zip(best.values.tolist(), best.indices.tolist()), start=1)
                ]
            )
        return results


def register_pipelines() -> None:
    """Register the two tasks with transformers' `PIPELINE_REGISTRY` (model class: `AutoModel`)."""
    PIPELINE_REGISTRY.register_pipeline(
        "zero-shot-video-classification",
        pipeline_class=HBIZeroShotVideoClassificationPipeline,
        pt_model=AutoModel,
        type="multimodal",
    )
    PIPELINE_REGISTRY.register_pipeline(
        "video-text-retrieval", pipeline_class=HBIVideoTextRetrievalPipeline, pt_model=AutoModel, type="multimodal"
    )


__all__ = ["HBIVideoTextRetrievalPipeline", "HBIZeroShotVideoClassificationPipeline", "register_pipelines"]
