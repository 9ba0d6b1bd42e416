"""What a score, a Banzhaf teacher label and an explanation depend on: the caption and the video, never how far they
were padded (jpthu17/HBI#7: padded text tokens entered the Banzhaf value), nor the batch they were encoded in, the
order of the gallery, the scoring chunk or the numbers of texts and videos (T-MASS leakage reports)."""

import pytest
import torch
from conftest import TINY_TEXT, TINY_TEXT_CLIP_VOCABULARY, tiny_batch, tiny_hbi_config

from hbi_hf import HBIForRetrieval, HBIModel, HBIProcessor, HBIVideoProcessor
from hbi_hf.banzhaf import sampled_banzhaf_interaction
from hbi_hf.data import build_clip_tokenizer
from hbi_hf.explain import explain_features

VARIANTS = {
    "HBI-V2": {},
    "HBI": dict(representation_reconstruction=False),
    "ratio-mode": dict(cluster_mode="ratio"),
}
ALL_LEVELS = dict(similarity_level_weights=[1.0, 0.5, 0.25])
TEACHERS = ("exact", "monte_carlo", "estimator")


def further_padded(batch: dict[str, torch.Tensor], words: int, frames: int) -> dict[str, torch.Tensor]:
    """`batch` with `words` more padded words (id 0) and `frames` more padded frames of random pixels."""
    generator = torch.Generator().manual_seed(1)
    rows, pixel_shape = batch["input_ids"].shape[0], batch["pixel_values"].shape[2:]
    no_words, no_frames = torch.zeros(rows, words, dtype=torch.long), torch.zeros(rows, frames, dtype=torch.long)
    return dict(
        input_ids=torch.cat([batch["input_ids"], no_words], 1),
        attention_mask=torch.cat([batch["attention_mask"], no_words], 1),
        pixel_values=torch.cat(
            [batch["pixel_values"], torch.randn(rows, frames, *pixel_shape, generator=generator)], 1
        ),
        video_mask=torch.cat([batch["video_mask"], no_frames], 1),
    )


def seeded_retrieval_model(**overrides) -> HBIForRetrieval:
    torch.manual_seed(0)
    model = HBIForRetrieval(tiny_hbi_config(**{**ALL_LEVELS, **overrides})).eval()
    model.alignment.banzhaf_teacher.config.is_trained = True  # a fixed (random) estimator is a teacher like another
    return model


def features(model, batch):
    return (
        model.get_text_features(batch["input_ids"], batch["attention_mask"]),
        model.get_video_features(batch["pixel_values"], batch["video_mask"]),
    )


def valid_cells(labels: torch.Tensor, text_mask: torch.Tensor, video_mask: torch.Tensor) -> list[torch.Tensor]:
    return [labels[row][text_mask[row]][:, video_mask[row]] for row in range(len(labels))]


def teacher_labels(model: HBIForRetrieval, text, video, teacher: str) -> list[list[torch.Tensor]]:
    """Every level's teacher labels of the matched pairs, on the valid cells of each pair."""
    model.config.banzhaf_teacher = teacher
    labels = []
    for level in range(3):
        torch.manual_seed(5)  # the Monte-Carlo teacher draws from the global generator
        similarity = model.hbi.matched_token_similarity(text, video, level)
        interaction = model.alignment.teacher_interaction(similarity, text, video, level)
        labels.append(valid_cells(interaction, text.level_masks[level], video.level_masks[level]))
    return labels


# ----- padding -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_scores_at_every_level_do_not_change_when_only_the_padding_does(variant):
    model = seeded_retrieval_model(**VARIANTS[variant])
    batch = tiny_batch()
    with torch.no_grad():
        short = model.hbi.similarity_per_level(*features(model, batch))
        long = model.hbi.similarity_per_level(*features(model, further_padded(batch, words=4, frames=3)))
    for level in range(3):
        torch.testing.assert_close(long[level], short[level], rtol=1e-5, atol=1e-6)  # ratio mode: 0.17 before


