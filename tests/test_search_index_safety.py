"""`hbi-hf index` / `search` under concurrency, unreadable files, damage, a changed model and bad arguments.

Built from the same small generated mp4 files and tiny random model as `test_cli.py` (its fixtures are reused), with
the stand-in processor of that file; the concurrency test runs two real processes on one index folder.
"""

# ruff: noqa: F811  (the fixtures imported from test_cli are redefined as test arguments)

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_hbi_config
from filelock import FileLock
from test_cli import (  # noqa: F401  (fixtures)
    COLOURS,
    MAX_WORDS,
    NUM_FRAMES,
    ContractProcessor,
    contract_processor,
    encode_counter,
    model_dir,
    run_cli,
    video_dir,
    write_video,
)

from hbi_hf import HBIForRetrieval
from hbi_hf import search_index as search_module
from hbi_hf.cli import main
from hbi_hf.errors import HBIInputError
from hbi_hf.search_index import (
    LOCK_NAME,
    MARKER_NAME,
    HBIIndexDamagedError,
    HBIIndexLockedError,
    HBIModelFingerprint,
    HBIModelMismatchError,
    HBIVideoIndex,
    HBIVideoSearcher,
    build_index,
    load_hbi_model,
    rank_videos,
    search_index,
)
from hbi_hf.video_processing_hbi import HBIVideoDecodeError

TESTS = Path(__file__).parent


def assert_index_holds_the_model_features(index_dir: Path, video_root: Path, model_path: Path) -> None:
    """Every stored video's features equal what the model computes for that file, without the index."""
    model, _ = load_hbi_model(model_path)
    index = HBIVideoIndex.load(index_dir)
    stored = index.features()
    for position, path in enumerate(index.paths()):
        inputs = ContractProcessor()(videos=[str(video_root / path)])
        with torch.no_grad():
            direct = model.get_video_features(inputs["pixel_values"], inputs["video_mask"])
        torch.testing.assert_close(stored.global_embeddings[position], direct.global_embeddings[0])
        torch.testing.assert_close(stored.level_tokens[2][position], direct.level_tokens[2][0])


def shard_files(index_dir: Path) -> set[str]:
    return {path.name for path in index_dir.glob("shard-*.safetensors")}


@pytest.fixture
def index_dir(video_dir, model_dir, tmp_path) -> Path:
    build_index(video_dir, tmp_path / "index", model_dir, checkpoint_every=2, show_progress=False)
    return tmp_path / "index"


