"""One process of the 2-process CPU run of `scripts/evaluate_retrieval.py` in tests/test_distributed_evaluation.py
(started by `torchrun`). It runs the script as it is, recording for the test which videos this process decoded
(`<record_dir>/decoded_rank<RANK>.json`) and which processes wrote the results (`<record_dir>/writer_rank<RANK>`).

Usage: evaluate_worker.py RECORD_DIR <the script's arguments>"""

import json
import os
import runpy
import sys
from pathlib import Path

from hbi_hf import processing_hbi, training

SCRIPT = Path(__file__).parent.parent / "scripts" / "evaluate_retrieval.py"


def main() -> None:
    record_dir, rank = Path(sys.argv[1]), os.environ["RANK"]
    decoded = []
    process = processing_hbi.HBIProcessor.__call__
    write_eval_results = training.write_eval_results

    def recording_call(self, text=None, videos=None, **kwargs):
        decoded.extend(str(video) for video in videos or [])
        return process(self, text=text, videos=videos, **kwargs)

    def recording_write(*args, **kwargs):
        (record_dir / f"writer_rank{rank}").write_text("")
        return write_eval_results(*args, **kwargs)

    processing_hbi.HBIProcessor.__call__ = recording_call
    training.write_eval_results = recording_write
    sys.argv = [str(SCRIPT), *sys.argv[2:]]
    runpy.run_path(str(SCRIPT), run_name="__main__")
    (record_dir / f"decoded_rank{rank}.json").write_text(json.dumps(decoded))


if __name__ == "__main__":
    main()
