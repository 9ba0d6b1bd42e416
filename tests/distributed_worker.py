"""One process of the multi-process runs of tests/test_distributed.py, started by `torchrun` or `accelerate launch`
with the command line of `scripts/train_retrieval.py`.

It runs what the script runs (`HfArgumentParser` over the three argument classes, then `train_retrieval`), with two
additions for the test: when training ends, each process writes its final weights to
`<output_dir>/weights_rank<process index>.safetensors`, so that the test can check that all processes hold the same
model (the script itself saves only the main process's); each process writes the metrics its evaluation returned to
`<output_dir>/metrics_rank<process index>.json`."""

import json
from pathlib import Path

from safetensors.torch import save_file
from transformers import HfArgumentParser

from hbi_hf import training


class HBITrainerWritingEveryRanksResults(training.HBITrainer):
    def train(self, *args, **kwargs):
        result = super().train(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        weights = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
        save_file(weights, Path(self.args.output_dir) / f"weights_rank{self.args.process_index}.safetensors")
        return result

    def evaluate(self, *args, **kwargs):
        metrics = super().evaluate(*args, **kwargs)
        (Path(self.args.output_dir) / f"metrics_rank{self.args.process_index}.json").write_text(json.dumps(metrics))
        return metrics


def main() -> None:
    parser = HfArgumentParser((training.HBIModelArguments, training.HBIDataArguments, training.HBITrainingArguments))
    training.HBITrainer = HBITrainerWritingEveryRanksResults  # what train_retrieval builds its trainer from
    training.train_retrieval(*parser.parse_args_into_dataclasses())


if __name__ == "__main__":
    main()
