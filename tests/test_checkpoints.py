"""Specification of resuming and saving: `--resume_from_checkpoint last` means the newest complete checkpoint (one
killed during its save, or with truncated or missing files, is skipped with a warning), and a save that fails on a
full disk says so, naming the folder, instead of torch's "basic_ios::clear: iostream error"."""

import errno
import json
import logging
import shutil

import pytest
import torch
from test_training import make_trainer

from hbi_hf import training
from hbi_hf.training import checkpoint_problem, last_complete_checkpoint


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run that saved complete checkpoints at steps 1 to 4 (copied by each test before damaging it)."""
    root = tmp_path_factory.mktemp("checkpoints")
    make_trainer(root, max_steps=4, save_strategy="steps", save_steps=1).train()
    return root / "run"


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


DAMAGE = {
    "killed before trainer_state.json": lambda c: (c / "trainer_state.json").unlink(),
    "truncated trainer_state.json": lambda c: truncate(c / "trainer_state.json"),
    "missing weights": lambda c: (c / "model.safetensors").unlink(),
    "truncated weights": lambda c: truncate(c / "model.safetensors", 0.9),
    "truncated weights header": lambda c: truncate(c / "model.safetensors", 0.0001),
    "truncated optimizer": lambda c: truncate(c / "optimizer.pt", 0.9),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_last_skips_an_incomplete_newest_checkpoint_with_a_warning(run_dir, tmp_path, damage, caplog):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert last_complete_checkpoint(run) == str(run / "checkpoint-4")
    DAMAGE[damage](run / "checkpoint-4")
    DAMAGE[damage](run / "checkpoint-3")
    assert checkpoint_problem(run / "checkpoint-4") is not None
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(run) == str(run / "checkpoint-2")
    assert f"skipping incomplete checkpoint {run / 'checkpoint-4'}" in caplog.text
    assert f"skipping incomplete checkpoint {run / 'checkpoint-3'}" in caplog.text


def test_resuming_from_the_last_complete_checkpoint_reaches_the_uninterrupted_weights(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "checkpoint-4" / "trainer_state.json").unlink()
    truncate(run / "checkpoint-3" / "model.safetensors")
    resumed = make_trainer(tmp_path / "resumed", max_steps=4)
    resumed.train(resume_from_checkpoint=last_complete_checkpoint(run))
    uninterrupted = make_trainer(tmp_path / "uninterrupted", max_steps=4)
    uninterrupted.train()
    assert resumed.state.global_step == 4
    for name, weight in uninterrupted.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], weight, msg=name)


def test_no_checkpoint_or_only_incomplete_ones_gives_none(tmp_path):
    assert last_complete_checkpoint(tmp_path / "absent") is None
    (tmp_path / "checkpoint-7").mkdir()
    assert last_complete_checkpoint(tmp_path) is None


def iostream_failure(*args, **kwargs):
    raise RuntimeError("basic_ios::clear: iostream error")


def test_a_save_failing_on_a_full_disk_raises_enospc_naming_the_checkpoint_folder(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    monkeypatch.setattr(torch, "save", iostream_failure)
    monkeypatch.setattr(training.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(OSError, match=r"No space left on device while saving into .*checkpoint-2") as error:
        trainer.train()
    assert error.value.errno == errno.ENOSPC
    assert "basic_ios::clear" in str(error.value)  # what torch said is kept, after the cause


def test_a_save_error_with_an_errno_is_reported_with_that_errno_and_the_folder(tmp_path, monkeypatch):
    def permission_denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    trainer = make_trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    monkeypatch.setattr(torch, "save", permission_denied)
    with pytest.raises(OSError, match="Permission denied while saving into .*checkpoint-2") as error:
        trainer.train()
    assert error.value.errno == errno.EACCES


def test_a_save_error_with_free_disk_space_is_raised_unchanged(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    monkeypatch.setattr(torch, "save", iostream_failure)
    with pytest.raises(RuntimeError, match="basic_ios::clear"):
        trainer.train()


def test_train_retrieval_resumes_last_from_the_newest_complete_checkpoint(tiny_synthetic_root, tmp_path, caplog):
    from conftest import TINY_TEXT_CLIP_VOCABULARY, tiny_hbi_config

    from hbi_hf import HBIForRetrieval
    from hbi_hf.training import HBIDataArguments, HBIModelArguments, HBITrainingArguments, train_retrieval

    torch.manual_seed(0)
    HBIForRetrieval(tiny_hbi_config(text_config=dict(TINY_TEXT_CLIP_VOCABULARY))).save_pretrained(tmp_path / "model")

    def run(max_steps, resume=None):
        args = HBITrainingArguments(
            output_dir=str(tmp_path / "run"), use_cpu=True, per_device_train_batch_size=2, max_steps=max_steps,
            save_strategy="steps", save_steps=1, report_to="none", disable_tqdm=True, do_train=True,
            resume_from_checkpoint=resume,
        )  # fmt: skip
        data_args = HBIDataArguments(dataset_name="synthetic", data_root=str(tiny_synthetic_root))
        train_retrieval(HBIModelArguments(model_name_or_path=str(tmp_path / "model")), data_args, args)
        return json.loads((tmp_path / "run" / "trainer_state.json").read_text())

    run(max_steps=2)
    truncate(tmp_path / "run" / "checkpoint-2" / "model.safetensors", 0.5)  # as a save cut short by a full disk
    first_saved = (tmp_path / "run" / "checkpoint-1" / "trainer_state.json").stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        state = run(max_steps=3, resume="last")
    assert f"skipping incomplete checkpoint {tmp_path / 'run' / 'checkpoint-2'}" in caplog.text
    assert state["global_step"] == 3
    # resumed after step 1 (checkpoint-1 not written again), and checkpoint-2 was saved anew, complete
    assert (tmp_path / "run" / "checkpoint-1" / "trainer_state.json").stat().st_mtime_ns == first_saved
    assert checkpoint_problem(tmp_path / "run" / "checkpoint-2") is None


def test_a_full_disk_while_writing_safetensors_weights_is_reported_as_enospc(tmp_path, monkeypatch):
    from safetensors import SafetensorError
    from transformers import modeling_utils

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    trainer = make_trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    monkeypatch.setattr(modeling_utils, "safe_save_file", disk_full)
    with pytest.raises(OSError, match=r"No space left on device while saving into .*checkpoint-2") as error:
        trainer.train()
    assert error.value.errno == errno.ENOSPC
