"""One process of the 2-process CPU run of tests/test_distributed.py (launched with torchrun, gloo backend).

Writes, into the output folder given as the only argument: the initial weights (rank 0), each rank's loss parts on
its half of a global batch, each rank's retrieval metrics of a sharded evaluation, and a marker per finished rank
after a short `HBITrainer` run that saves a checkpoint."""

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from retrieval_standins import StandInCollator, StandInProcessor, retrieval_rows, tiny_config

from hbi_hf import HBIForRetrieval
from hbi_hf.retrieval_evaluation import evaluate_retrieval
from hbi_hf.training import HBITrainer, HBITrainingArguments

GLOBAL_BATCH = 8


def main(output_dir: Path) -> None:
    state = PartialState(cpu=True)
    rank, world_size = state.process_index, state.num_processes
    torch.manual_seed(0)
    model = HBIForRetrieval(tiny_config())
    if state.is_main_process:
        model.save_pretrained(output_dir / "initial")

    local_size = GLOBAL_BATCH // world_size
    rows = list(retrieval_rows(GLOBAL_BATCH))[rank * local_size : (rank + 1) * local_size]
    model.eval()
    with torch.no_grad():
        output = model(**StandInCollator(StandInProcessor())(rows), return_loss=True)
    parts = {name: float(output[name]) for name in ("loss", "contrastive_loss", "banzhaf_loss", "distillation_loss")}
    (output_dir / f"loss_rank{rank}.json").write_text(json.dumps(parts))

    metrics = evaluate_retrieval(
        model, retrieval_rows(5, captions_per_video=2), StandInProcessor(), batch_size=2, chunk_size=3, state=state
    )
    (output_dir / f"metrics_rank{rank}.json").write_text(json.dumps(metrics))

    processor = StandInProcessor()
    trainer = HBITrainer(
        model=model,
        args=HBITrainingArguments(
            output_dir=str(output_dir / "run"),
            use_cpu=True,
            per_device_train_batch_size=local_size,
            max_steps=2,
            save_strategy="steps",
            save_steps=2,
            logging_steps=1,
            report_to="none",
            disable_tqdm=True,
            learning_rate=1e-3,
            seed=0,
        ),
        data_collator=StandInCollator(processor),
        train_dataset=retrieval_rows(GLOBAL_BATCH),
        processing_class=processor,
    )
    trainer.train()
    (output_dir / f"done_rank{rank}.json").write_text(json.dumps({"global_step": trainer.state.global_step}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