# --- concurrency ------------------------------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_cli import ContractProcessor
    from hbi_hf import search_index
    search_index.load_processor = lambda path: ContractProcessor()
    go = Path({go!r})
    while not go.exists():
        time.sleep(0.01)
    report = search_index.build_index({videos!r}, {index!r}, {model!r}, batch_size=1, checkpoint_every=1,
                                      show_progress=False)
    print(len(report.added), report.unchanged, len(report.failed))
    """
)


def test_two_concurrent_index_runs_on_one_folder_give_a_correct_index_without_orphans(video_dir, model_dir, tmp_path):
    for i in range(6):
        write_video(video_dir / f"more/{i}.mp4", (40 * i, 255 - 40 * i, 100), frames=6 + i)
    index_dir, go = tmp_path / "index", tmp_path / "go"
    script = WRITER.format(
        tests=str(TESTS), go=str(go), videos=str(video_dir), index=str(index_dir), model=str(model_dir)
    )
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
        )
        for _ in range(2)
    ]
    time.sleep(1.0)
    go.touch()
    results = [writer.communicate(timeout=300) for writer in writers]

    assert [writer.returncode for writer in writers] == [0, 0], [err[-2000:] for _, err in results]
    counts = sorted(tuple(int(n) for n in out.split()) for out, _ in results)
    assert counts == [(0, 10, 1), (10, 0, 1)]  # one run encoded all 10 videos, the other found them done
    index = HBIVideoIndex.load(index_dir)
    assert sorted(index.paths()) == sorted([*COLOURS, *(f"more/{i}.mp4" for i in range(6))])
    assert shard_files(index_dir) == set(index.shards)  # no orphan shard
    assert not list(index_dir.glob(".hbi-tmp-*"))
    assert_index_holds_the_model_features(index_dir, video_dir, model_dir)


def test_a_second_writer_waits_for_the_lock_or_gives_up_after_the_timeout(index_dir, video_dir, caplog):
    held, release = threading.Event(), threading.Event()

    def other_writer() -> None:  # holds the writer lock as another `hbi-hf index` run would
        with FileLock(str(index_dir / LOCK_NAME)):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=other_writer)
    holder.start()
    held.wait(30)
    try:
        with pytest.raises(HBIIndexLockedError, match="another `hbi-hf index` run held the writer lock"):
            build_index(video_dir, index_dir, lock_timeout=0.3, show_progress=False)
        threading.Timer(0.5, release.set).start()
        report = build_index(video_dir, index_dir, show_progress=False)
    finally:
        release.set()
        holder.join()
    assert report.unchanged == len(COLOURS)
    assert "waiting for it" in caplog.text


# --- bad files ----------------------------------------------------------------------------------------------------------


def test_an_unreadable_file_is_skipped_counted_and_reported_by_reason(
    video_dir, model_dir, tmp_path, capsys, monkeypatch
):
    secret = video_dir / "secret.mp4"
    write_video(secret, (1, 2, 3))
    secret.chmod(0)
    if os.geteuid() == 0:  # root reads any file: give it the permission error a user gets
        real = search_module.file_sha256

        def permission_checked(path, *args):
            if not os.stat(path).st_mode & 0o444:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *args)

        monkeypatch.setattr(search_module, "file_sha256", permission_checked)
    try:
        out = run_cli(capsys, "index", video_dir, "--model", model_dir, "--out", tmp_path / "index", "--no-progress")
    finally:
        secret.chmod(0o644)

    assert "failed (unreadable): secret.mp4: PermissionError" in out
    assert "failed (undecodable): broken.mp4" in out
    assert "4 added" in out and "2 failed (undecodable 1, unreadable 1)" in out
    index = HBIVideoIndex.load(tmp_path / "index")
    assert sorted(index.paths()) == sorted(COLOURS)
    assert sorted((f.path, f.kind) for f in index.failed) == [
        ("broken.mp4", "undecodable"),
        ("secret.mp4", "unreadable"),
    ]


def test_videos_whose_features_are_not_finite_are_reported_not_stored(video_dir, model_dir, tmp_path, monkeypatch):
    real = search_module.encode_video_batch

    def poisoned(model, pixel_values, video_mask):
        features = real(model, pixel_values, video_mask)
        features.global_embeddings[0, 0] = float("nan")
        return features

    monkeypatch.setattr(search_module, "encode_video_batch", poisoned)
    report = build_index(video_dir, tmp_path / "index", model_dir, batch_size=2, show_progress=False)

    assert report.failure_totals() == {"undecodable": 1, "non-finite features": 2}
    assert len(HBIVideoIndex.load(tmp_path / "index")) == 2


# --- damage -----------------------------------------------------------------------------------------------------------


def test_a_truncated_shard_makes_search_fail_naming_the_file_and_the_fix(index_dir, capsys):
    shard = sorted(shard_files(index_dir))[0]
    path = index_dir / shard
    path.write_bytes(path.read_bytes()[:-100])

    with pytest.raises(HBIIndexDamagedError, match=rf"{shard}.*truncated.*Rerun `hbi-hf index"):
        search_index(index_dir, "a red square")
    assert main(["search", str(index_dir), "a red square"]) == 1
    assert f"{shard}" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "delete", "flip a byte"])
def test_rerunning_index_reports_a_damaged_shard_by_name_and_reencodes_its_videos(
    damage, index_dir, video_dir, model_dir, encode_counter, capsys
):
    index = HBIVideoIndex.load(index_dir)
    shard = sorted(index.shards)[0]
    victims = sorted(entry.path for entry in index.entries if entry.shard == shard)
    path = index_dir / shard
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "delete":
        path.unlink()
    else:
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))

    out = run_cli(capsys, "index", video_dir, "--out", index_dir, "--no-progress")

    kind = "missing" if damage == "delete" else "damaged"
    assert f"{kind} shard: {shard}" in out
    assert f"{len(victims)} repaired" in out
    assert encode_counter["videos"] == len(victims)
    repaired = HBIVideoIndex.load(index_dir)
    assert shard not in repaired.shards and shard_files(index_dir) == set(repaired.shards)
    assert sorted(repaired.paths()) == sorted(COLOURS)
    assert_index_holds_the_model_features(index_dir, video_dir, model_dir)
    assert "0 repaired" in run_cli(capsys, "index", video_dir, "--out", index_dir, "--no-progress")


def test_nan_features_are_an_error_never_a_top_hit(index_dir, model_dir):
    index = HBIVideoIndex.load(index_dir)
    features = index.features()
    features.level_tokens[0][1] = float("nan")
    model, _ = load_hbi_model(model_dir)
    text = ContractProcessor()(text=["a red square"])
    with torch.no_grad():
        text_features = model.get_text_features(text["input_ids"], text["attention_mask"])
    with pytest.raises(HBIIndexDamagedError, match=r"NaN scores .* videos \[1\]"):
        rank_videos(model, text_features, features, top_k=1, shortlist=0)

    # the same damage on disk, with a checksum that matches (written by someone else): search names the video
    from safetensors.torch import load_file, save_file

    shard = index.entries[1].shard
    tensors = load_file(str(index_dir / shard))
    tensors["level_tokens.0"][index.entries[1].row] = float("nan")
    save_file(tensors, str(index_dir / shard))
    manifest = json.loads((index_dir / "manifest.json").read_text())
    manifest["shards"][shard]["sha256"] = search_module.file_sha256(index_dir / shard)
    (index_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HBIIndexDamagedError, match=rf"{index.entries[1].path}.*NaN"):
        search_index(index_dir, "a red square")


@pytest.mark.parametrize("crafted", ["../outside.safetensors", "/etc/passwd", "sub/shard-0.safetensors"])
def test_a_crafted_manifest_cannot_make_search_read_outside_the_index(index_dir, crafted):
    (index_dir.parent / "outside.safetensors").write_bytes(b"x")
    manifest = json.loads((index_dir / "manifest.json").read_text())
    old = manifest["videos"][0]["shard"]
    manifest["shards"][crafted] = manifest["shards"].pop(old)
    for entry in manifest["videos"]:
        if entry["shard"] == old:
            entry["shard"] = crafted
    (index_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HBIIndexDamagedError, match="not a shard file name of this index"):
        search_index(index_dir, "a red square")


# --- the model's fingerprint ------------------------------------------------------------------------------------------


def save_other_model(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    HBIForRetrieval(tiny_hbi_config(num_frames=NUM_FRAMES, max_words=MAX_WORDS)).save_pretrained(path)


def test_retraining_into_the_model_folder_reencodes_everything_and_search_refuses_the_stale_index(
    video_dir, model_dir, tmp_path, encode_counter
):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    index_dir = tmp_path / "index"
    build_index(video_dir, index_dir, model, show_progress=False)
    save_other_model(model, seed=1)  # "retrained" in place: same path, other weights

    with pytest.raises(HBIModelMismatchError, match="is not the model the index .* was built with"):
        search_index(index_dir, "a red square")

    encode_counter["videos"] = 0
    report = build_index(video_dir, index_dir, show_progress=False)
    assert report.model_changed and report.unchanged == 0
    assert sorted(report.updated) == sorted(COLOURS) and encode_counter["videos"] == len(COLOURS)
    assert_index_holds_the_model_features(index_dir, video_dir, model)
    assert len(search_index(index_dir, "a red square")) == len(COLOURS)


def test_search_accepts_a_copy_of_the_model_and_refuses_another_one(index_dir, model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert [hit.path for hit in search_index(index_dir, "red", model_name_or_path=copy)] == [
        hit.path for hit in search_index(index_dir, "red")
    ]
    save_other_model(tmp_path / "other", seed=2)
    with pytest.raises(HBIModelMismatchError, match="weights, config or processor differ"):
        search_index(index_dir, "red", model_name_or_path=tmp_path / "other")


def test_the_fingerprint_is_not_recomputed_for_unchanged_files(model_dir, monkeypatch):
    fingerprint = HBIModelFingerprint.of(model_dir)
    monkeypatch.setattr(search_module, "file_sha256", lambda path: pytest.fail(f"hashed {path} again"))
    assert HBIModelFingerprint.of(model_dir, known=fingerprint) == fingerprint


# --- arguments and folders --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["search", "{index}", "q", "--top-k", "-1"], "--top-k"),
        (["search", "{index}", "q", "--top-k", "0"], "--top-k"),
        (["search", "{index}", "q", "--shortlist", "-5"], "--shortlist"),
        (["search", "{index}", "q", "--top-k", "ten"], "--top-k"),
        (["index", "{videos}", "--out", "{out}", "--batch-size", "0"], "--batch-size"),
        (["index", "{videos}", "--out", "{out}", "--checkpoint-every", "-1"], "--checkpoint-every"),
        (["index", "{videos}", "--out", "{out}", "--lock-timeout", "-1"], "--lock-timeout"),
        (
            ["explain", "{video}", "red", "--model", "{model}", "--out", "f.png", "--num-samples", "0"],
            "--num-samples",
        ),
    ],
)
def test_bad_values_are_refused_at_parse_time_naming_the_flag(argv, flag, video_dir, model_dir, tmp_path, capsys):
    values = dict(index=tmp_path, videos=video_dir, out=tmp_path / "out", video=video_dir / "red.mp4", model=model_dir)
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**values) for a in argv])
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_model_folder_says_no_such_folder_and_does_not_poison_the_index(
    video_dir, model_dir, tmp_path, capsys
):
    out = tmp_path / "index"
    with pytest.raises(SystemExit):
        main(["index", str(video_dir), "--model", str(tmp_path / "modle"), "--out", str(out)])
    assert "argument --model: no such folder" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no such folder"):
        build_index(video_dir, out, tmp_path / "modle", show_progress=False)
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_index(video_dir, out, tmp_path / "not-a-model", show_progress=False)
    assert not out.exists()

    run_cli(capsys, "index", video_dir, "--model", model_dir, "--out", out, "--no-progress")
    assert sorted(HBIVideoIndex.load(out).paths()) == sorted(COLOURS)


def test_out_pointing_at_a_folder_the_package_did_not_create_is_refused_and_left_untouched(
    video_dir, model_dir, tmp_path, capsys
):
    out = tmp_path / "my-files"
    out.mkdir()
    mine = {
        "notes.txt": b"mine",
        "shard-0123456789abcdef0123456789abcdef.safetensors": b"looks like a shard",
        ".hbi-tmp-x.tmp": b"looks like a leftover",
        "manifest.json": b"{}",
    }
    for name, data in mine.items():
        (out / name).write_bytes(data)

    assert main(["index", str(video_dir), "--model", str(model_dir), "--out", str(out), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "did not create" in error and "notes.txt" in error and "Nothing was written or deleted" in error
    assert {path.name: path.read_bytes() for path in out.iterdir()} == mine

    empty = tmp_path / "empty"
    empty.mkdir()
    run_cli(capsys, "index", video_dir, "--model", model_dir, "--out", empty, "--no-progress")
    assert (empty / MARKER_NAME).is_file() and len(HBIVideoIndex.load(empty)) == len(COLOURS)


def test_queries_file_answers_every_line_with_one_json_line(index_dir, tmp_path, capsys):
    queries = tmp_path / "queries.txt"
    queries.write_text("a red square\n\n  a blue thing \ngrey\n")
    lines = run_cli(capsys, "search", index_dir, "--queries-file", queries, "--top-k", "2").strip().splitlines()

    answers = [json.loads(line) for line in lines]
    assert [answer["query"] for answer in answers] == ["a red square", "a blue thing", "grey"]
    for answer in answers:
        single = json.loads(run_cli(capsys, "search", index_dir, answer["query"], "--top-k", "2", "--json"))
        assert answer["hits"] == single and answer["milliseconds"] > 0

    with pytest.raises(SystemExit):
        main(["search", str(index_dir), "a query", "--queries-file", str(queries)])
    assert "either a QUERY or --queries-file" in capsys.readouterr().err


def test_help_and_argument_errors_do_not_import_torch():
    code = textwrap.dedent(
        """
        import sys
        from hbi_hf_cli import main
        for argv in (
            ["--help"],
            ["search", "--help"],
            ["search", ".", "q", "--top-k", "0"],
            ["search", ".", "  "],
            ["explain", sys.executable, "c", "--model", ".", "--out", "figure.txt"],
        ):
            try:
                main(argv)
            except SystemExit:
                pass
        heavy = sorted(m for m in ("torch", "transformers", "hbi_hf") if m in sys.modules)
        sys.exit(f"imported {heavy}" if heavy else 0)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-500:]


