"""The `hbi-hf` commands, run on arguments parsed and checked by [`hbi_hf_cli.parse_args`] (see that module for the
command line and why the parser lives outside this package). The index and explain modules are imported by the
command that needs them only (explain draws with matplotlib)."""

import argparse
import json
import os
import sys
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import asdict

from hbi_hf_cli import main

from .errors import HBIInputError


def _quiet_model_loading() -> None:
    """Hide transformers' "Loading weights" bar: `hbi-hf` shows one progress bar, `index`'s per-video bar."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def _run_index(args: argparse.Namespace) -> int:
    from transformers.utils import logging

    from .search_index import build_index

    show_progress = not args.no_progress and logging.is_progress_bar_enabled()  # HF_HUB_DISABLE_PROGRESS_BARS=1
    _quiet_model_loading()
    report = build_index(
        args.video_dir,
        args.out,
        args.model,
        batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        show_progress=show_progress,
        lock_timeout=args.lock_timeout,
    )
    if report.model_changed:
        print("the model differs from the index's (weights, config or processor): every video was re-encoded")
    for shard in report.damaged_shards:
        print(f"  {shard.kind} shard: {shard.path}: {shard.reason}; its videos were re-encoded")
    for failure in report.failed:
        print(f"  failed ({failure.kind}): {failure.path}: {failure.reason}")
    totals = ", ".join(f"{kind} {count}" for kind, count in sorted(report.failure_totals().items()))
    print(
        f"{args.out}: {len(report.added)} added, {len(report.updated)} re-encoded, {len(report.repaired)} repaired, "
        f"{len(report.removed)} removed, {report.unchanged} unchanged, {len(report.failed)} failed"
        + (f" ({totals})" if totals else "")
        + f", {len(report.dropped)} dropped (were in the index, fail now)"
    )
    return 0


class _UndecodableQuery(Exception):
    """A line of a queries file that is not UTF-8 text."""

    def __init__(self, number: int, line: bytes):
        self.number, self.line = number, line


def _queries(path: str, skipped: list[int]) -> Iterator[tuple[int, str | _UndecodableQuery]]:
    """`(line number, query)` for the non-empty lines of `path` (`-`: standard input, read as it comes), stripped;
    a line that is not UTF-8 text comes as an [`_UndecodableQuery`] instead of its text. The numbers of the empty or
    whitespace-only lines, which have no query, are appended to `skipped`."""
    handle = sys.stdin.buffer if path == "-" else open(path, "rb")
    try:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield number, _UndecodableQuery(number, raw.rstrip(b"\r\n"))
                continue
            if line.strip():
                yield number, line.strip()
            else:
                skipped.append(number)
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def _run_search(args: argparse.Namespace) -> int:
    from .search_index import HBIVideoSearcher

    _quiet_model_loading()
    searcher = HBIVideoSearcher(args.index, args.model)
    if args.queries_file is not None:
        skipped: list[int] = []
        undecodable: list[int] = []
        for number, query in _queries(args.queries_file, skipped):
            if isinstance(query, _UndecodableQuery):
                reason = f"line {number} of {args.queries_file} is not UTF-8 text ({query.line[:60]!r})"
                print(f"hbi-hf search: error: {reason}; not searched", file=sys.stderr)
                print(json.dumps({"query": None, "line": number, "error": reason}), flush=True)
                undecodable.append(number)
                continue
            start = time.perf_counter()
            hits = searcher.search(query, top_k=args.top_k, shortlist=args.shortlist)
            elapsed_ms = (time.perf_counter() - start) * 1000
            line = {"query": query, "hits": [asdict(hit) for hit in hits], "milliseconds": round(elapsed_ms, 2)}
            print(json.dumps(line), flush=True)
        for what, numbers in (("empty", skipped), ("not UTF-8", undecodable)):
            if numbers:
                shown = ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")
                print(
                    f"hbi-hf search: skipped {len(numbers)} {what} line(s) of {args.queries_file} (line {shown})",
                    file=sys.stderr,
                )
        return 1 if undecodable else 0
    hits = searcher.search(args.query, top_k=args.top_k, shortlist=args.shortlist)
    if args.json:
        print(json.dumps([asdict(hit) for hit in hits], indent=1))
        return 0
    print(_hit_table(hits))
    return 0


def _display_width(text: str) -> int:
    """Terminal columns of `text`: East Asian wide and full-width characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text
    )


def _hit_table(hits: list) -> str:
    """`rank  file  score` lines of `hbi-hf search`, the score column aligned in a terminal whatever the file names'
    scripts (a name with CJK characters is wider than its length)."""
    width = max([_display_width(hit.path) for hit in hits] + [4])
    lines = [f"{'rank':>4}  {'file'}{' ' * (width - 4)}  score"]
    for hit in hits:
        padding = " " * (width - _display_width(hit.path))
        lines.append(f"{hit.rank:>4}  {hit.path}{padding}  {hit.score:.4f}")
    return "\n".join(lines)


def _run_explain(args: argparse.Namespace) -> int:
    from .explain import explain_video, plot_explanation

    _quiet_model_loading()
    explanation = explain_video(
        args.video,
        args.caption,
        args.model,
        args.estimator,
        teacher=args.teacher,
        num_samples=args.num_samples,
        seed=args.seed,
    )
    print(plot_explanation(explanation, args.out))
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    from transformers.utils import logging

    try:
        from .serve import serve
    except ImportError as error:
        raise HBIInputError(
            f'`hbi-hf serve` needs the serve extra ({error.name} is missing): pip install "hbi-hf[serve]"'
        ) from error

    logging.disable_progress_bar()
    print(f"loading {args.index} ...", flush=True)
    serve(
        args.index,
        args.model,
        host=args.host,
        port=args.port,
        video_root=args.videos,
        top_k=args.top_k,
        shortlist=args.shortlist,
        in_memory=not args.read_per_query,
        on_ready=lambda url: print(f"serving {args.index} on {url} (Ctrl-C stops)", flush=True),
    )
    return 0


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command. The errors the package raises on purpose about the user's input, an
    [`~hbi_hf.errors.HBIInputError`] (a damaged or empty index, another model, an index without `--model`, an empty
    query, a never-trained estimator, an undecodable video, ...) or an `OSError` (no such folder, a folder this package
    did not create, a held lock), are printed as `hbi-hf COMMAND: error: ...` with exit status 1; a reader of standard
    output that left early (`| head`) ends the command quietly with status 141, as SIGPIPE would; Ctrl-C prints one
    line (for `index`: how many videos were saved, and to run the same command to continue) with exit status 130;
    any other exception is a bug and keeps its traceback."""
    from .search_index import HBIIndexInterrupted

    runners = {"index": _run_index, "search": _run_search, "explain": _run_explain, "serve": _run_serve}
    try:
        return runners[args.command](args)
    except BrokenPipeError:  # the reader of standard output left (`hbi-hf search ... | head -1`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141
    except (OSError, HBIInputError) as error:
        print(f"hbi-hf {args.command}: error: {error}", file=sys.stderr)
        return 1
    except HBIIndexInterrupted as interrupt:
        print(f"hbi-hf index: {interrupt}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        before = " before encoding started: run the same command to continue" if args.command == "index" else ""
        print(f"hbi-hf {args.command}: interrupted{before}", file=sys.stderr)
        return 130


__all__ = ["main", "run_command"]

if __name__ == "__main__":
    sys.exit(main())