@pytest.mark.parametrize("teacher", TEACHERS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_teacher_labels_at_every_level_do_not_change_when_only_the_padding_does(variant, teacher):
    model = seeded_retrieval_model(**VARIANTS[variant])
    batch = tiny_batch()
    with torch.no_grad():
        short = teacher_labels(model, *features(model, batch), teacher)
        long = teacher_labels(model, *features(model, further_padded(batch, words=4, frames=3)), teacher)
    for level in range(3):
        for padded, unpadded in zip(long[level], short[level], strict=True):
            torch.testing.assert_close(padded, unpadded, rtol=1e-5, atol=1e-4)  # Monte-Carlo: 2.96 apart before


def test_monte_carlo_coalitions_of_a_fixed_generator_ignore_where_and_how_much_padding_there_is():
    generator = torch.Generator().manual_seed(0)
    similarity = torch.randn(2, 5, 4, generator=generator)
    text_logits, video_logits = torch.randn(2, 5, generator=generator), torch.randn(2, 4, generator=generator)
    text_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    video_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)

    def estimate(similarity, text_logits, video_logits, text_mask, video_mask):
        game = dict(text_weight_logits=text_logits, video_weight_logits=video_logits)
        game.update(text_mask=text_mask, video_mask=video_mask, generator=torch.Generator().manual_seed(3))
        values = sampled_banzhaf_interaction(similarity, 64, **game)
        return valid_cells(values, text_mask, video_mask)

    reference = estimate(similarity, text_logits, video_logits, text_mask, video_mask)
    # two more padded words in the middle of each caption and three padded frames at the end of each video
    words, frames = [0, 1, 5, 6, 2, 3, 4], [0, 1, 2, 3, 4, 4, 4]
    similarity = torch.nn.functional.pad(similarity, (0, 1, 0, 2), value=9.0)[:, words][:, :, frames]
    text_mask = torch.nn.functional.pad(text_mask, (0, 2))[:, words]
    video_mask = torch.nn.functional.pad(video_mask, (0, 1))[:, frames]
    video_mask[:, 5:] = False
    text_logits = torch.nn.functional.pad(text_logits, (0, 2), value=4.0)[:, words]
    video_logits = torch.nn.functional.pad(video_logits, (0, 1), value=4.0)[:, frames]
    for padded, unpadded in zip(estimate(similarity, text_logits, video_logits, text_mask, video_mask), reference):
        torch.testing.assert_close(padded, unpadded)


@pytest.mark.parametrize("source", ["exact", "monte_carlo", "estimator"])
def test_explanations_do_not_change_when_only_the_padding_does(source):
    model = seeded_retrieval_model()
    estimator = model.alignment.banzhaf_teacher if source == "estimator" else None
    num_samples = 50 if source == "monte_carlo" else None
    batch = {name: tensor[1:2] for name, tensor in tiny_batch().items()}  # a short caption, a video with padding
    with torch.no_grad():
        short = explain_features(model.hbi, *features(model, batch), estimator, num_samples, seed=3)
        long = explain_features(
            model.hbi, *features(model, further_padded(batch, 4, 3)), estimator, num_samples, seed=3
        )
    for padded, unpadded in zip(long, short, strict=True):
        assert (padded.text_groups, padded.video_groups) == (unpadded.text_groups, unpadded.video_groups)
        # in the units of the game (cosines x banzhaf_game_scale = 1000): float rounding of the cosines, times 1000
        padded, unpadded = torch.from_numpy(padded.interaction), torch.from_numpy(unpadded.interaction)
        torch.testing.assert_close(padded, unpadded, rtol=1e-4, atol=1e-4)


def test_the_processors_max_words_changes_no_score():
    """Captions tokenised to 10 or to 14 positions (the text tower has 16) score the same against the same videos."""
    torch.manual_seed(0)
    model = HBIModel(tiny_hbi_config(text_config=dict(TINY_TEXT_CLIP_VOCABULARY), **ALL_LEVELS)).eval()
    captions = ["a red circle moves left", "a small blue square", "two shapes"]
    video = tiny_batch(batch_size=3)
    scores = []
    for max_words in (10, 14):
        processor = HBIProcessor(HBIVideoProcessor(num_frames=6), build_clip_tokenizer(), max_words=max_words)
        text = processor(text=captions, return_tensors="pt")
        assert text["input_ids"].shape == (3, max_words)
        with torch.no_grad():
            scores.append(
                model.score(
                    model.get_text_features(text["input_ids"], text["attention_mask"]),
                    model.get_video_features(video["pixel_values"], video["video_mask"]),
                )
            )
    torch.testing.assert_close(scores[1], scores[0], rtol=1e-5, atol=1e-6)


