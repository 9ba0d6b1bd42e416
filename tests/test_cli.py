"""The `hbi-hf` command line on a folder of real (tiny) mp4 files: index, incremental update, resume, search, explain.

The model folder holds a tiny random HBIForRetrieval. Most tests inject a stand-in processor following the data
contract (`processor(text=[...])`, `processor(videos=[path], return_metadata=...)`, the tokenizer's
`convert_ids_to_tokens` and `all_special_ids`) where the CLI loads the processor saved with the model; the test marked `real_processor` saves the package's `HBIProcessor`
into the model folder and runs the commands with nothing injected.
"""

import json
import os
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_hbi_config
from transformers.video_utils import load_video

from hbi_hf import HBIBanzhafEstimator, HBIForRetrieval
from hbi_hf import explain as explain_module
from hbi_hf import search_index as search_module
from hbi_hf.cli import main
from hbi_hf.search_index import HBIVideoIndex, build_index, load_hbi_model, rank_videos

NUM_FRAMES, MAX_WORDS, SIZE = 6, 10, 32
COLOURS = {"red.mp4": (230, 30, 30), "green.mp4": (30, 200, 40), "blue.mp4": (20, 40, 220), "sub/grey.mp4": (128,) * 3}


class ContractTokenizer:
    """Word-level ids in [1, 97] with start 98, end 99 and padding 0 (the tiny config's vocabulary)."""

    def __init__(self):
        self.names = {0: "<pad>", 98: "<|startoftext|>", 99: "<|endoftext|>"}
        self.all_special_ids = [0, 98, 99]

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.lower().split():
            token_id = 1 + zlib.crc32(word.encode()) % 97
            self.names[token_id] = f"{word}</w>"
            ids.append(token_id)
        return [98] + ids[: MAX_WORDS - 2] + [99]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.names[i] for i in ids]


class ContractProcessor:
    """Stand-in for `hbi_hf.data.HBIProcessor` with the same call contract, decoding with PyAV."""

    def __init__(self):
        self.tokenizer = ContractTokenizer()

    def __call__(self, text=None, videos=None, return_tensors="pt", return_metadata=False):
        outputs = {}
        if text is not None:
            rows = [self.tokenizer.encode(t) for t in text]
            outputs["input_ids"] = torch.tensor([row + [0] * (MAX_WORDS - len(row)) for row in rows])
            outputs["attention_mask"] = (outputs["input_ids"] != 0).long()
        if videos is not None:
            decoded = [load_video(path, backend="pyav", num_frames=NUM_FRAMES) for path in videos]
            clips = [torch.from_numpy(frames) for frames, _ in decoded]
            pixels = [F.interpolate(c.permute(0, 3, 1, 2).float() / 255, size=(SIZE, SIZE)) for c in clips]
            outputs["pixel_values"] = torch.stack([(p - 0.5) / 0.25 for p in pixels])
            outputs["video_mask"] = torch.ones(len(videos), NUM_FRAMES, dtype=torch.long)
            if return_metadata:
                outputs["video_metadata"] = [metadata for _, metadata in decoded]
        return outputs


def write_video(path: Path, colour: tuple[int, ...], frames: int = 8) -> None:
    """A tiny mpeg4 file: `frames` 32x32 frames of `colour` with a moving bright bar."""
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=8)
    stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
    for i in range(frames):
        image = np.full((SIZE, SIZE, 3), colour, dtype=np.uint8)
        image[:, 4 * i : 4 * i + 4] = 255
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    HBIForRetrieval(tiny_hbi_config(num_frames=NUM_FRAMES, max_words=MAX_WORDS)).save_pretrained(path)
    return path


@pytest.fixture
def video_dir(tmp_path) -> Path:
    root = tmp_path / "videos"
    for name, colour in COLOURS.items():
        write_video(root / name, colour)
    (root / "broken.mp4").write_bytes(b"this is not a video" * 20)
    (root / "notes.txt").write_text("not a video extension: ignored")
    return root


