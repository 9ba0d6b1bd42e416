"""`hbi-hf serve INDEX`: a search page and a JSON API over an index, with the model loaded once.

The app is a small ASGI application (Starlette, run by uvicorn; the `serve` extra: `pip install "hbi-hf[serve]"`):

* `GET /`: the page (a query box; ranked hits with a thumbnail at the best-matching frame, the score and the matched
  span; a player that starts at that span; for any hit its explain view, words x frames and the action and event
  levels);
* `GET /api/search?q=QUERY&k=10`: `{"query", "hits": [{"rank", "path", "score", "frame", "start", "end", "video_url",
  "thumbnail_url"}], "milliseconds"}`;
* `GET /api/explain?q=QUERY&path=PATH`: the interaction values of the query and an indexed video
  ([`~hbi_hf.explain.explanation_to_dict`]); `GET /api/explain.png?q=...&path=...`: the same as a figure;
* `GET /videos/PATH` (with HTTP ranges, for the player) and `GET /thumbnails/PATH?frame=K`: an indexed video and one
  of its sampled frames as JPEG.

Only indexed videos are served, by their path in the index: a request names a path of the manifest, never a file
name the server would open as given, and the file it resolves to (symbolic links followed) must lie inside the video
folder. Anything else is a 404, whatever its encoding. Errors about the input (an empty query, an undecodable video)
come back as `{"error": MESSAGE}` with a 4xx status, which the page shows; an unexpected error is logged with its
traceback on the server and answered with a one-line message.
"""

import functools
import io
import os
import socket
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
from transformers.utils import logging

from .errors import HBIInputError
from .search_index import HBIVideoSearcher, rank_videos
from .video_processing_hbi import sample_frame_indices

logger = logging.get_logger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_QUERY_CHARACTERS = 1000
"""A longer query is refused (the model reads its first `max_words` tokens anyway)."""
THUMBNAIL_WIDTH = 240
"""Thumbnails are scaled to this width in pixels (their height keeps the aspect ratio)."""


class HBINotServedError(HBIInputError):
    """The requested file is not an indexed video inside the video folder (the server answers 404)."""


def _utf8_name(path: str) -> str:
    """`path` as UTF-8 text: the bytes of a file name that is not UTF-8 (kept by Python as surrogate escapes, which
    neither a URL nor a JSON answer can encode) become U+FFFD."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass
class HBIServedHit:
    r"""
    One ranked video with where it matches best.

    Args:
        rank (`int`), path (`str`): the path relative to the video folder, as in the index. score (`float`): the HBI
            score ([`HBIModel.score`]).
        frame (`int`): the sampled frame (0-based, among the frames the model saw) that contributes most to the
            video-to-text side of the entity-level score: `argmax_f w_f max_w s_wf` (Eq. 12's frame weights w_f and
            word x frame cosines s_wf).
        first_frame (`int`), last_frame (`int`): the run of consecutive sampled frames around `frame` that the
            action level merged into the same clip.
        start (`float`, *optional*), end (`float`, *optional*): that run in seconds from the start of the video
            (`end`: the time of the next sampled frame, or the end of the video); `None` when the file gives no frame
            rate.
        video_url (`str`, *optional*), thumbnail_url (`str`, *optional*): where the server serves the video and the
            thumbnail of `frame`; `None` for a video it does not serve (a symbolic link out of the video folder, a
            file gone since indexing, a file name that is not UTF-8: `path` then shows U+FFFD for its undecodable
            bytes).
    """

    rank: int
    path: str
    score: float
    frame: int
    first_frame: int
    last_frame: int
    start: float | None
    end: float | None
    video_url: str | None
    thumbnail_url: str | None


@dataclass
class HBIVideoTiming:
    """The times (seconds) of the frames the processor samples from a video, and the video's duration."""

    frame_times: list[float] | None
    duration: float | None


