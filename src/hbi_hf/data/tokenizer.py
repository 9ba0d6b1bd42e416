"""The real CLIP tokenizer, built offline from the BPE file that the `clip-anytorch` wheel bundles.

OpenAI's CLIP vocabulary is: the 256 byte symbols, the same symbols with the end-of-word marker `</w>`, the first
48,894 BPE merges joined into symbols, then `<|startoftext|>` and `<|endoftext|>` (49,408 ids). Built this way, the
tokenizer gives exactly the ids of `openai/clip-vit-base-patch32` ("a cat" -> 49406, 320, 2368, 49407) with no
download.
"""

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

CLIP_BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
CLIP_NUM_MERGES = 49152 - 256 - 2
CLIP_BOS_TOKEN = "<|startoftext|>"
CLIP_EOS_TOKEN = "<|endoftext|>"


def find_clip_bpe_file() -> Path:
    """Locates OpenAI's BPE merges file inside the installed `clip-anytorch` wheel, without importing `clip`.

    Importing `clip` would import torchvision; only the package's location is looked up.
    """
    spec = importlib.util.find_spec("clip")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / CLIP_BPE_FILE_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"The CLIP BPE file {CLIP_BPE_FILE_NAME} was not found: install it with "
        "`pip install --no-deps clip-anytorch==2.6.0` (the wheel bundles it), or load a tokenizer with "
        "`CLIPTokenizer.from_pretrained('openai/clip-vit-base-patch32')`."
    )


def bytes_to_unicode() -> dict[int, str]:
    """The byte-level alphabet of GPT-2 / CLIP: every byte maps to a printable unicode character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(c) for c in characters], strict=True))


@lru_cache(maxsize=1)
def _clip_vocabulary_and_merges(bpe_file: Path) -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    with gzip.open(bpe_file, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : CLIP_NUM_MERGES + 1])
    symbols = list(bytes_to_unicode().values())
    symbols += [symbol + "</w>" for symbol in symbols]
    symbols += ["".join(merge) for merge in merges]
    symbols += [CLIP_BOS_TOKEN, CLIP_EOS_TOKEN]
    return {symbol: index for index, symbol in enumerate(symbols)}, merges


def build_clip_tokenizer(bpe_file: str | Path | None = None) -> CLIPTokenizer:
    """Builds OpenAI's CLIP tokenizer (49,408 ids) with no network access.

    Args:
        bpe_file (`str` or `Path`, *optional*):
            The gzipped BPE merges file (`bpe_simple_vocab_16e6.txt.gz`). Defaults to the copy in `clip-anytorch`.

    Returns:
        `CLIPTokenizer`: padding with `<|endoftext|>` as CLIP does.
    """
    bpe_file = Path(bpe_file) if bpe_file is not None else find_clip_bpe_file()
    vocabulary, merges = _clip_vocabulary_and_merges(bpe_file)
    return CLIPTokenizer(
        vocab=dict(vocabulary),
        merges=list(merges),
        unk_token=CLIP_EOS_TOKEN,
        bos_token=CLIP_BOS_TOKEN,
        eos_token=CLIP_EOS_TOKEN,
        pad_token=CLIP_EOS_TOKEN,
    )


__all__ = ["build_clip_tokenizer", "find_clip_bpe_file"]