def test_search_rereads_the_manifest_when_an_index_run_replaced_it_while_loading(index_dir, video_dir, monkeypatch):
    real_global_embeddings = HBIVideoIndex.global_embeddings
    calls = []

    def racing(self):  # an index run rewrites a shard between search's reading of the manifest and of the shards
        if not calls:
            write_video(video_dir / "red.mp4", (200, 10, 10), frames=10)
            build_index(video_dir, index_dir, show_progress=False)
        calls.append(self)
        return real_global_embeddings(self)

    monkeypatch.setattr(HBIVideoIndex, "global_embeddings", racing)
    hits = search_index(index_dir, "a red square")

    assert len(calls) == 2
    assert sorted(hit.path for hit in hits) == sorted(COLOURS)


def test_a_damaged_manifest_is_reported_by_name_by_search_and_index(index_dir, video_dir, capsys):
    manifest = index_dir / "manifest.json"
    manifest.write_text(manifest.read_text()[:200])
    assert main(["search", str(index_dir), "red"]) == 1
    assert f"{manifest}: the file: not valid JSON" in capsys.readouterr().err
    assert main(["index", str(video_dir), "--out", str(index_dir), "--no-progress"]) == 1
    assert f"{manifest}: the file: not valid JSON" in capsys.readouterr().err


