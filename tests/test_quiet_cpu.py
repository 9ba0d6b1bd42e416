"""What a CPU run prints is what matters: no warning about pinned memory without an accelerator, no deprecation
warning from wrapping a model with PEFT, and no missing-weights table when a task model starts from another task's
encoder, as `make demo-qa` does."""

import logging
import warnings

import pytest
import torch
from conftest import tiny_hbi_config
from torch.utils.data import Dataset

from hbi_hf import HBIForRetrieval, HBIForVideoQA
from hbi_hf.peft_utils import apply_lora
from hbi_hf.training import HBITrainer, HBITrainingArguments


class Rows(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": torch.tensor([float(index)])}


@pytest.mark.skipif(torch.accelerator.is_available(), reason="pinned memory is used where an accelerator exists")
def test_training_arguments_pin_no_memory_without_an_accelerator_and_the_dataloader_stays_quiet(tmp_path):
    arguments = HBITrainingArguments(output_dir=str(tmp_path), report_to="none", per_device_train_batch_size=2)
    assert arguments.dataloader_pin_memory is False  # even without --use_cpu
    trainer = HBITrainer(model=HBIForRetrieval(tiny_hbi_config()), args=arguments, train_dataset=Rows())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        next(iter(trainer.get_train_dataloader()))
    assert [str(w.message) for w in caught if "pin_memory" in str(w.message)] == []


def test_wrapping_an_hbi_model_with_lora_raises_no_deprecation_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        apply_lora(HBIForRetrieval(tiny_hbi_config()), r=2)


@pytest.fixture(scope="module")
def retrieval_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retrieval")
    torch.manual_seed(0)
    HBIForRetrieval(tiny_hbi_config()).save_pretrained(folder)
    return folder


def test_a_task_model_from_another_tasks_encoder_prints_no_missing_weights_table(retrieval_folder, caplog):
    answers = dict(id2label={0: "red", 1: "blue"}, label2id={"red": 0, "blue": 1})
    with caplog.at_level(logging.WARNING):
        HBIForVideoQA.from_pretrained(retrieval_folder, **answers)
    assert "MISSING" in caplog.text  # what make demo-qa printed before: the new head as missing weights
    caplog.clear()

    with caplog.at_level(logging.WARNING):
        model = HBIForVideoQA.from_pretrained_encoder(retrieval_folder, **answers)
    assert caplog.text == ""
    source = HBIForRetrieval.from_pretrained(retrieval_folder).state_dict()
    own = model.state_dict()
    copied = [key for key in own if key.startswith(("hbi.", "alignment."))]
    assert copied and all(torch.equal(own[key], source[key]) for key in copied)
    assert model.config.id2label == {0: "red", 1: "blue"} and any(key.startswith("qa_heads.") for key in own)


def test_an_encoder_of_other_shapes_is_refused(retrieval_folder):
    with pytest.raises(ValueError, match="does not fit HBIForVideoQA"):
        HBIForVideoQA.from_pretrained_encoder(retrieval_folder, projection_dim=16)