class HBISearchService:
    r"""
    An index with its model, processor and features loaded once, answering searches with the best-matching span of
    each hit, explanations, thumbnails, and the path checks of the served files. Calls into the model are serialised
    (one at a time).

    Args:
        index_dir (`str` or `os.PathLike`): an index written by `hbi-hf index`.
        model_name_or_path (`str`, *optional*): the model folder (default: the index's; it must have the index's
            fingerprint).
        video_root (`str`, *optional*): the indexed video folder, when it moved since indexing (default: the
            index's).
        shortlist (`int`, *optional*, defaults to 1000): see [`~hbi_hf.search_index.rank_videos`].
        in_memory (`bool`, *optional*, defaults to `True`): hold every video's features in memory (read once at
            start-up; about 43 KB a video at ViT-B/32 shapes) instead of reading the shortlisted rows from the shards
            for each query, as `hbi-hf search` does to bound its memory.

    Raises:
        See [`~hbi_hf.search_index.HBIVideoSearcher`]; `NotADirectoryError`: no such video folder.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike,
        model_name_or_path: str | os.PathLike | None = None,
        video_root: str | os.PathLike | None = None,
        shortlist: int = 1000,
        in_memory: bool = True,
    ):
        self.searcher = HBIVideoSearcher(index_dir, model_name_or_path)
        # rank_videos reads a gallery by its global embeddings and by rows: HBIVideoFeatures in memory serve both
        self.gallery = self.searcher.index.features() if in_memory else self.searcher.features
        self.video_root = Path(video_root or self.searcher.index.video_root).resolve()
        if not self.video_root.is_dir():
            raise NotADirectoryError(
                f"the indexed video folder {self.video_root} does not exist (moved? give its new place with --videos)"
            )
        self.shortlist = shortlist
        self.positions = {path: position for position, path in enumerate(self.searcher.paths)}
        self.lock = threading.Lock()

    @property
    def model(self):
        return self.searcher.model

    @property
    def processor(self):
        return self.searcher.processor

    # -- files ------------------------------------------------------------------------------------------------------

    def resolve_video(self, path: str) -> Path:
        """
        The file of the indexed video `path` (relative to the video folder, as in the index).

        Raises:
            [`HBINotServedError`]: `path` is not a path of the index, or its file (symbolic links followed) lies
                outside the video folder.
        """
        if path not in self.positions:
            raise HBINotServedError(f"not an indexed video: {path!r}")
        resolved = (self.video_root / path).resolve()
        if not resolved.is_relative_to(self.video_root):
            raise HBINotServedError(f"{path!r} leads out of the video folder (a symbolic link?): it is not served")
        if not resolved.is_file():
            raise HBINotServedError(f"{path!r}: the file is gone since it was indexed")
        return resolved

    def _served(self, path: str) -> bool:
        try:
            self.resolve_video(path)
        except HBINotServedError:
            return False
        return True

    def timing(self, path: str, frame_count: int | None = None) -> HBIVideoTiming:
        """The sampled frames' times of an indexed video (from its container's frame rate and frame count, read
        without decoding; cached per file version). `frame_count`: the frames the model saw, when known (else read
        from the index)."""
        file = self.resolve_video(path)
        stat = file.stat()
        count = self._frame_count(path) if frame_count is None else frame_count
        return _video_timing(str(file), stat.st_size, stat.st_mtime_ns, self._sampling(), count)

    def _frame_count(self, path: str) -> int:
        """The frames the model saw of an indexed video (its valid entity-level tokens, one row read from the
        index)."""
        features = self.gallery[torch.tensor([self.positions[path]])]
        return int(features.level_masks[0][0].sum())

    def _sampling(self) -> tuple[int, str, float]:
        video_processor = getattr(self.processor, "video_processor", None)
        num_frames = getattr(video_processor, "num_frames", None) or self.model.config.num_frames
        return (
            int(num_frames),
            getattr(video_processor, "sampling_mode", "uniform") or "uniform",
            float(getattr(video_processor, "sampling_fps", 1.0) or 1.0),
        )

    def thumbnail(self, path: str, frame: int) -> bytes:
        """The `frame`-th sampled frame of an indexed video (the frame the model saw, chosen by the processor's
        sampling rule and decoded as a player shows it: [`~hbi_hf.video_processing_hbi.read_video`]) as a JPEG
        `THUMBNAIL_WIDTH` pixels wide.

        Raises:
            [`HBINotServedError`]; [`HBIInputError`]: `frame` is not a sampled frame, or the video cannot be decoded.
        """
        file = self.resolve_video(path)
        stat = file.stat()
        count = self._frame_count(path)
        if not 0 <= frame < count:
            raise HBIInputError(f"{path}: frame {frame} is not one of its {count} sampled frames")
        return _thumbnail(str(file), stat.st_size, stat.st_mtime_ns, self._sampling(), frame)

    # -- search and explain -----------------------------------------------------------------------------------------

    def search(self, query: str, top_k: int = 10) -> list[HBIServedHit]:
        """
        Rank the indexed videos for `query` ([`~hbi_hf.search_index.rank_videos`], two-stage with `shortlist`) and
        find each hit's best-matching frame and span.

        Raises:
            [`HBIInputError`]: an empty query, one longer than `MAX_QUERY_CHARACTERS`, `top_k < 1`.
        """
        query = _check_query(query)
        if top_k < 1:
            raise HBIInputError(f"k must be >= 1; got {top_k}")
        with self.lock, torch.no_grad():
            text_features = self.encode_query(query).map(lambda t: t.cpu())
            scores, indices = rank_videos(self.model, text_features, self.gallery, top_k, self.shortlist)
            hit_features = self.gallery[indices]
            frames = self.model.matched_token_similarity(
                text_features[torch.zeros(len(indices), dtype=torch.long)], hit_features, 0
            )
        hits = []
        for rank, (score, index) in enumerate(zip(scores.tolist(), indices.tolist()), start=1):
            row = rank - 1
            frame, first, last = _best_span(
                frames[row],
                text_features.level_masks[0][0],
                hit_features.level_masks[0][row],
                hit_features.level_weight_logits[0][row],
                hit_features.cluster_assignments[0][row],
            )
            path = self.searcher.paths[index]
            shown = _utf8_name(path)
            start = end = video_url = thumbnail_url = None
            if shown == path and self._served(path):
                video_url, thumbnail_url = f"/videos/{quote(path)}", f"/thumbnails/{quote(path)}?frame={frame}"
                try:
                    timing = self.timing(path, int(hit_features.level_masks[0][row].sum()))
                except HBIInputError as error:
                    logger.warning("%s: no frame times (%s)", path, error)
                    timing = HBIVideoTiming(None, None)
                if timing.frame_times and last < len(timing.frame_times):
                    start = timing.frame_times[first]
                    following = timing.frame_times[last + 1] if last + 1 < len(timing.frame_times) else None
                    end = following if following is not None else timing.duration
            hits.append(
                HBIServedHit(rank, shown, float(score), frame, first, last, start, end, video_url, thumbnail_url)
            )
        return hits

    @torch.no_grad()
    def encode_query(self, query: str):
        """The query's [`HBITextFeatures`], encoded at its own length: the processor pads to `max_words`, and the
        padding is cut before the text tower (whose causal attention never lets a word see later positions, and whose
        merges count clusters from `max_words`, not the padded width), so a short query costs a short forward pass
        and gets the same features and scores."""
        inputs = self.processor(text=[query], return_tensors="pt")
        length = max(1, int(inputs["attention_mask"].sum(-1).max()))
        device = self.model.device
        return self.model.get_text_features(
            inputs["input_ids"][:, :length].to(device), inputs["attention_mask"][:, :length].to(device)
        )

    def explain(self, query: str, path: str):
        """The explanation ([`~hbi_hf.explain.HBIExplanation`], exact interactions) of `query` and the indexed video
        `path`.

        Raises:
            [`HBINotServedError`]; [`HBIInputError`]: an empty or too long query, a video that cannot be decoded.
        """
        from .explain import explain_with_model

        query = _check_query(query)
        file = self.resolve_video(path)
        with self.lock:
            try:
                explanation = explain_with_model(self.model, self.processor, file, query)
            except HBIInputError:
                raise
            except Exception as error:  # the decoder's own errors: the file, not the server, is at fault
                raise HBIInputError(f"{path}: cannot be decoded ({type(error).__name__}: {error})") from error
        explanation.video = path
        return explanation


def _check_query(query: str | None) -> str:
    if query is None or not query.strip():
        raise HBIInputError("the query is empty: type some words to search for")
    if len(query) > MAX_QUERY_CHARACTERS:
        raise HBIInputError(
            f"the query has {len(query)} characters; at most {MAX_QUERY_CHARACTERS} are accepted (the model reads "
            "its first words only)"
        )
    return query.strip()


def _best_span(
    similarity: torch.Tensor,
    word_mask: torch.Tensor,
    frame_mask: torch.Tensor,
    frame_weight_logits: torch.Tensor,
    clip_of_frame: torch.Tensor,
) -> tuple[int, int, int]:
    """`(frame, first, last)`: the frame with the largest `w_f max_w s_wf` among the valid ones (`similarity`
    `(words, frames)`, the frame weights w_f the softmax of the valid frames' logits) and the run of consecutive
    frames of its action-level clip around it."""
    valid = frame_mask.bool()
    best_word = similarity.float().masked_fill(~word_mask.bool()[:, None], float("-inf")).amax(0)
    weights = frame_weight_logits.float().masked_fill(~valid, float("-inf")).softmax(0)
    contribution = (weights * best_word).masked_fill(~valid, float("-inf"))
    frame = int(contribution.argmax())
    clip = int(clip_of_frame[frame])
    first = last = frame
    while first > 0 and valid[first - 1] and int(clip_of_frame[first - 1]) == clip:
        first -= 1
    while last + 1 < len(valid) and valid[last + 1] and int(clip_of_frame[last + 1]) == clip:
        last += 1
    return frame, first, last


@functools.lru_cache(maxsize=65536)
def _video_timing(
    file: str, size: int, mtime_ns: int, sampling: tuple[int, str, float], valid_frames: int
) -> HBIVideoTiming:
    """The sampled frames' times from the container's header (frame rate, frame count or duration), with the
    processor's sampling rule ([`~hbi_hf.video_processing_hbi.sample_frame_indices`]); when that does not give the
    `valid_frames` the model saw, frames spread evenly over the duration. `size` and `mtime_ns` key the cache."""
    import av

    num_frames, mode, sampling_fps = sampling
    try:
        with av.open(file) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / av.time_base
            total = stream.frames or (round(duration * fps) if duration and fps else 0)
    except (av.error.FFmpegError, IndexError, OSError) as error:
        raise HBIInputError(f"{file}: cannot read the video's header ({type(error).__name__}: {error})") from error
    if not fps or not total:
        return HBIVideoTiming(None, duration)
    duration = duration or total / fps
    indices = sample_frame_indices(
        total, num_frames, fps, mode if mode in ("fps", "uniform") else "uniform", sampling_fps
    )
    if len(indices) == valid_frames:
        return HBIVideoTiming([float(i) / fps for i in indices], duration)
    spread = np.linspace(0, total - 1, valid_frames).round() / fps
    return HBIVideoTiming([float(t) for t in spread], duration)


@functools.lru_cache(maxsize=1024)
def _thumbnail(file: str, size: int, mtime_ns: int, sampling: tuple[int, str, float], frame: int) -> bytes:
    """The `frame`-th frame that the processor's sampling rule picks, scaled to `THUMBNAIL_WIDTH` pixels wide, as JPEG
    bytes. `size` and `mtime_ns` key the cache."""
    from PIL import Image

    from .video_processing_hbi import read_video

    num_frames, mode, sampling_fps = sampling

    def pick(metadata) -> list[int]:
        indices = sample_frame_indices(
            metadata.total_num_frames,
            num_frames,
            metadata.fps,
            mode,
            sampling_fps,
            getattr(metadata, "frame_times", None),
        )
        return [int(indices[min(frame, len(indices) - 1)])]

    try:
        frames, _ = read_video(file, pick, backend="pyav")
    except HBIInputError:
        raise
    except Exception as error:  # the decoder's own errors: the file is at fault
        raise HBIInputError(f"{file}: cannot be decoded ({type(error).__name__}: {error})") from error
    picture = Image.fromarray(frames[0])
    height = max(1, round(picture.height * THUMBNAIL_WIDTH / picture.width))
    buffer = io.BytesIO()
    picture.convert("RGB").resize((THUMBNAIL_WIDTH, height)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------------
# The web app
# ---------------------------------------------------------------------------------------------------------------------


def page_html() -> str:
    """The search page (one HTML file with its script and style, shipped in the package)."""
    return resources.files("hbi_hf").joinpath("serve_page.html").read_text(encoding="utf-8")


def build_app(service: HBISearchService, default_top_k: int = 10):
    """
    The ASGI app of [`HBISearchService`] (see the module docstring for its routes).

    Raises:
        `ImportError`: Starlette is not installed (`pip install "hbi-hf[serve]"`).
    """
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def guarded(handler):
        """Errors about the input become `{"error": ...}` (404: a file not served, 400: the rest); any other error is
        logged with its traceback here and answered with one line. The answers never show the server's video folder."""

        @functools.wraps(handler)
        def wrapper(request):
            try:
                return handler(request)
            except HBINotServedError as problem:
                return error(str(problem), 404)
            except (HBIInputError, OSError) as problem:  # a file's path is told relative to the video folder
                return error(str(problem).replace(f"{service.video_root}{os.sep}", ""), 400)
            except Exception as problem:  # a bug: the traceback goes to the server's log, not to the page
                logger.exception("error answering %s", request.url.path)
                return error(f"internal error ({type(problem).__name__}); the server's log has the details", 500)

        return wrapper

    def integer(request, name: str, default: int) -> int:
        text = request.query_params.get(name)
        if text is None:
            return default
        try:
            return int(text)
        except ValueError:
            raise HBIInputError(f"{name} must be an integer; got {text!r}") from None

    def page(request):
        return HTMLResponse(page_html())

    @guarded
    def search(request):
        start = time.perf_counter()
        hits = service.search(request.query_params.get("q", ""), integer(request, "k", default_top_k))
        milliseconds = (time.perf_counter() - start) * 1000
        return JSONResponse(
            {
                "query": request.query_params.get("q", "").strip(),
                "hits": [hit.__dict__ for hit in hits],
                "milliseconds": round(milliseconds, 2),
            }
        )

    @guarded
    def explain(request):
        from .explain import explanation_to_dict

        explanation = service.explain(request.query_params.get("q", ""), request.query_params.get("path", ""))
        return JSONResponse(explanation_to_dict(explanation))

    @guarded
    def explain_png(request):
        from .explain import draw_explanation

        explanation = service.explain(request.query_params.get("q", ""), request.query_params.get("path", ""))
        buffer = io.BytesIO()
        draw_explanation(explanation).savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return Response(buffer.getvalue(), media_type="image/png")

    @guarded
    def video(request):
        return FileResponse(service.resolve_video(request.path_params["path"]))

    @guarded
    def thumbnail(request):
        jpeg = service.thumbnail(request.path_params["path"], integer(request, "frame", 0))
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    routes = [
        Route("/", page),
        Route("/api/search", search),
        Route("/api/explain", explain),
        Route("/api/explain.png", explain_png),
        Route("/videos/{path:path}", video),
        Route("/thumbnails/{path:path}", thumbnail),
    ]
    return Starlette(routes=routes)


def _listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` (`port=0`: a free port the system chooses), for the server to listen on.

    Raises:
        `OSError`: the address cannot be bound (the port is in use, the host is not an address of this machine).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port}: {error.strerror or error} (is another server there? choose another --port)"
        ) from error
    return sock


def serve(
    index_dir: str | os.PathLike,
    model_name_or_path: str | os.PathLike | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    video_root: str | os.PathLike | None = None,
    top_k: int = 10,
    shortlist: int = 1000,
    in_memory: bool = True,
    on_ready=None,
) -> None:
    """
    Load the index and its model once ([`HBISearchService`]) and serve the page and the API on `host:port` until
    interrupted. `on_ready(url)` is called once the server listens (with the port the system chose for `port=0`).

    Raises:
        See [`HBISearchService`]; `OSError`: `host:port` cannot be bound (checked before the model loads);
        `ImportError`: the `serve` extra is not installed.
    """
    import uvicorn

    listening_socket = _listening_socket(host, port)  # before the model loads: a busy port fails at once
    service = HBISearchService(index_dir, model_name_or_path, video_root, shortlist, in_memory)
    config = uvicorn.Config(build_app(service, top_k), host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    if on_ready is not None:
        startup = server.startup

        async def announce(sockets=None):
            await startup(sockets)
            listening = [sock.getsockname()[1] for s in server.servers for sock in s.sockets]
            on_ready(f"http://{host}:{listening[0] if listening else port}/")  # port 0: the one the system chose

        server.startup = announce
    server.run(sockets=[listening_socket])


__all__ = [
    "HBINotServedError",
    "HBISearchService",
    "HBIServedHit",
    "HBIVideoTiming",
    "build_app",
    "page_html",
    "serve",
]