@pytest.fixture(autouse=True)
def contract_processor(request, monkeypatch):
    processor = ContractProcessor()
    if "real_processor" in request.keywords:
        return None
    for module in (search_module, explain_module):
        monkeypatch.setattr(module, "load_processor", lambda path: processor)
    return processor


@pytest.fixture
def encode_counter(monkeypatch):
    """Counts the videos that go through the encoder; `fail_after` makes it raise KeyboardInterrupt."""
    real = search_module.encode_video_batch
    state = {"videos": 0, "fail_after": None}

    def counting(model, pixel_values, video_mask):
        if state["fail_after"] is not None and state["videos"] + len(pixel_values) > state["fail_after"]:
            raise KeyboardInterrupt
        state["videos"] += len(pixel_values)
        return real(model, pixel_values, video_mask)

    monkeypatch.setattr(search_module, "encode_video_batch", counting)
    return state


def run_cli(capsys, *argv: str) -> str:
    assert main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def test_index_encodes_every_video_and_reports_the_corrupt_file(video_dir, model_dir, tmp_path, capsys):
    out = run_cli(capsys, "index", video_dir, "--model", model_dir, "--out", tmp_path / "index", "--no-progress")

    index = HBIVideoIndex.load(tmp_path / "index")
    assert sorted(index.paths()) == sorted(COLOURS)
    assert [f.path for f in index.failed] == ["broken.mp4"]
    assert "failed (undecodable): broken.mp4: InvalidDataError" in out
    assert "4 added" in out and "1 failed (undecodable 1)" in out
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["model"]["path"] == str(model_dir.resolve())
    assert len(manifest["model"]["sha256"]) == 64
    assert {"path", "size", "mtime_ns", "sha256", "shard", "row"} <= set(manifest["videos"][0])


def test_index_stores_the_features_the_model_computes(video_dir, model_dir, tmp_path, contract_processor):
    build_index(video_dir, tmp_path / "index", model_dir, batch_size=3, checkpoint_every=2, show_progress=False)
    index = HBIVideoIndex.load(tmp_path / "index")
    stored = index.features()
    model, _ = load_hbi_model(model_dir)
    position = index.paths().index("sub/grey.mp4")
    inputs = contract_processor(videos=[str(video_dir / "sub/grey.mp4")])
    with torch.no_grad():
        direct = model.get_video_features(inputs["pixel_values"], inputs["video_mask"])
    for level in range(3):
        torch.testing.assert_close(stored.level_tokens[level][position], direct.level_tokens[level][0])
        torch.testing.assert_close(stored.level_weight_logits[level][position], direct.level_weight_logits[level][0])
    torch.testing.assert_close(stored.global_embeddings[position], direct.global_embeddings[0])
    assert torch.equal(stored.cluster_assignments[1][position], direct.cluster_assignments[1][0])


def test_interrupted_index_resumes_without_reencoding_finished_videos(video_dir, model_dir, tmp_path, encode_counter):
    encode_counter["fail_after"] = 2
    with pytest.raises(KeyboardInterrupt):
        build_index(video_dir, tmp_path / "index", model_dir, batch_size=1, checkpoint_every=10, show_progress=False)
    assert len(HBIVideoIndex.load(tmp_path / "index")) == 2

    encode_counter["fail_after"] = None
    report = build_index(video_dir, tmp_path / "index", show_progress=False)

    assert encode_counter["videos"] == 4
    assert report.unchanged == 2 and len(report.added) == 2
    assert sorted(HBIVideoIndex.load(tmp_path / "index").paths()) == sorted(COLOURS)


