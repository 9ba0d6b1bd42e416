"""The explain figure reads at every level: each level's own colour scale, values in the cells, the match score and each
level's share of it, a bounded width for any caption, characters no font has drawn without warnings, and the same
data as JSON."""

# ruff: noqa: F811  (the fixtures imported from test_cli are redefined as test arguments)
import json
import warnings

import numpy as np
import pytest
import torch
from matplotlib import colors as mcolors
from PIL import Image
from test_cli import contract_processor, model_dir, video_dir  # noqa: F401  (fixtures)

from hbi_hf import explain as explain_module
from hbi_hf.explain import (
    REPLACEMENT_CHARACTER,
    HBIExplanation,
    HBILevelExplanation,
    draw_explanation,
    drawable_text,
    explanation_displays,
    explanation_to_dict,
    level_colour_scale,
    plot_explanation,
)


def make_explanation(
    words: list[str],
    frames: int = 4,
    entity=None,
    coarse=None,
    caption: str | None = None,
    similarities=(0.5, 0.25, 0.125),
    weights=(1.0, 0.0, 0.0),
    tokens_not_read: int = 0,
) -> HBIExplanation:
    """An explanation of `words` (one piece each, between start and end tokens) and `frames` frames; the entity
    values default to `rows x frames` values of both signs, the action / event levels to two groups each."""
    rng = np.random.default_rng(0)
    count = len(words)
    entity = rng.normal(size=(count + 2, frames)) if entity is None else entity
    coarse = rng.normal(size=(2, 2)) if coarse is None else coarse
    half = max(1, count // 2)
    coarse_level = HBILevelExplanation(
        np.asarray(coarse, dtype=float),
        [list(range(1, half + 1)), list(range(half + 1, count + 2))],
        [list(range(frames // 2)), list(range(frames // 2, frames))],
        "exact",
    )
    return HBIExplanation(
        caption=" ".join(words) if caption is None else caption,
        video="clips/video.mp4",
        tokens=["<|startoftext|>", *[f"{w}</w>" for w in words], "<|endoftext|>"],
        words=list(words),
        word_tokens=[[i + 1] for i in range(count)],
        frames=np.zeros((frames, 4, 4, 3)),
        frame_times=[0.5 * i for i in range(frames)],
        levels=[
            HBILevelExplanation(
                np.asarray(entity, dtype=float), [[i] for i in range(count + 2)], [[i] for i in range(frames)], "exact"
            ),
            coarse_level,
            coarse_level,
        ],
        source="the exact interactions",
        units="u",
        level_similarities=list(similarities),
        level_weights=list(weights),
        tokens_not_read=tokens_not_read,
    )


def heatmaps(figure):
    """The level heatmaps of a drawn figure (the frame strip's images excluded), entity level first."""
    axes = [
        axis
        for axis in figure.axes
        if axis.images and axis.get_title().split(" level")[0] in ("entity", "action", "event")
    ]
    return axes


@pytest.mark.parametrize(
    "values, colour_map",
    [
        (np.array([[0.2, 0.4], [0.3, 0.9]]), "Reds"),
        (np.array([[-0.2, -0.4], [-0.3, -0.9]]), "Blues_r"),
        (np.array([[-0.2, 0.4], [0.3, 1.6]]), "RdBu_r"),
    ],
)
def test_each_level_scale_spans_its_own_values(values, colour_map):
    """Values that all share a sign run from one end of a sequential map to the other (the smallest value is not drawn
    like the largest); values of both signs keep 0 at white with each side stretched to its own extreme."""
    name, norm = level_colour_scale(values)
    assert name == colour_map
    assert norm(values.min()) == pytest.approx(0.0) and norm(values.max()) == pytest.approx(1.0)
    if colour_map == "RdBu_r":
        assert norm(0.0) == pytest.approx(0.5)


def test_a_level_whose_values_share_a_sign_is_not_one_block_of_colour():
    """The action / event levels of real games are often all positive: their cells must still differ visibly."""
    explanation = make_explanation(["a", "dog", "runs"], coarse=[[41.0, 43.0], [40.0, 44.5]])
    figure = draw_explanation(explanation)
    action = heatmaps(figure)[1]
    image = action.images[0]
    colours = image.cmap(image.norm(image.get_array()))
    spread = np.ptp(colours[..., :3].reshape(-1, 3), axis=0).max()
    assert spread > 0.5


def test_values_are_printed_in_small_heatmaps_and_not_in_large_ones():
    explanation = make_explanation(["a", "dog", "runs"])
    entity = heatmaps(draw_explanation(explanation))[0]
    drawn = sorted(text.get_text() for text in entity.texts)
    expected = sorted(explain_module.format_value(v) for v in explanation_displays(explanation)[0].values.flat)
    assert drawn == expected

    many = make_explanation([f"w{i}" for i in range(30)], frames=12)
    assert len(heatmaps(draw_explanation(many))[0].texts) == 0


def test_the_title_gives_the_match_score_and_each_level_share():
    explanation = make_explanation(["a", "dog"], similarities=(0.4, 0.2, 0.1), weights=(0.5, 0.25, 0.25))
    assert explanation.score == pytest.approx(0.4 * 0.5 + 0.2 * 0.25 + 0.1 * 0.25)
    shares = explanation.level_shares()
    assert sum(shares) == pytest.approx(1.0) and shares[0] == pytest.approx(0.2 / 0.275)
    figure = draw_explanation(explanation)
    title = " ".join(figure.get_suptitle().split())
    assert "match score 0.275 = entity 0.4 x 0.5 (73 %) + action 0.2 x 0.25 (18 %) + event 0.1 x 0.25 (9 %)" in title
    assert "73 % of the match score" in heatmaps(figure)[0].get_title()


@pytest.mark.parametrize(
    "caption",
    [" ".join(f"word{i}" for i in range(5000)), "x" * 5000],
    ids=["5000 words", "one 5000-character word"],
)
def test_a_long_caption_keeps_the_figure_narrow_and_says_what_was_cut(caption, tmp_path):
    """A 5,000-word caption wrote a PNG 233,550 px wide: the title now wraps at most MAX_TITLE_LINES lines."""
    explanation = make_explanation(["a", "dog", "runs"], caption=caption, tokens_not_read=4990)
    out = plot_explanation(explanation, tmp_path / "long.png")
    short = plot_explanation(make_explanation(["a", "dog", "runs"], caption="a dog runs"), tmp_path / "short.png")
    width, height = Image.open(out).size
    assert width == Image.open(short).size[0] and height < 1.2 * Image.open(short).size[1]
    title = draw_explanation(explanation).get_suptitle()
    assert "more words not shown" in title if " " in caption else "…" in title
    assert "4990 more are not read" in title


def test_characters_no_font_has_are_replaced_without_a_warning(tmp_path):
    """An emoji (matplotlib draws no colour-emoji font) is drawn as the replacement character, the title says so, and
    matplotlib raises no missing-glyph warning; letters of scripts the fonts have (Greek, Cyrillic) are kept."""
    words = ["a", "dog", "🐕", "Ωμέγα", "собака"]
    explanation = make_explanation(words, caption="a dog 🐕 Ωμέγα собака")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_explanation(explanation, tmp_path / "emoji.png")
        plot_explanation(explanation, tmp_path / "emoji.svg")
    assert drawable_text("Ωμέγα собака") == "Ωμέγα собака"
    # matplotlib's own "Last Resort" font draws a box for every character: it is no fallback
    assert not any(name.startswith("Last Resort") for name, _ in explain_module._font_coverage())
    emoji_drawable = drawable_text("🐕") == "🐕"
    title = draw_explanation(explanation).get_suptitle()
    labels = [label.get_text() for label in heatmaps(draw_explanation(explanation))[0].get_yticklabels()]
    if not emoji_drawable:
        assert drawable_text("🐕") == REPLACEMENT_CHARACTER
        assert REPLACEMENT_CHARACTER in labels and "a character no installed font can draw" in title


def test_the_json_holds_what_the_figure_draws():
    explanation = make_explanation(["a", "dog", "runs"], coarse=[[1.0, 2.0], [3.0, 5.0]])
    data = json.loads(json.dumps(explanation_to_dict(explanation)))
    displays = explanation_displays(explanation)
    assert [level["name"] for level in data["levels"]] == ["entity", "action", "event"]
    for level, display in zip(data["levels"], displays):
        np.testing.assert_allclose(level["values"], display.values)
        assert level["row_labels"] == display.row_labels and level["column_labels"] == display.column_labels
        name, norm = level_colour_scale(display.values)
        colours = [
            [mcolors.to_hex(c) for c in row] for row in __import__("matplotlib").colormaps[name](norm(display.values))
        ]
        assert level["colours"] == colours
    assert data["levels"][1]["colour_map"] == "Reds" and data["levels"][1]["vmin"] == 1.0
    assert data["score"] == pytest.approx(0.5) and data["levels"][0]["share"] == pytest.approx(1.0)
    assert data["words"] == ["a", "dog", "runs"] and data["frame_times"] == [0.0, 0.5, 1.0, 1.5]


def test_explain_video_gives_the_score_search_ranks_by(video_dir, model_dir, contract_processor):
    """The figure's match score is the search score of the pair (`HBIModel.score`), split by level."""
    from hbi_hf.search_index import encode_text, encode_video_batch, load_hbi_model

    explanation = explain_module.explain_video(video_dir / "red.mp4", "a red square", model_dir)
    model, _ = load_hbi_model(model_dir)
    inputs = contract_processor(videos=[str(video_dir / "red.mp4")])
    video_features = encode_video_batch(model, inputs["pixel_values"], inputs["video_mask"])
    text_features, _ = encode_text(model, contract_processor, "a red square")
    with torch.no_grad():
        expected = model.score(text_features, video_features)[0, 0]
        per_level = model.similarity_per_level(text_features, video_features)
    assert explanation.score == pytest.approx(float(expected), abs=1e-5)
    assert explanation.level_similarities == pytest.approx([float(s[0, 0]) for s in per_level], abs=1e-5)
    assert explanation.level_weights == list(model.config.similarity_level_weights)
