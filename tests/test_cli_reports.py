"""What a new user met with `hbi-hf index / search / explain` (issue 24), each as a specification: Ctrl-C, entries that
cannot be read, indexed files that fail later, empty folders, long and non-UTF-8 queries, moved models, an index
folder as `--model`, a model folder without a processor, transformers' weight-loading bar, and the memory of a search.

Built from the generated mp4 files and tiny random model of `test_cli.py`; the tests marked `real_processor` save the
package's `HBIProcessor` into the model folder and run the commands with nothing injected, some in real `hbi-hf`
processes (`python -m hbi_hf_cli`).
"""

# ruff: noqa: F811  (the fixtures imported from test_cli are redefined as test arguments)

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT_CLIP_VOCABULARY, tiny_hbi_config
from test_cli import (  # noqa: F401  (fixtures)
    COLOURS,
    MAX_WORDS,
    NUM_FRAMES,
    SIZE,
    contract_processor,
    model_dir,
    run_cli,
    video_dir,
    write_video,
)

from hbi_hf import HBIForRetrieval
from hbi_hf import search_index as search_module
from hbi_hf.cli import main
from hbi_hf.errors import HBIInputError
from hbi_hf.search_index import VIDEO_EXTENSIONS, HBIVideoIndex, HBIVideoSearcher, build_index

TESTS = Path(__file__).parent
SOURCES = TESTS.parent / "src"


