"""`hbi-hf`: index a folder of videos with a trained HBI model, search it with text, explain a match, serve a search page.

hbi-hf index VIDEO_DIR --model MODEL --out INDEX
hbi-hf search INDEX "a query" --top-k 10 [--shortlist N] [--json]
hbi-hf search INDEX --queries-file FILE     (one query per line, `-` for stdin; one JSON line per query)
hbi-hf explain VIDEO "a caption" --model MODEL --out figure.png [--teacher exact|monte_carlo|estimator] [--estimator PATH]
hbi-hf serve INDEX [--host 127.0.0.1] [--port 7860]   (a search page and JSON API; needs `pip install "hbi-hf[serve]"`)

This module parses and checks the arguments only, and lives outside the `hbi_hf` package on purpose: importing
`hbi_hf` registers the HBI classes with the transformers Auto classes, which imports torch and transformers (seconds).
`hbi-hf --help` and argument errors answer without them; a command imports `hbi_hf.cli` once its arguments are valid.
"""

import argparse
from collections.abc import Callable
from pathlib import Path

DEFAULT_SHORTLIST = 1000


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}; got {value}")
        return value

    return parse


def _port(text: str) -> int:
    """A TCP port number, 0 to 65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535; got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535; got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0; got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0; got {text}")
    return value


def _existing_folder(what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not Path(text).expanduser().is_dir():
            raise argparse.ArgumentTypeError(f"no such folder: {text!r} ({what})")
        return text

    return parse


def _existing_file(text: str) -> str:
    if text != "-" and not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def _torch_device(text: str) -> str:
    """A torch device string whose device this machine has. `cpu` answers without importing torch; any other device
    imports it (the command would anyway)."""
    if text == "cpu":
        return text
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (e.g. cpu, cuda, cuda:1, mps)") from None
    backend = getattr(torch, device.type, None) if device.type != "mps" else torch.backends.mps
    available = getattr(backend, "is_available", None)
    if available is not None and not available():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not available on this machine (torch finds no {device.type} device)"
        )
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count()} {device.type} device(s)")
    return text


FIGURE_FORMATS = ("png", "pdf", "svg")


def _figure_file(text: str) -> str:
    path = Path(text).expanduser()
    if path.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        raise argparse.ArgumentTypeError(
            f"the file name must end in .{', .'.join(FIGURE_FORMATS)} (the figure's format); got {text!r}"
        )
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {str(path.parent)!r} (the folder of {text!r})")
    return text


def _utf8_text(what: str, text: str) -> str:
    """`text` if it is UTF-8 text. Bytes of the command line that are not UTF-8 reach Python as lone surrogates,
    which no tokenizer takes: refused, naming the bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        raise argparse.ArgumentTypeError(f"the {what} is not UTF-8 text: {raw!r}; give it in UTF-8") from None
    return text


def _query(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"the query is empty: give some words to search for; got {text!r}")
    return _utf8_text("query", text)


def _caption(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"the caption is empty: give the words to explain; got {text!r}")
    return _utf8_text("caption", text)


MODEL_FOLDER = _existing_folder(
    "expected a folder written by save_pretrained holding the model and its processor, or an index folder"
)


def build_parser() -> argparse.ArgumentParser:
    return _build_parsers()[0]