def test_every_input_error_of_the_package_is_an_hbi_input_error():
    """The rule `hbi-hf` prints by: what the package raises on purpose about its input derives from HBIInputError."""
    for error in (HBIIndexDamagedError, HBIModelMismatchError, HBIVideoDecodeError):
        assert issubclass(error, HBIInputError) and issubclass(error, ValueError)


def test_input_errors_found_while_running_are_one_line_messages_naming_the_command(
    video_dir, model_dir, tmp_path, capsys
):
    empty_videos = tmp_path / "no-videos"
    empty_videos.mkdir()
    empty_index = tmp_path / "empty-index"
    build_index(empty_videos, empty_index, model_dir, show_progress=False)
    cases = [
        (["search", empty_index, "red"], "hbi-hf search: error: the index", "holds no video"),
        (["index", video_dir, "--out", tmp_path / "new"], "hbi-hf index: error:", "a model (--model) is needed"),
    ]
    for argv, prefix, reason in cases:
        assert main([str(a) for a in argv]) == 1
        error = capsys.readouterr().err
        assert error.startswith(prefix) and reason in error and "Traceback" not in error, error
    with pytest.raises(HBIInputError, match="holds no video"):
        search_index(empty_index, "red")
    assert not (tmp_path / "new").exists()


def test_a_bug_is_not_disguised_as_an_input_error(video_dir, model_dir, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(search_module, "build_index", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["index", str(video_dir), "--model", str(model_dir), "--out", str(tmp_path / "out")])


@pytest.mark.parametrize(
    "argv, flag, reason",
    [
        (["index", "{videos}", "--out", "{out}", "--device", "bogus"], "--device", "not a torch device: 'bogus'"),
        (["index", "{videos}", "--out", "{out}", "--device", "cuda:99"], "--device", "'cuda:99'"),
        (["explain", "{video}", "red", "--model", "{model}", "--out", "ex.txt"], "--out", "must end in .png"),
        (["explain", "{video}", "red", "--model", "{model}", "--out", "{out}/f.png"], "--out", "no such folder"),
        (["search", "{index}", ""], "query", "the query is empty"),
        (["search", "{index}", " \t "], "query", "the query is empty"),
    ],
)
def test_device_figure_file_and_query_are_checked_at_parse_time(
    argv, flag, reason, video_dir, model_dir, tmp_path, capsys
):
    values = dict(index=tmp_path, videos=video_dir, out=tmp_path / "out", video=video_dir / "red.mp4", model=model_dir)
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**values) for a in argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"hbi-hf {argv[0]}: error: argument {flag}: " in error and reason in error, error
    assert not (tmp_path / "out").exists()