def hbi_hf_process(*argv, seconds_per_video: float = 0.0) -> subprocess.Popen:
    """A real `hbi-hf` process (`python -m hbi_hf_cli`, the console script's code) on this tree's sources. With
    `seconds_per_video`, the process runs the same command with each video's encoding slowed down by that much (so
    a test can interrupt it mid-run on a machine of any speed)."""
    environment = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{SOURCES}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    if seconds_per_video:
        slowed = (
            "import sys, time\n"
            "from hbi_hf import search_index\n"
            "real = search_index.encode_video_batch\n"
            "def slow(model, pixel_values, video_mask):\n"
            f"    time.sleep({seconds_per_video} * len(pixel_values))\n"
            "    return real(model, pixel_values, video_mask)\n"
            "search_index.encode_video_batch = slow\n"
            "from hbi_hf_cli import main\n"
            "sys.exit(main())\n"
        )
        command = [sys.executable, "-c", slowed]
    else:
        command = [sys.executable, "-m", "hbi_hf_cli"]
    return subprocess.Popen(
        [*command, *map(os.fsencode, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment
    )


@pytest.fixture(scope="module")
def real_model_dir(tmp_path_factory) -> Path:
    """A tiny random HBIForRetrieval over the CLIP vocabulary with the package's HBIProcessor saved beside it."""
    from hbi_hf.data.tokenizer import build_clip_tokenizer
    from hbi_hf.processing_hbi import HBIProcessor
    from hbi_hf.video_processing_hbi import HBIVideoProcessor

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("real-model")
    config = tiny_hbi_config(num_frames=NUM_FRAMES, max_words=MAX_WORDS, text_config=dict(TINY_TEXT_CLIP_VOCABULARY))
    HBIForRetrieval(config).save_pretrained(path)
    video_processor = HBIVideoProcessor(
        num_frames=NUM_FRAMES, size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    )
    HBIProcessor(video_processor, build_clip_tokenizer(), max_words=MAX_WORDS).save_pretrained(path)
    return path


def summary_line(out: str) -> str:
    return out.strip().splitlines()[-1]


# --- 1. Ctrl-C --------------------------------------------------------------------------------------------------------


@pytest.mark.real_processor
def test_ctrl_c_during_index_says_in_one_line_what_was_saved_exits_130_and_the_same_command_continues(
    tmp_path, real_model_dir, capsys
):
    """A real `hbi-hf index` process (its encoder slowed to 0.5 s per video) gets SIGINT once two videos are saved:
    one line on standard error with the counts and the fix, exit status 130, and the same command then continues."""
    videos = tmp_path / "videos"
    for i in range(12):
        write_video(videos / f"{i:02d}.mp4", (20 * i, 255 - 20 * i, 90), frames=8)
    out = tmp_path / "index"
    command = [
        "index",
        videos,
        "--model",
        real_model_dir,
        "--out",
        out,
        "--checkpoint-every",
        "1",
        "--batch-size",
        "1",
    ]
    process = hbi_hf_process(*command, "--no-progress", seconds_per_video=0.5)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:  # interrupt once some videos are saved
        if (out / "manifest.json").is_file() and len(HBIVideoIndex.load(out)) >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    stderr = stderr.decode()

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Loading weights" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    match = re.fullmatch(
        rf"hbi-hf index: interrupted: saved the (\d+) videos encoded by this run \((\d+) in the index {re.escape(str(out))}, "
        r"(\d+) left to encode\); run the same command to continue",
        lines[0],
    )
    assert match, lines[0]
    saved, total, left = map(int, match.groups())
    assert saved == total == len(HBIVideoIndex.load(out)) and 2 <= saved < 12 and saved + left == 12

    resumed = run_cli(capsys, *command, "--no-progress")
    assert f"{12 - saved} added" in resumed and f"{saved} unchanged" in resumed
    assert len(HBIVideoIndex.load(out)) == 12


@pytest.mark.parametrize("where", ["writing a shard", "after the shard, before the manifest", "after the manifest"])
def test_ctrl_c_at_any_point_of_a_checkpoint_saves_each_video_once_and_counts_what_is_saved(
    where, video_dir, model_dir, tmp_path, monkeypatch
):
    """The signal can land anywhere in a checkpoint: the counts in the message are what the manifest holds, and no
    video is stored twice."""
    index_class = search_module.HBIVideoIndex
    real = {"writing a shard": index_class._write_shard, "after the manifest": search_module._atomic_write_bytes}
    calls = {"n": 0}

    def interrupt_on_second_checkpoint(function):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2 and where == "writing a shard":
                raise KeyboardInterrupt
            result = function(*args, **kwargs)
            if calls["n"] == 2 and where != "writing a shard":
                raise KeyboardInterrupt
            return result

        return wrapped

    if where == "after the shard, before the manifest":
        monkeypatch.setattr(index_class, "_write_shard", interrupt_on_second_checkpoint(index_class._write_shard))
    elif where == "writing a shard":
        monkeypatch.setattr(index_class, "_write_shard", interrupt_on_second_checkpoint(real[where]))
    else:
        calls["n"] = -1  # the first manifest writes are the empty index's and the first checkpoint's
        monkeypatch.setattr(search_module, "_atomic_write_bytes", interrupt_on_second_checkpoint(real[where]))
    out = tmp_path / "index"
    with pytest.raises(search_module.HBIIndexInterrupted) as interrupted:
        build_index(video_dir, out, model_dir, batch_size=1, checkpoint_every=1, show_progress=False)
    monkeypatch.setattr(index_class, "_write_shard", real["writing a shard"])
    monkeypatch.setattr(search_module, "_atomic_write_bytes", real["after the manifest"])

    index = HBIVideoIndex.load(out)
    assert interrupted.value.saved == interrupted.value.total == len(index) >= 1
    assert len(set(index.paths())) == len(index.paths())
    assert set(index.shards) <= {path.name for path in out.glob("shard-*.safetensors")}  # never a missing shard
    report = build_index(video_dir, out, show_progress=False)
    assert report.unchanged == len(index) and report.unchanged + len(report.added) == len(COLOURS)


def test_ctrl_c_before_encoding_or_during_search_is_one_line_with_exit_status_130(
    video_dir, model_dir, tmp_path, capsys, monkeypatch
):
    index_dir = tmp_path / "index"
    build_index(video_dir, index_dir, model_dir, show_progress=False)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(search_module, "scan_videos", interrupted)
    assert main(["index", str(video_dir), "--out", str(index_dir), "--no-progress"]) == 130
    assert (
        capsys.readouterr().err
        == "hbi-hf index: interrupted before encoding started: run the same command to continue\n"
    )
    monkeypatch.setattr(search_module, "encode_text", interrupted)
    assert main(["search", str(index_dir), "red"]) == 130
    assert capsys.readouterr().err == "hbi-hf search: interrupted\n"


# --- 2. entries that cannot be read -----------------------------------------------------------------------------------


def test_entries_that_cannot_be_read_are_listed_and_counted_as_unreadable(
    video_dir, model_dir, tmp_path, capsys, monkeypatch
):
    """A dangling symbolic link, a folder that cannot be listed, a named pipe with a video extension, and a file
    deleted between listing and decoding: each listed as `failed (unreadable)` and counted."""
    os.symlink(tmp_path / "gone.mp4", video_dir / "ghost.mp4")
    write_video(video_dir / "locked" / "inside.mp4", (9, 9, 9))
    os.mkfifo(video_dir / "pipe.mp4")
    write_video(video_dir / "doomed.mp4", (5, 5, 5))
    real_decode = search_module.decode_video

    def deleted_before_decoding(processor, path):
        if Path(path).name == "doomed.mp4":
            Path(path).unlink()
        return real_decode(processor, path)

    monkeypatch.setattr(search_module, "decode_video", deleted_before_decoding)
    locked = video_dir / "locked"
    locked.chmod(0)
    if os.geteuid() == 0:  # root lists any folder: give it the error a user gets
        real_scandir = os.scandir

        def permission_checked(path="."):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", permission_checked)
    try:
        out = run_cli(capsys, "index", video_dir, "--model", model_dir, "--out", tmp_path / "index", "--no-progress")
    finally:
        locked.chmod(0o755)

    assert f"failed (unreadable): ghost.mp4: a symbolic link to {tmp_path / 'gone.mp4'}, which does not exist" in out
    assert "failed (unreadable): locked/: the folder cannot be listed (PermissionError: Permission denied)" in out
    assert "failed (unreadable): pipe.mp4: not a regular file" in out
    assert "failed (unreadable): doomed.mp4: the file vanished after it was listed" in out
    assert "4 added" in summary_line(out) and "5 failed (undecodable 1, unreadable 4)" in summary_line(out)
    index = HBIVideoIndex.load(tmp_path / "index")
    assert sorted(index.paths()) == sorted(COLOURS)
    assert sorted(f.path for f in index.failed) == ["broken.mp4", "doomed.mp4", "ghost.mp4", "locked/", "pipe.mp4"]


# --- 3. indexed files that fail later ---------------------------------------------------------------------------------


def test_an_indexed_file_that_became_corrupt_or_a_dangling_link_is_reported_as_dropped_from_the_index(
    video_dir, model_dir, tmp_path, capsys
):
    index_dir = tmp_path / "index"
    run_cli(capsys, "index", video_dir, "--model", model_dir, "--out", index_dir, "--no-progress")
    (video_dir / "red.mp4").write_bytes(b"overwritten with garbage" * 50)
    (video_dir / "blue.mp4").unlink()
    os.symlink(tmp_path / "elsewhere.mp4", video_dir / "blue.mp4")
    (video_dir / "green.mp4").unlink()  # deleted: removed, not dropped

    out = run_cli(capsys, "index", video_dir, "--out", index_dir, "--no-progress")

    assert re.search(r"failed \(undecodable\): red\.mp4: .*; it was in the index and was removed from it", out)
    assert re.search(r"failed \(unreadable\): blue\.mp4: .*; it was in the index and was removed from it", out)
    (broken,) = [line for line in out.splitlines() if "broken.mp4" in line]  # never indexed: failed, not dropped
    assert "failed (undecodable)" in broken and "was in the index" not in broken
    summary = summary_line(out)
    assert "1 removed, 1 unchanged, 3 failed (undecodable 2, unreadable 1), 2 dropped (were in the index" in summary
    index = HBIVideoIndex.load(index_dir)
    assert index.paths() == ["sub/grey.mp4"]
    dropped = {f.path: f.reason for f in index.failed if "was in the index" in f.reason}
    assert sorted(dropped) == ["blue.mp4", "red.mp4"]


def test_indexed_videos_in_a_folder_that_can_no_longer_be_listed_are_dropped_not_silently_removed(
    video_dir, model_dir, tmp_path, capsys, monkeypatch
):
    index_dir = tmp_path / "index"
    build_index(video_dir, index_dir, model_dir, show_progress=False)
    locked = video_dir / "sub"
    real_scandir = os.scandir

    def permission_checked(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", permission_checked)
    out = run_cli(capsys, "index", video_dir, "--out", index_dir, "--no-progress")

    assert (
        "failed (unreadable): sub/: the folder cannot be listed (PermissionError: Permission denied); the 1 indexed "
        "videos in it were removed from the index" in out
    )
    assert "0 removed" in summary_line(out) and "1 dropped (were in the index, fail now)" in summary_line(out)
    assert "sub/grey.mp4" not in HBIVideoIndex.load(index_dir).paths()


# --- 4. empty folders -------------------------------------------------------------------------------------------------


def test_a_folder_without_videos_is_warned_about_naming_the_folder_and_the_extensions(
    model_dir, tmp_path, capsys, caplog
):
    for name, files in (("empty", {}), ("notes-only", {"notes.txt": "x", "clip.MP4.txt": "y"})):
        folder = tmp_path / name
        folder.mkdir()
        for file_name, text in files.items():
            (folder / file_name).write_text(text)
        caplog.clear()
        out = run_cli(
            capsys, "index", folder, "--model", model_dir, "--out", tmp_path / f"{name}-index", "--no-progress"
        )
        assert "0 added" in summary_line(out)
        warning = f"{folder.resolve()}: no video file in this folder or its subfolders (looked for {' '.join(VIDEO_EXTENSIONS)})"
        assert warning in caplog.text, caplog.text


def test_emptying_an_indexed_folder_warns_that_its_videos_leave_the_index(video_dir, model_dir, tmp_path, caplog):
    build_index(video_dir, tmp_path / "index", model_dir, show_progress=False)
    shutil.rmtree(video_dir)
    video_dir.mkdir()
    report = build_index(video_dir, tmp_path / "index", show_progress=False)
    assert sorted(report.removed) == sorted(COLOURS)
    assert f"the {len(COLOURS)} videos of the index are removed from it" in caplog.text


# --- 5. long queries and captions -------------------------------------------------------------------------------------


@pytest.mark.real_processor
def test_search_and_explain_warn_alike_when_the_text_is_cut_at_max_words(
    video_dir, real_model_dir, tmp_path, capsys, caplog
):
    index_dir = tmp_path / "index"
    run_cli(capsys, "index", video_dir, "--model", real_model_dir, "--out", index_dir, "--no-progress")
    long_text = "a red square moves slowly across a green field today"
    caplog.clear()
    run_cli(capsys, "search", index_dir, long_text)
    assert (
        f"the query {long_text!r} has 12 tokens (start and end included); the model reads the first {MAX_WORDS}"
        in caplog.text
    )
    caplog.clear()
    run_cli(
        capsys, "explain", video_dir / "red.mp4", long_text, "--model", real_model_dir, "--out", tmp_path / "f.png"
    )
    assert (
        f"the caption {long_text!r} has 12 tokens (start and end included); the model reads the first {MAX_WORDS}"
        in caplog.text
    )
    caplog.clear()
    run_cli(capsys, "search", index_dir, "a red square")  # short enough: no warning
    assert "tokens (start and end included)" not in caplog.text


# --- 6. moved models, an index folder as --model ----------------------------------------------------------------------


def test_a_moved_model_is_named_with_the_hint_to_give_it_with_model(video_dir, model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    index_dir = tmp_path / "index"
    build_index(video_dir, index_dir, model, show_progress=False)
    moved = tmp_path / "moved-model"
    model.rename(moved)

    for argv in (["search", index_dir, "red"], ["index", video_dir, "--out", index_dir, "--no-progress"]):
        assert main([str(a) for a in argv]) == 1
        error = capsys.readouterr().err
        assert f"model {model}: no such folder: the index {index_dir} was built with the model in that folder" in error
        assert "Give the model's folder with --model FOLDER" in error and "\n" not in error.strip()

    assert len(json.loads(run_cli(capsys, "search", index_dir, "red", "--json", "--model", moved))) == len(COLOURS)
    assert f"{len(COLOURS)} unchanged" in run_cli(
        capsys, "index", video_dir, "--out", index_dir, "--model", moved, "--no-progress"
    )


def test_explain_and_index_take_an_index_folder_wherever_they_take_a_model(video_dir, model_dir, tmp_path, capsys):
    index_dir = tmp_path / "index"
    build_index(video_dir, index_dir, model_dir, show_progress=False)
    figure = tmp_path / "f.png"
    assert run_cli(
        capsys, "explain", video_dir / "red.mp4", "red", "--model", index_dir, "--out", figure
    ).strip() == str(figure)
    other = tmp_path / "other-index"
    assert f"{len(COLOURS)} added" in run_cli(
        capsys, "index", video_dir, "--model", index_dir, "--out", other, "--no-progress"
    )
    assert HBIVideoIndex.load(other).model.sha256 == HBIVideoIndex.load(index_dir).model.sha256
    assert len(json.loads(run_cli(capsys, "search", other, "red", "--json", "--model", index_dir))) == len(COLOURS)


# --- 7. transformers' weight-loading bar ------------------------------------------------------------------------------


def stderr_of(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 0
    return capsys.readouterr().err


def test_no_command_shows_the_weight_loading_bar(video_dir, model_dir, tmp_path, capsys):
    from transformers.utils import logging

    index_dir = tmp_path / "index"
    commands = [
        ["index", video_dir, "--model", model_dir, "--out", index_dir, "--no-progress"],
        ["search", index_dir, "red"],
        ["explain", video_dir / "red.mp4", "red", "--model", model_dir, "--out", tmp_path / "f.png"],
    ]
    try:
        logging.enable_progress_bar()  # the bar is transformers' own otherwise, on a terminal or not
        HBIForRetrieval.from_pretrained(model_dir)
        assert "Loading weights" in capsys.readouterr().err
        for argv in commands:
            logging.enable_progress_bar()
            assert "Loading weights" not in stderr_of(capsys, *argv), argv
    finally:
        logging.enable_progress_bar()


def test_the_index_bar_follows_no_progress_and_hf_hub_disable_progress_bars(video_dir, model_dir, tmp_path, capsys):
    from transformers.utils import logging

    try:
        logging.enable_progress_bar()
        assert "indexing: 100%" in stderr_of(capsys, "index", video_dir, "--model", model_dir, "--out", tmp_path / "a")
        logging.enable_progress_bar()
        argv = ["index", video_dir, "--model", model_dir, "--out", tmp_path / "b", "--no-progress"]
        assert "indexing" not in stderr_of(capsys, *argv)
        logging.disable_progress_bar()  # what HF_HUB_DISABLE_PROGRESS_BARS=1 sets when transformers is imported
        assert "indexing" not in stderr_of(capsys, "index", video_dir, "--model", model_dir, "--out", tmp_path / "c")
    finally:
        logging.enable_progress_bar()


# --- 8. non-UTF-8 queries ---------------------------------------------------------------------------------------------


def test_a_query_that_is_not_utf8_is_refused_naming_its_bytes(tmp_path):
    process = hbi_hf_process("search", tmp_path, b"caf\xe9 au lait")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert (
        "hbi-hf search: error: argument query: the query is not UTF-8 text: b'caf\\xe9 au lait'; give it in UTF-8"
        in stderr.decode()
    )
    process = hbi_hf_process("explain", sys.executable, b"\xff red", "--model", tmp_path, "--out", tmp_path / "f.png")
    _, stderr = process.communicate(timeout=120)
    assert (
        process.returncode == 2 and "argument caption: the caption is not UTF-8 text: b'\\xff red'" in stderr.decode()
    )


def test_a_queries_file_line_that_is_not_utf8_gets_an_error_line_and_the_others_are_answered(
    video_dir, model_dir, tmp_path, capsys
):
    index_dir = tmp_path / "index"
    build_index(video_dir, index_dir, model_dir, show_progress=False)
    queries = tmp_path / "queries.txt"
    queries.write_bytes(b"red\ncaf\xe9\n\nblue\n")

    assert main(["search", str(index_dir), "--queries-file", str(queries)]) == 1
    printed = capsys.readouterr()
    answers = [json.loads(line) for line in printed.out.strip().splitlines()]
    assert [answer["query"] for answer in answers] == ["red", None, "blue"]
    assert answers[1] == {"query": None, "line": 2, "error": f"line 2 of {queries} is not UTF-8 text (b'caf\\xe9')"}
    assert f"hbi-hf search: error: line 2 of {queries} is not UTF-8 text (b'caf\\xe9'); not searched" in printed.err
    assert f"skipped 1 not UTF-8 line(s) of {queries} (line 2)" in printed.err
    assert f"skipped 1 empty line(s) of {queries} (line 3)" in printed.err
    with pytest.raises(HBIInputError, match=r"the query b'caf\\\\udce9' is not UTF-8 text"):
        HBIVideoSearcher(index_dir).search("caf\udce9")


# --- 9. a model folder without a processor ----------------------------------------------------------------------------


@pytest.mark.real_processor
def test_a_model_folder_without_a_processor_is_one_line_naming_the_folder_and_the_fix(
    video_dir, model_dir, tmp_path, capsys
):
    out = tmp_path / "index"
    commands = [
        ["index", video_dir, "--model", model_dir, "--out", out, "--no-progress"],
        ["explain", video_dir / "red.mp4", "red", "--model", model_dir, "--out", tmp_path / "f.png"],
    ]
    for argv in commands:
        assert main([str(a) for a in argv]) == 1
        error = capsys.readouterr().err
        assert error == (
            f"hbi-hf {argv[0]}: error: model {model_dir.resolve()}: the folder holds no processor (no "
            "processor_config.json): the text tower does not have CLIP's vocabulary, so save the model's own "
            f"HBIProcessor into it with `processor.save_pretrained('{model_dir.resolve()}')`\n"
        )
    assert not out.exists() and not (tmp_path / "f.png").exists()


@pytest.mark.real_processor
def test_the_call_named_for_a_clip_model_folder_without_a_processor_fixes_it(
    video_dir, real_model_dir, tmp_path, capsys
):
    """A model folder written before models carried their processor (e.g. by an older converter): the error names
    the one call that saves the default processor, and running that call makes the command work."""
    folder = tmp_path / "old-model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(real_model_dir / name, folder / name)
    argv = ["index", str(video_dir), "--model", str(folder), "--out", str(tmp_path / "index"), "--no-progress"]

    assert main(argv) == 1
    error = capsys.readouterr().err
    assert (
        error.startswith(f"hbi-hf index: error: model {folder}: the folder holds no processor")
        and error.count("\n") == 1
    )
    (call,) = re.findall(r"`([^`]+)`", error)
    assert call.startswith("hbi_hf.modeling_hbi.default_processor(hbi_hf.HBIConfig.from_pretrained(")
    exec(call, {"hbi_hf": __import__("hbi_hf.modeling_hbi")})
    assert f"{len(COLOURS)} added" in run_cli(capsys, *argv)


# --- 10. the memory of a search ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows_per_shard", [64, 300])
def test_rows_read_from_the_shards_equal_the_stored_features(rows_per_shard, model_dir, tmp_path):
    """What search reads row by row (`read_features`, `global_embeddings`) is exactly what the shards hold, in the
    order asked for, for shards read in one span (64 rows) and in runs of nearby rows (300 rows, sparse picks)."""
    from hbi_hf.search_index import HBIIndexGallery, HBIModelFingerprint, features_to_tensors

    model = HBIForRetrieval.from_pretrained(model_dir).eval()
    with torch.no_grad():
        features = model.hbi.get_video_features(
            torch.randn(600, NUM_FRAMES, 3, SIZE, SIZE), (torch.rand(600, NUM_FRAMES) > 0.3).long()
        )
    index = HBIVideoIndex(tmp_path / "index", model=HBIModelFingerprint.of(model_dir), video_root=str(tmp_path))
    index.directory.mkdir()
    for start in range(0, 600, rows_per_shard):
        metadata = [
            dict(path=f"v{i:03d}.mp4", size=1, mtime_ns=0, sha256="0") for i in range(start, start + rows_per_shard)
        ]
        index.append_shard(
            features[start : start + rows_per_shard], metadata[: len(features[start : start + rows_per_shard])]
        )
    index = HBIVideoIndex.load(tmp_path / "index")
    generator = torch.Generator().manual_seed(0)
    for picks in (
        [0],
        [599, 3, 250, 251, 4],
        torch.randperm(600, generator=generator)[:40].tolist(),
        list(range(600)),
    ):
        read = features_to_tensors(HBIIndexGallery(index)[torch.tensor(picks)])
        expected = features_to_tensors(features[torch.tensor(picks)])
        assert read.keys() == expected.keys()
        for key in expected:
            assert torch.equal(read[key], expected[key]), (key, picks[:5])
    torch.testing.assert_close(index.global_embeddings(), features.global_embeddings, rtol=0, atol=0)


MEMORY_PROBE = """
import json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_cli import ContractProcessor
from hbi_hf import search_index
from hbi_hf.search_index import HBIVideoSearcher, encode_text, rank_videos

search_index.load_processor = lambda path: ContractProcessor()


def resident_mb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024


def peak_growth_mb(run):
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident size (VmHWM) to the current one
    before = resident_mb("VmRSS")
    result = run()
    return resident_mb("VmHWM") - before, result


growth = {{}}
growth["load"], searcher = peak_growth_mb(lambda: HBIVideoSearcher({index!r}))
searcher.search("warm up", top_k=1, shortlist=1)  # first-call allocations of the text tower and the scorer
growth["search"], hits = peak_growth_mb(
    lambda: [searcher.search(query, top_k=5, shortlist=50) for query in ("red", "blue", "a grey square")]
)
text, _ = encode_text(searcher.model, searcher.processor, "red")
growth["score every video"], _ = peak_growth_mb(
    lambda: rank_videos(searcher.model, text, searcher.features, shortlist=0, chunk_size=64)
)
growth["load every feature"], _ = peak_growth_mb(lambda: searcher.index.features())
print(json.dumps(dict(growth=growth, hits=len(hits[0]))))
"""


@pytest.mark.slow
def test_search_memory_grows_with_the_shortlist_and_the_block_not_the_gallery(tmp_path):
    """An index of 4,800 videos whose features take 367 MB (64 frames of 256-d tokens each): loading the searcher,
    three searches with a shortlist of 50, and scoring every video in blocks of 64 each grow the peak resident memory
    of a fresh process by a small part of that; loading every feature at once (what search did before) grows it by
    more than the whole."""
    from hbi_hf.search_index import HBIModelFingerprint, features_to_tensors

    torch.manual_seed(0)
    config = tiny_hbi_config(num_frames=64, max_words=MAX_WORDS, projection_dim=256, video_cluster_counts=[8, 4])
    model_path = tmp_path / "model"
    model = HBIForRetrieval(config).eval()
    model.save_pretrained(model_path)
    with torch.no_grad():
        one = model.hbi.get_video_features(torch.randn(1, 64, 3, 32, 32), torch.ones(1, 64, dtype=torch.long))
    template = one.map(lambda tensor: tensor.expand(64, *tensor.shape[1:]).contiguous())
    index = HBIVideoIndex(tmp_path / "index", model=HBIModelFingerprint.of(model_path), video_root=str(tmp_path))
    index.directory.mkdir()
    shards = 75
    for shard in range(shards):
        features = template.map(lambda t: t + 0.01 * torch.randn_like(t) if t.is_floating_point() else t)
        metadata = [
            dict(path=f"v{64 * shard + row:05d}.mp4", size=1, mtime_ns=0, sha256="0" * 64) for row in range(64)
        ]
        index.append_shard(features, metadata)
    gallery_mb = sum(t.numel() * t.element_size() for t in features_to_tensors(template).values()) * shards / 2**20

    script = MEMORY_PROBE.format(tests=str(TESTS), index=str(index.directory))
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    growth = measured["growth"]
    print(f"\ngallery features {gallery_mb:.0f} MB; peak resident growth (MB): {growth}")

    assert gallery_mb > 350 and measured["hits"] == 5
    assert growth["load"] < gallery_mb / 8
    assert growth["search"] < gallery_mb / 16
    assert growth["score every video"] < gallery_mb / 8
    assert growth["load every feature"] > 0.9 * gallery_mb  # the measurement sees a whole-gallery load


SCORING_PROBE = """
import json, sys, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import TINY_TEXT, tiny_hbi_config
from hbi_hf import HBIForRetrieval
from hbi_hf.retrieval_evaluation import score_gallery


def resident_mb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024


torch.manual_seed(0)
text_config = dict(TINY_TEXT, max_position_embeddings=32)
config = tiny_hbi_config(num_frames=64, max_words=32, projection_dim=256, video_cluster_counts=[8, 4], text_config=text_config)
model = HBIForRetrieval(config).eval()
with torch.no_grad():
    video = model.hbi.get_video_features(torch.randn(1, 64, 3, 32, 32), torch.ones(1, 64, dtype=torch.long))
    input_ids = torch.randint(1, 97, (1, 32))
    input_ids[0, 0], input_ids[0, -1] = 98, 99
    text = model.hbi.get_text_features(input_ids, torch.ones(1, 32, dtype=torch.long))
growth = {{}}
for n in (128, 512):
    videos = video.map(lambda t: t.expand(n, *t.shape[1:]).contiguous())
    texts = text.map(lambda t: t.expand(n, *t.shape[1:]).contiguous())
    Path("/proc/self/clear_refs").write_text("5")
    before = resident_mb("VmRSS")
    scores = score_gallery(model, texts, videos, chunk_size=64)
    growth[n] = resident_mb("VmHWM") - before - scores.numel() * 4 / 2**20
    del videos, texts, scores
print(json.dumps(growth))
"""


@pytest.mark.slow
def test_evaluation_scoring_memory_grows_with_the_chunk_not_the_gallery():
    """`evaluate_retrieval` scores the texts x videos matrix with `score_gallery` in chunks: beyond the score matrix
    it returns, its peak memory is the same for 128 and 512 texts and videos (64 frames of 256-d tokens, chunks of
    64), while the features it reads grow four times."""
    script = SCORING_PROBE.format(tests=str(TESTS))
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    growth = {int(n): mb for n, mb in json.loads(result.stdout.strip().splitlines()[-1]).items()}
    print(f"\nscore_gallery peak growth beyond its output (MB): {growth}")
    assert growth[512] < 1.25 * growth[128] + 8