def _build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The `hbi-hf` parser and its command parsers by name."""
    parser = argparse.ArgumentParser(prog="hbi-hf", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="encode every video of a folder into a searchable index")
    index.add_argument("video_dir", type=_existing_folder("the videos to index"), help="folder of videos (recursive)")
    index.add_argument(
        "--model",
        type=MODEL_FOLDER,
        help="saved HBI model folder with its processor, or an index folder (its model); default: the index's model",
    )
    index.add_argument("--out", required=True, help="index folder (created, or updated incrementally)")
    index.add_argument(
        "--batch-size", type=_int_at_least(1), default=8, help="videos per forward pass (>= 1; default: %(default)s)"
    )
    index.add_argument(
        "--checkpoint-every",
        type=_int_at_least(1),
        default=64,
        help="videos per saved shard (>= 1; default: %(default)s)",
    )
    index.add_argument(
        "--device",
        type=_torch_device,
        default="cpu",
        help="torch device of the model, e.g. cuda or cuda:1; it must exist on this machine (default: %(default)s)",
    )
    index.add_argument(
        "--lock-timeout",
        type=_non_negative_float,
        help="seconds to wait while another `hbi-hf index` run updates the same index (default: wait until it ends)",
    )
    index.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the per-video progress bar (also hidden with HF_HUB_DISABLE_PROGRESS_BARS=1); transformers' "
        "weight-loading bar is never shown",
    )

    search = commands.add_parser("search", help="rank the indexed videos for a text query")
    search.add_argument("index", type=_existing_folder("an index written by `hbi-hf index`"), help="index folder")
    search.add_argument("query", nargs="?", type=_query, help="the text to search for (not empty)")
    search.add_argument(
        "--queries-file",
        type=_existing_file,
        help="search each line of FILE (`-`: standard input, answered line by line) in one process; prints one JSON "
        "line per query; empty lines are skipped and counted on standard error",
    )
    search.add_argument(
        "--top-k", type=_int_at_least(1), default=10, help="results to show (>= 1; default: %(default)s)"
    )
    search.add_argument(
        "--shortlist",
        type=_int_at_least(0),
        default=DEFAULT_SHORTLIST,
        help="videos kept by the global-embedding pre-selection before full HBI scoring; 0 scores every video "
        "(default: %(default)s)",
    )
    search.add_argument(
        "--model",
        type=MODEL_FOLDER,
        help="model folder, e.g. the model's new place after it moved (default: the one stored in the index; it must "
        "be the same model)",
    )
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")

    explain = commands.add_parser(
        "explain",
        help="draw the Banzhaf interactions of a video and caption (word x frame, phrase x clip, paragraph x segment)",
    )
    explain.add_argument("video", type=_existing_file, help="video file")
    explain.add_argument("caption", type=_caption, help="caption to explain (not empty)")
    explain.add_argument(
        "--model",
        type=MODEL_FOLDER,
        required=True,
        help="saved HBI model folder with its processor, or an index folder (the model it was built with)",
    )
    explain.add_argument(
        "--out", type=_figure_file, required=True, help="figure file: .png, .pdf or .svg, in an existing folder"
    )
    explain.add_argument(
        "--teacher",
        choices=("exact", "monte_carlo", "estimator"),
        help="where the interactions come from, as banzhaf_teacher in training: exact, the reference (the exact "
        "interactions of the model's game at every level; the default without --estimator), monte_carlo "
        "(--num-samples sampled coalitions per pair), or estimator (--estimator PATH, else the model's own trained "
        "teacher)",
    )
    explain.add_argument(
        "--estimator",
        type=_existing_folder("a saved HBIBanzhafEstimator"),
        help="a saved, trained HBIBanzhafEstimator (implies --teacher estimator; a never-trained one is refused)",
    )
    explain.add_argument(
        "--num-samples",
        type=_int_at_least(1),
        help="Monte-Carlo coalitions per (word, frame) pair of --teacher monte_carlo (default: 1000)",
    )
    explain.add_argument("--seed", type=int, default=0, help="seed of the Monte-Carlo samples (default: %(default)s)")

    serve = commands.add_parser(
        "serve", help="serve a search page and a JSON API over an index (the model is loaded once)"
    )
    serve.add_argument("index", type=_existing_folder("an index written by `hbi-hf index`"), help="index folder")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 opens it to the network)",
    )
    serve.add_argument(
        "--port", type=_port, default=7860, help="port, 0 to 65535; 0 lets the system choose (default: %(default)s)"
    )
    serve.add_argument("--model", type=MODEL_FOLDER, help="model folder (default: the one stored in the index)")
    serve.add_argument(
        "--videos",
        type=_existing_folder("the indexed videos"),
        help="the indexed video folder, if it moved since indexing (default: the one stored in the index)",
    )
    serve.add_argument(
        "--top-k", type=_int_at_least(1), default=10, help="results per query (>= 1; default: %(default)s)"
    )
    serve.add_argument(
        "--shortlist",
        type=_int_at_least(0),
        default=DEFAULT_SHORTLIST,
        help="videos kept by the global-embedding pre-selection before full HBI scoring; 0 scores every video "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--read-per-query",
        action="store_true",
        help="read the shortlisted videos' features from the index for each query (memory bounded as for `search`) "
        "instead of holding every video's features in memory (faster; about 43 KB a video at ViT-B/32 shapes)",
    )
    return parser, {"index": index, "search": search, "explain": explain, "serve": serve}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the arguments; exits (status 2) with `hbi-hf COMMAND: error: ...` naming the flag on a bad
    value."""
    parser, commands = _build_parsers()
    args = parser.parse_args(argv)
    if args.command == "search" and (args.query is None) == (args.queries_file is None):
        commands["search"].error("give either a QUERY or --queries-file, not both or neither")
    if args.command == "explain" and args.teacher in ("exact", "monte_carlo") and args.estimator is not None:
        commands["explain"].error(f"--teacher {args.teacher} takes no --estimator (it implies --teacher estimator)")
    if args.command == "explain" and args.num_samples is not None and args.teacher != "monte_carlo":
        commands["explain"].error("--num-samples is for --teacher monte_carlo (the exact values need no samples)")
    if args.command == "explain" and args.num_samples is None:
        args.num_samples = 1000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hbi_hf.cli import run_command

    return run_command(args)


__all__ = ["build_parser", "main", "parse_args"]