def test_an_empty_query_is_refused_and_empty_lines_of_a_queries_file_are_skipped_and_counted(
    index_dir, tmp_path, capsys
):
    with pytest.raises(HBIInputError, match="is empty"):
        HBIVideoSearcher(index_dir).search("  ")
    queries = tmp_path / "queries.txt"
    queries.write_text("red\n\n   \nblue\n\t\n")
    assert main(["search", str(index_dir), "--queries-file", str(queries)]) == 0
    printed = capsys.readouterr()
    assert [json.loads(line)["query"] for line in printed.out.strip().splitlines()] == ["red", "blue"]
    assert f"skipped 3 empty line(s) of {queries} (line 2, 3, 5)" in printed.err


def test_usage_errors_name_the_command_and_help_shows_the_defaults(index_dir, model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["search", str(index_dir)])
    assert "hbi-hf search: error: give either a QUERY or --queries-file" in capsys.readouterr().err
    (tmp_path / "v.mp4").write_bytes(b"")
    command = ["explain", str(tmp_path / "v.mp4"), "red", "--model", str(model_dir), "--out", str(tmp_path / "f.png")]
    with pytest.raises(SystemExit):
        main([*command, "--teacher", "monte_carlo", "--estimator", str(model_dir)])
    assert "hbi-hf explain: error: --teacher monte_carlo takes no --estimator" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*command, "--num-samples", "5"])  # the default teacher is exact: samples would be ignored
    assert "hbi-hf explain: error: --num-samples is for --teacher monte_carlo" in capsys.readouterr().err
    blank = [*command[:2], "  ", *command[3:]]
    with pytest.raises(SystemExit):
        main(blank)
    assert "hbi-hf explain: error: argument caption: the caption is empty" in capsys.readouterr().err

    expected = {
        "index": ["(>= 1; default: 8)", "(>= 1; default: 64)", "(default: cpu)"],
        "search": ["(>= 1; default: 10)", "(default: 1000)"],
        "explain": ["(default: 1000)", "(default: 0)"],
    }
    for command_name, defaults in expected.items():
        with pytest.raises(SystemExit) as exit_info:
            main([command_name, "--help"])
        assert exit_info.value.code == 0
        shown = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
        assert all(default in shown for default in defaults), (command_name, shown)