# ----- batch size, order, counts, chunks ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gallery():
    """A model and the features of 7 captions and 5 videos of several lengths, each encoded alone."""
    torch.manual_seed(0)
    model = HBIModel(tiny_hbi_config(text_config=dict(TINY_TEXT), **ALL_LEVELS)).eval()
    texts, videos = tiny_batch(batch_size=7, seed=1), tiny_batch(batch_size=5, seed=2)
    with torch.no_grad():
        text = [
            model.get_text_features(texts["input_ids"][i : i + 1], texts["attention_mask"][i : i + 1])
            for i in range(7)
        ]
        video = [
            model.get_video_features(videos["pixel_values"][i : i + 1], videos["video_mask"][i : i + 1])
            for i in range(5)
        ]
    return model, texts, videos, type(text[0]).concatenate(text), type(video[0]).concatenate(video)


@pytest.mark.parametrize("batch_size", [2, 3, 7])
def test_features_do_not_depend_on_the_batch_they_were_encoded_in(gallery, batch_size):
    model, texts, videos, text_alone, video_alone = gallery
    with torch.no_grad():
        text = type(text_alone).concatenate(
            [
                model.get_text_features(
                    texts["input_ids"][i : i + batch_size], texts["attention_mask"][i : i + batch_size]
                )
                for i in range(0, 7, batch_size)
            ]
        )
        video = type(video_alone).concatenate(
            [
                model.get_video_features(
                    videos["pixel_values"][i : i + batch_size], videos["video_mask"][i : i + batch_size]
                )
                for i in range(0, 5, batch_size)
            ]
        )
        torch.testing.assert_close(
            model.score(text, video), model.score(text_alone, video_alone), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 3, 64])
def test_scores_do_not_depend_on_the_chunk_the_order_or_the_rest_of_the_gallery(gallery, chunk_size):
    model, _, _, text, video = gallery
    with torch.no_grad():
        reference = model.score(text, video, chunk_size=None)
        assert reference.shape == (7, 5)
        torch.testing.assert_close(model.score(text, video, chunk_size=chunk_size), reference, rtol=1e-5, atol=1e-6)
        text_order, video_order = torch.tensor([6, 2, 0, 5, 1, 3, 4]), torch.tensor([3, 0, 4, 1, 2])
        permuted = model.score(text[text_order], video[video_order], chunk_size=chunk_size)
        torch.testing.assert_close(permuted, reference[text_order][:, video_order], rtol=1e-5, atol=1e-6)
        for texts, videos in (([4], [0, 1, 2, 3, 4]), ([0, 1, 2, 3, 4, 5, 6], [2]), ([5, 1], [4, 0, 3])):
            part = model.score(text[torch.tensor(texts)], video[torch.tensor(videos)], chunk_size=chunk_size)
            torch.testing.assert_close(part, reference[texts][:, videos], rtol=1e-5, atol=1e-6)


def test_evaluation_figures_do_not_depend_on_batch_size_chunk_or_row_order(tiny_synthetic_root):
    """12 captions of 6 videos (T != V): the same figures whatever the encoding batch, the scoring chunk and the
    order of the rows."""
    from hbi_hf.data.synthetic import load_synthetic_retrieval
    from hbi_hf.retrieval_data import build_retrieval_processor
    from hbi_hf.retrieval_evaluation import evaluate_retrieval

    torch.manual_seed(0)
    model = HBIForRetrieval(tiny_hbi_config(text_config=dict(TINY_TEXT_CLIP_VOCABULARY), **ALL_LEVELS)).eval()
    processor = build_retrieval_processor(model.config)
    rows = load_synthetic_retrieval(tiny_synthetic_root)["train"]
    assert (len(rows), len(set(rows["video_id"]))) == (12, 6)
    reference = evaluate_retrieval(model, rows, processor, batch_size=12, chunk_size=64)
    shuffled = rows.select(torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist())
    for dataset, batch_size, chunk_size in ((rows, 1, 1), (rows, 5, 3), (shuffled, 4, 2), (shuffled, 12, 64)):
        assert evaluate_retrieval(model, dataset, processor, batch_size, chunk_size) == pytest.approx(reference)
