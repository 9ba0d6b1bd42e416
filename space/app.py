"""The app a Hugging Face Space runs: `hbi-hf serve` over the index, model and videos stored in the Space.

The Space holds this file, the hbi-hf source (`hbi-hf/`), an index folder written by `hbi-hf index` (`index/`), the
model folder with its processor (`model/`) and the indexed videos (`videos/`); the environment variables HBI_INDEX,
HBI_MODEL and HBI_VIDEOS name other folders. It listens on 0.0.0.0 (the Space's proxy in front of it) at $PORT (7860,
the port a Space expects, by default). The index records the absolute folders of the machine it was built on: the
model is checked by its fingerprint (its files, not its path) and the videos are taken from HBI_VIDEOS.
"""

import os

from hbi_hf.serve import serve


def main() -> None:
    serve(
        os.environ.get("HBI_INDEX", "index"),
        model_name_or_path=os.environ.get("HBI_MODEL", "model"),
        video_root=os.environ.get("HBI_VIDEOS", "videos"),
        host="0.0.0.0",
        port=int(os.environ.get("PORT", "7860")),
        on_ready=lambda url: print(f"serving on {url}", flush=True),
    )


if __name__ == "__main__":
    main()