def test_update_adds_new_reencodes_changed_drops_removed_and_keeps_touched_files(
    video_dir, model_dir, tmp_path, encode_counter
):
    index_dir = tmp_path / "index"
    build_index(video_dir, index_dir, model_dir, batch_size=2, checkpoint_every=2, show_progress=False)
    before = HBIVideoIndex.load(index_dir)
    old_green = before.features()[before.paths().index("green.mp4")].global_embeddings
    encode_counter["videos"] = 0

    (video_dir / "red.mp4").unlink()
    write_video(video_dir / "green.mp4", (250, 250, 0), frames=12)
    write_video(video_dir / "new" / "white.mp4", (255, 255, 255))
    stat = (video_dir / "blue.mp4").stat()
    os.utime(video_dir / "blue.mp4", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    report = build_index(video_dir, index_dir, show_progress=False)

    assert report.removed == ["red.mp4"]
    assert report.updated == ["green.mp4"]
    assert report.added == ["new/white.mp4"]
    assert report.unchanged == 2
    assert encode_counter["videos"] == 2
    after = HBIVideoIndex.load(index_dir)
    assert sorted(after.paths()) == sorted(["green.mp4", "blue.mp4", "sub/grey.mp4", "new/white.mp4"])
    assert not torch.allclose(after.features()[after.paths().index("green.mp4")].global_embeddings, old_green)
    referenced = {entry.shard for entry in after.entries}
    assert {p.name for p in index_dir.glob("shard-*.safetensors")} == referenced


@pytest.fixture
def index_dir(video_dir, model_dir, tmp_path) -> Path:
    build_index(video_dir, tmp_path / "index", model_dir, show_progress=False)
    return tmp_path / "index"


def test_search_prints_a_ranked_table_and_json(index_dir, capsys):
    table = run_cli(capsys, "search", index_dir, "a red square", "--top-k", "3")
    lines = table.strip().splitlines()
    assert lines[0].split() == ["rank", "file", "score"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]

    hits = json.loads(run_cli(capsys, "search", index_dir, "a red square", "--top-k", "10", "--json"))
    assert sorted(hit["path"] for hit in hits) == sorted(COLOURS)
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert [line.split()[1] for line in lines[1:]] == [hit["path"] for hit in hits[:3]]


def test_search_into_a_pipe_closed_early_stops_quietly(video_dir, tmp_path):
    """`hbi-hf search ... | head -1`: the reader leaves before the table is written. The command stops without an
    error line or a traceback (it printed `hbi-hf search: error: [Errno 32] Broken pipe`), with the status a process
    ended by SIGPIPE has in a shell, 141."""
    import subprocess
    import sys

    from hbi_hf import HBIProcessor, HBIVideoProcessor
    from hbi_hf.data import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    config = tiny_hbi_config(num_frames=NUM_FRAMES, max_words=MAX_WORDS)
    config.text_config.update(
        dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    )
    video_processor = HBIVideoProcessor(
        num_frames=NUM_FRAMES, size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    )
    processor = HBIProcessor(video_processor, tokenizer, max_words=MAX_WORDS)
    HBIForRetrieval(config).save_pretrained(tmp_path / "model", processor=processor)
    index_dir = tmp_path / "index"
    build_index(video_dir, index_dir, tmp_path / "model", show_progress=False)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        result = subprocess.run(
            [sys.executable, "-m", "hbi_hf_cli", "search", str(index_dir), "a red square"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=240,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141 and "error" not in result.stderr and "Traceback" not in result.stderr


def test_search_table_aligns_the_score_column_in_a_terminal_whatever_the_file_names_script():
    """A CJK character takes two terminal columns, an accent combined with its letter none: the scores still line up
    at column 28 here (they were shifted left by one column per wide character)."""
    import unicodedata

    from hbi_hf.cli import _hit_table
    from hbi_hf.search_index import HBISearchHit

    cafe = unicodedata.normalize("NFD", "café.mp4")  # 9 characters, 8 columns
    names = ["été à Paris 東京.mp4", "beach.mp4", cafe, "京都/寺.avi"]  # 20, 9, 8 and 11 columns
    table = _hit_table([HBISearchHit(rank, name, 0.5 / rank) for rank, name in enumerate(names, 1)])
    assert table.splitlines() == [
        "rank  file" + " " * 16 + "  score",
        "   1  été à Paris 東京.mp4  0.5000",
        "   2  beach.mp4" + " " * 11 + "  0.2500",
        "   3  " + cafe + " " * 12 + "  0.1667",
        "   4  京都/寺.avi" + " " * 9 + "  0.1250",
    ]


def test_help_describes_every_command_and_the_three_levels_explain_draws(capsys):
    from hbi_hf_cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "explain a match, serve a search page" in text
    assert "word x frame, phrase x clip, paragraph x segment" in text


def test_two_stage_search_with_the_whole_gallery_shortlisted_equals_full_scoring(index_dir, model_dir):
    model, _ = load_hbi_model(model_dir)
    features = HBIVideoIndex.load(index_dir).features()
    text = ContractProcessor()(text=["a blue thing"])
    with torch.no_grad():
        text_features = model.get_text_features(text["input_ids"], text["attention_mask"])
        full_scores, full_order = rank_videos(model, text_features, features, top_k=4, shortlist=0)
        staged_scores, staged_order = rank_videos(model, text_features, features, top_k=4, shortlist=4)
        _, short_order = rank_videos(model, text_features, features, top_k=4, shortlist=2)
    assert torch.equal(full_order, staged_order)
    torch.testing.assert_close(full_scores, staged_scores)
    assert len(short_order) == 2


def test_explain_draws_the_interaction_figure_with_the_model_teacher(video_dir, model_dir, tmp_path, capsys):
    figure = tmp_path / "explain.png"
    out = run_cli(
        capsys, "explain", video_dir / "red.mp4", "a red square moves", "--model", model_dir, "--out", figure
    )
    assert out.strip() == str(figure)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with capsys.disabled():
        print(f"\nexplain figure: {figure}")


def test_explain_levels_cover_every_word_and_frame_once(video_dir, model_dir):
    explanation = explain_module.explain_video(video_dir / "red.mp4", "a red square moves", model_dir)
    assert explanation.tokens == ["<|startoftext|>", "a</w>", "red</w>", "square</w>", "moves</w>", "<|endoftext|>"]
    assert explanation.words == ["a", "red", "square", "moves"]
    assert explanation.frames.shape == (NUM_FRAMES, SIZE, SIZE, 3)
    for level in explanation.levels:
        assert level.interaction.shape == (len(level.text_groups), len(level.video_groups))
        assert sorted(i for group in level.text_groups for i in group) == list(range(len(explanation.tokens)))
        assert sorted(i for group in level.video_groups for i in group) == list(range(NUM_FRAMES))
    assert [len(level.video_groups) for level in explanation.levels] == [NUM_FRAMES, 3, 2]


def drawn_heatmaps(explanation) -> list[tuple[np.ndarray, list[str], list[str], str]]:
    """What the figure shows at each level, read back from its axes: values, row labels, column labels, colour bar
    label."""
    figure = explain_module.draw_explanation(explanation)
    heatmaps = [axis for axis in figure.axes if "level:" in axis.get_title()]
    drawn = []
    for axis in heatmaps:
        image = axis.images[0]
        drawn.append(
            (
                np.asarray(image.get_array()),
                [label.get_text() for label in axis.get_yticklabels()],
                [label.get_text() for label in axis.get_xticklabels()],
                image.colorbar.ax.get_ylabel(),
            )
        )
    return drawn


def model_game(model_dir, video_dir, caption: str):
    """The matched-pair game of every level, computed here without hbi_hf.explain: (similarity, text weight logits,
    video weight logits, text mask, video mask) with padding, and the model's game scale."""
    model, _ = load_hbi_model(model_dir)
    processor = ContractProcessor()
    text = processor(text=[caption])
    video = processor(videos=[str(video_dir / "red.mp4")])
    with torch.no_grad():
        text_features = model.get_text_features(text["input_ids"], text["attention_mask"])
        video_features = model.get_video_features(video["pixel_values"], video["video_mask"])
        games = [
            (
                model.matched_token_similarity(text_features, video_features, level),
                text_features.level_weight_logits[level],
                video_features.level_weight_logits[level],
                text_features.level_masks[level],
                video_features.level_masks[level],
            )
            for level in range(3)
        ]
    return games, model.config.banzhaf_game_scale


def test_explain_draws_the_exact_interaction_of_the_model_game_on_small_games(video_dir, model_dir):
    """4 words + 2 special tokens and 6 frames: 12 players, small enough to check against enumeration. The drawn word
    rows are the exact Banzhaf interactions of the model's own game (padding as dummy players, special-token rows not
    drawn)."""
    from hbi_hf.banzhaf import exact_banzhaf_interaction

    explanation = explain_module.explain_video(video_dir / "red.mp4", "a red square moves", model_dir)
    games, scale = model_game(model_dir, video_dir, "a red square moves")
    drawn = drawn_heatmaps(explanation)
    assert [level.source for level in explanation.levels] == ["exact"] * 3
    for level, ((values, _, _, units), game) in enumerate(zip(drawn, games)):
        similarity, text_logits, video_logits, text_mask, video_mask = game
        exact = exact_banzhaf_interaction(
            similarity.double(), text_logits.double(), video_logits.double(), text_mask, video_mask, logit_scale=scale
        )[0][text_mask[0]][:, video_mask[0]].float()
        word_rows = [k for k, group in enumerate(explanation.levels[level].text_groups) if set(group) & {1, 2, 3, 4}]
        np.testing.assert_allclose(values, exact[word_rows].numpy(), rtol=1e-4, atol=1e-5 * scale)
        assert units == f"Banzhaf interaction\n[cosine similarity x s = {scale:g}]"
    assert drawn[0][1] == ["a", "red", "square", "moves"]


def test_explain_monte_carlo_reference_agrees_with_exact_enumeration(video_dir, model_dir):
    """With teacher="monte_carlo" the drawn values scatter around the exact interactions no more than two independent
    runs scatter around each other."""
    from hbi_hf.banzhaf import exact_banzhaf_interaction

    runs = [
        explain_module.explain_video(
            video_dir / "red.mp4", "a red square moves", model_dir, teacher="monte_carlo", num_samples=40000, seed=s
        )
        for s in (0, 1)
    ]
    assert runs[0].levels[0].source == "Monte-Carlo, 40000 samples"
    assert "Monte-Carlo, 40000 samples" in runs[0].source
    games, scale = model_game(model_dir, video_dir, "a red square moves")
    similarity, text_logits, video_logits, text_mask, video_mask = games[0]
    exact = exact_banzhaf_interaction(similarity, text_logits, video_logits, text_mask, video_mask, logit_scale=scale)
    exact = exact[0][text_mask[0]][:, video_mask[0]][1:5].numpy()
    first, second = (drawn_heatmaps(run)[0][0] for run in runs)
    run_to_run = np.sqrt(np.mean((first - second) ** 2) / 2)  # one run's sampling error
    assert np.sqrt(np.mean((first - exact) ** 2)) <= 3 * run_to_run
    assert 3 * run_to_run < exact.std()  # enough samples that a wrong answer (a random teacher, zeros) fails
    assert np.corrcoef(first.ravel(), exact.ravel())[0, 1] > 0.9


def test_explain_follows_the_teacher_rules_of_training(video_dir, model_dir, tmp_path, capsys):
    """A never-trained estimator is refused with an error naming the fix (given, or the model's own teacher); the
    exact reference is the default; a trained estimator is used when asked for, and the title says so."""
    model, _ = load_hbi_model(model_dir)
    untrained = tmp_path / "untrained"
    HBIBanzhafEstimator(model.config.estimator_config).save_pretrained(untrained)
    figure = tmp_path / "f.png"
    command = ["explain", str(video_dir / "red.mp4"), "red", "--model", str(model_dir), "--out", str(figure)]

    assert main([*command, "--estimator", str(untrained)]) == 1
    error = capsys.readouterr().err
    assert "never trained" in error and "--teacher exact" in error and "--estimator PATH" in error
    assert main([*command, "--teacher", "estimator"]) == 1  # the model's teacher slot was never trained
    assert "never trained" in capsys.readouterr().err
    with pytest.raises(ValueError, match="never trained"):
        explain_module.explain_video(video_dir / "red.mp4", "red", model_dir, estimator_name_or_path=untrained)
    with pytest.raises(SystemExit):
        main([*command, "--teacher", "monte_carlo", "--estimator", str(untrained)])
    assert not figure.exists()

    default = explain_module.explain_video(video_dir / "red.mp4", "red", model_dir)
    assert (
        default.source
        == f"the exact interactions of the model's game at scale s = {model.config.banzhaf_game_scale:g}"
    )

    trained = tmp_path / "trained"
    config = model.config.estimator_config.to_dict() | {"is_trained": True}  # a stand-in for a trained estimator
    estimator = HBIBanzhafEstimator(type(model.config.estimator_config)(**config))
    estimator.save_pretrained(trained)
    explanation = explain_module.explain_video(video_dir / "red.mp4", "red", model_dir, estimator_name_or_path=trained)
    assert explanation.source == f"trained Banzhaf estimator ({trained})"
    games, _ = model_game(model_dir, video_dir, "red")
    similarity, _, _, text_mask, video_mask = games[0]
    valid = similarity[:, text_mask[0]][:, :, video_mask[0]]
    with torch.no_grad():
        expected = estimator.eval().estimate(valid, torch.ones_like(valid, dtype=torch.bool))[0]
    values, rows, _, units = drawn_heatmaps(explanation)[0]
    np.testing.assert_allclose(values, expected[1:2].numpy(), rtol=1e-5, atol=1e-6)
    assert rows == ["red"] and "estimated" in units
    assert run_cli(capsys, *command, "--estimator", trained).strip() == str(figure)


def test_explain_labels_frames_with_their_time_in_the_video(video_dir, model_dir):
    """8 frames at 8 fps, 6 sampled: the columns are labelled with the sampled frames' times in seconds."""
    explanation = explain_module.explain_video(video_dir / "red.mp4", "a red square", model_dir)
    expected_indices = np.arange(0, 8, 8 / NUM_FRAMES).astype(int)  # transformers load_video: uniform indices
    np.testing.assert_allclose(explanation.frame_times, expected_indices / 8)
    entity, action, event = drawn_heatmaps(explanation)
    assert entity[2] == [f"{t:.2f} s" for t in expected_indices / 8]
    for _, _, columns, _ in (action, event):
        assert all(label.endswith(" s") for label in columns)


def test_explain_figure_scales_with_caption_and_video_length():
    """A 40-word caption and a 64-frame video: every word and every frame gets its own row / column, the figure grows
    with them, and past MAX_TICK_LABELS an axis labels every k-th token only."""

    def explanation(words: int, frames: int):
        tokens = ["<|startoftext|>", *[f"w{i}</w>" for i in range(words)], "<|endoftext|>"]
        rng = np.random.default_rng(0)
        level = explain_module.HBILevelExplanation(
            rng.normal(size=(words + 2, frames)), [[i] for i in range(words + 2)], [[i] for i in range(frames)]
        )
        coarse = explain_module.HBILevelExplanation(
            rng.normal(size=(2, 2)),
            [list(range(words // 2)), list(range(words // 2, words + 2))],
            [list(range(frames // 2)), list(range(frames // 2, frames))],
        )
        return explain_module.HBIExplanation(
            caption="long",
            video="v.mp4",
            tokens=tokens,
            words=[f"w{i}" for i in range(words)],
            word_tokens=[[i + 1] for i in range(words)],
            frames=np.zeros((frames, 4, 4, 3)),
            frame_times=[0.5 * i for i in range(frames)],
            levels=[level, coarse, coarse],
            source="test",
            units="u",
        )

    short = explain_module.draw_explanation(explanation(4, 6)).get_size_inches()
    long_explanation = explanation(40, 64)
    long = explain_module.draw_explanation(long_explanation).get_size_inches()
    assert long[0] > short[0] and long[1] > short[1]
    values, rows, columns, _ = drawn_heatmaps(long_explanation)[0]
    assert values.shape == (40, 64) and rows == [f"w{i}" for i in range(40)]
    assert columns == [f"{0.5 * i:.1f} s" for i in range(64)]

    many = explanation(4, 3 * explain_module.MAX_TICK_LABELS)
    _, _, columns, _ = drawn_heatmaps(many)[0]
    assert len(columns) <= explain_module.MAX_TICK_LABELS and columns[1] == "1.5 s"


def test_caption_words_join_clip_bpe_pieces_and_leave_special_tokens_out():
    tokenizer = pytest.importorskip("hbi_hf.data.tokenizer").build_clip_tokenizer()
    ids = tokenizer(["a zebrafish parkours, qwzx!"])["input_ids"][0]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    words, pieces = explain_module.caption_words(tokens, [i in tokenizer.all_special_ids for i in ids])
    assert words == ["a", "zebrafish", "parkours", ",", "qwzx", "!"]
    assert [len(p) for p in pieces] == [1, 2, 2, 1, 3, 1]
    assert all(tokens[i] not in tokenizer.all_special_tokens for p in pieces for i in p)


@pytest.mark.real_processor
def test_commands_run_with_the_processor_saved_in_the_model_folder(video_dir, tmp_path, capsys):
    processing = pytest.importorskip("hbi_hf.processing_hbi")
    video_processing = pytest.importorskip("hbi_hf.video_processing_hbi")
    tokenizer = pytest.importorskip("hbi_hf.data.tokenizer").build_clip_tokenizer()
    model_dir = tmp_path / "model"
    text_config = dict(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    config = tiny_hbi_config(num_frames=NUM_FRAMES, max_words=MAX_WORDS)
    config.text_config.update(text_config)
    HBIForRetrieval(config).save_pretrained(model_dir)
    video_processor = video_processing.HBIVideoProcessor(
        num_frames=NUM_FRAMES, size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    )
    processing.HBIProcessor(video_processor, tokenizer, max_words=MAX_WORDS).save_pretrained(model_dir)

    run_cli(capsys, "index", video_dir, "--model", model_dir, "--out", tmp_path / "index", "--no-progress")
    hits = json.loads(run_cli(capsys, "search", tmp_path / "index", "a red square", "--json"))
    figure = tmp_path / "real.png"
    run_cli(capsys, "explain", video_dir / "red.mp4", "a zebrafish square", "--model", model_dir, "--out", figure)
    explanation = explain_module.explain_video(video_dir / "red.mp4", "a zebrafish square", model_dir)
    entity, *coarser = drawn_heatmaps(explanation)

    assert sorted(hit["path"] for hit in hits) == sorted(COLOURS)
    assert figure.stat().st_size > 0
    assert explanation.tokens == ["<|startoftext|>", "a</w>", "zebra", "fish</w>", "square</w>", "<|endoftext|>"]
    assert entity[1] == ["a", "zebrafish", "square"]  # pieces joined, special tokens left out
    np.testing.assert_allclose(entity[0][1], explanation.levels[0].interaction[2:4].sum(0), rtol=1e-6)
    assert not any("<|" in label for _, rows, _, _ in coarser for label in rows)
    assert all(label.endswith(" s") for label in entity[2])  # the real processor's frame times


def test_explain_labels_words_decoded_from_their_pieces_together():
    """CLIP's byte-level BPE splits an emoji or an accented letter into byte symbols, sometimes across pieces; the
    figure's word labels are the decoded text, special tokens left out."""
    from hbi_hf.data.tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    ids = tokenizer("a red 🎉🎉 circle café, naïve")["input_ids"]
    tokens, words, word_tokens = explain_module.caption_word_labels(tokenizer, ids)
    assert words == ["a", "red", "🎉🎉", "circle", "café", ",", "naïve"]
    assert len(tokens) == len(ids) and sum(len(pieces) for pieces in word_tokens) == len(ids) - 2
