"""Specification: training and evaluation write only into output folders this package made. A folder holding a user's
own files (a `config.json`, a `bad_input.json`) is refused by every entry point that writes an output folder, before
any model or data is loaded, with a message naming the folder, the flag and the fix; nothing in it changes. A new
folder, an empty one and one the package made (a re-run, `--resume_from_checkpoint`, an evaluation into a training
run's folder) are accepted."""

import runpy
import sys
from pathlib import Path

import pytest

from hbi_hf.output_folder import OUTPUT_MARKER, claim_output_dir, is_package_output_dir

SCRIPTS = Path(__file__).parent.parent / "scripts"

ENTRY_POINTS = {  # script -> the other options it needs to get as far as the check
    "train_retrieval.py": ["--dataset_name", "synthetic", "--do_train", "--do_eval"],
    "evaluate_retrieval.py": ["--model_name_or_path", "no-such-model", "--dataset_name", "synthetic"],
    "train_videoqa.py": ["--embedded"],
    "train_captioning.py": ["--embedded"],
    "train_estimator.py": ["--synthetic_matrices", "8"],
    "demo.py": ["--quick"],
    "demo_tasks.py": ["--task", "qa"],
    "ablation.py": [],
    "convert_official_checkpoint.py": ["--checkpoint", "no-such-checkpoint.pth"],
}


@pytest.fixture
def user_folder(tmp_path):
    """A folder holding a user's own files, which no run may change."""
    folder = tmp_path / "mywork"
    folder.mkdir()
    (folder / "config.json").write_text('{"my": "own settings"}\n')
    (folder / "bad_input.json").write_text('[{"video": "v1.mp4"}]\n')
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def run_script(name: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(SCRIPTS / name), run_name="__main__")


@pytest.mark.parametrize("script", sorted(ENTRY_POINTS))
def test_every_entry_point_refuses_a_folder_holding_a_users_files(script, user_folder, monkeypatch, capsys):
    before = snapshot(user_folder)
    with pytest.raises(SystemExit) as exit_info:
        run_script(script, [*ENTRY_POINTS[script], "--output_dir", str(user_folder)], monkeypatch)
    assert exit_info.value.code == 2
    message = " ".join(capsys.readouterr().err.split())
    assert f"--output_dir {user_folder}" in message
    assert "new or empty folder for --output_dir" in message
    assert snapshot(user_folder) == before
    assert not is_package_output_dir(user_folder)


def test_a_file_is_refused_as_output_folder(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(FileExistsError, match=rf"--output_dir {path} is a file"):
        claim_output_dir(path)
    assert path.read_text() == "mine"


def test_a_new_folder_is_created_and_marked(tmp_path):
    folder = claim_output_dir(tmp_path / "runs" / "first")
    assert folder.is_dir() and is_package_output_dir(folder)
    assert [path.name for path in folder.iterdir()] == [OUTPUT_MARKER]


def test_an_empty_folder_is_accepted_and_marked(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    claim_output_dir(folder)
    assert is_package_output_dir(folder)


def test_a_folder_the_package_made_is_accepted_again_with_its_outputs(tmp_path):
    """A re-run (the demo's `outputs/demo`), `--resume_from_checkpoint` or an evaluation into a training run's folder:
    the package's own files in it (weights, checkpoints, results) do not make it refuse."""
    folder = claim_output_dir(tmp_path / "run")
    (folder / "config.json").write_text("{}")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "model.safetensors").write_bytes(b"weights")
    before = snapshot(folder)
    assert claim_output_dir(folder) == folder
    assert snapshot(folder) == before


def test_a_package_folder_is_accepted_by_a_script(tmp_path, monkeypatch, capsys):
    """The check lets a package-made folder through: the script goes on to its own next error (no such model)."""
    folder = claim_output_dir(tmp_path / "trained")
    (folder / "eval_results.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        run_script("evaluate_retrieval.py", ["--output_dir", str(folder), "--dataset_name", "synthetic"], monkeypatch)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--model_name_or_path" in error and "new or empty folder" not in error
