"""Pre-train the miniature CLIP towers contrastively on captioned single frames of synthetic scenes outside the
retrieval splits (hbi_hf.pretraining), or find them in the cache; prints the folder, which
`HBIForRetrieval.from_clip(folder)` loads like a real CLIP. `make demo` and `make ablation` do this themselves.

    python scripts/pretrain_towers.py                      # the demo's towers, in $HBI_HF_CACHE/pretrained/
    python scripts/pretrain_towers.py --folder my-towers --num_steps 800
"""

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hbi_hf.pretraining import RECIPE_FILE, HBIPretrainingArguments, pretrained_towers


@dataclass
class HBITowersFolderArguments:
    folder: str | None = field(
        default=None, metadata={"help": "Where to keep the towers (default: a folder per recipe in the cache)."}
    )


def main() -> None:
    parser = HfArgumentParser((HBIPretrainingArguments, HBITowersFolderArguments))
    args, where = parser.parse_args_into_dataclasses()
    try:
        folder = pretrained_towers(args, where.folder)
    except FileExistsError as error:
        parser.error(str(error))
    print(folder)
    print(json.loads((folder / RECIPE_FILE).read_text(encoding="utf-8"))["figures"])


if __name__ == "__main__":
    main()
