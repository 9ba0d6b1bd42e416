"""`hbi-hf serve`: the JSON API and the page over a small index whose right answers are known (serve_fixtures), the
files it serves (only indexed videos inside the video folder, whatever the encoding of the request), its messages for
bad input, and the page in a real browser (Debian's chromium driven by Playwright)."""

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import torch

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from serve_fixtures import CAPTIONS, OUTSIDE_LINK  # noqa: E402

from hbi_hf.explain import explain_video, explanation_to_dict  # noqa: E402
from hbi_hf.serve import HBISearchService, _best_span, build_app  # noqa: E402
from hbi_hf_cli import parse_args  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def trusted(trusted_index):
    return trusted_index


@pytest.fixture(scope="module")
def server(trusted):
    """The app of the trusted index on a free port of 127.0.0.1, in a thread of this process."""
    videos, model_dir, index_dir = trusted
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = build_app(HBISearchService(index_dir))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def get(server: str, raw_path: str) -> tuple[int, bytes, dict]:
    """GET `raw_path` exactly as written (no normalisation of `..` or of percent-escapes by the client)."""
    host, port = server.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("GET", raw_path, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body, dict(response.getheaders())


def get_json(server: str, route: str, **params) -> tuple[int, dict]:
    status, body, _ = get(server, route + "?" + urllib.parse.urlencode(params))
    return status, json.loads(body)


# -- the API ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(CAPTIONS))
def test_search_ranks_the_described_clip_first_with_its_span_and_links(server, path):
    status, answer = get_json(server, "/api/search", q=CAPTIONS[path][0], k=3)
    assert status == 200 and len(answer["hits"]) == 3
    best = answer["hits"][0]
    assert best["path"] == path and best["rank"] == 1
    assert [hit["score"] for hit in answer["hits"]] == sorted((hit["score"] for hit in answer["hits"]), reverse=True)
    assert best["first_frame"] <= best["frame"] <= best["last_frame"]
    # 16 frames at 4 fps, 6 sampled uniformly: frames 0, 3, 6, 9, 12, 15 at 0, 0.75, ..., 3.75 s; the clip lasts 4 s
    times = [0.0, 0.75, 1.5, 2.25, 3.0, 3.75]
    assert best["start"] == pytest.approx(times[best["first_frame"]])
    assert best["end"] == pytest.approx(times[best["last_frame"] + 1] if best["last_frame"] < 5 else 4.0, abs=0.01)
    assert best["video_url"] == "/videos/" + urllib.parse.quote(path)
    status, jpeg, headers = get(server, best["thumbnail_url"])
    assert status == 200 and headers["content-type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"


def test_explain_endpoint_gives_the_values_of_explain_video(server, trusted):
    videos, model_dir, _ = trusted
    status, data = get_json(server, "/api/explain", q="a blue sky", path="blue.mp4")
    assert status == 200
    expected = explanation_to_dict(explain_video(videos / "blue.mp4", "a blue sky", model_dir))
    assert [level["name"] for level in data["levels"]] == ["entity", "action", "event"]
    assert data["levels"][0]["row_labels"] == ["a", "blue", "sky"]
    for served, computed in zip(data["levels"], expected["levels"]):
        assert torch.allclose(torch.tensor(served["values"]), torch.tensor(computed["values"]), atol=1e-4)
    assert data["score"] == pytest.approx(expected["score"], abs=1e-5)
    _, search = get_json(server, "/api/search", q="a blue sky", k=1)
    assert data["score"] == pytest.approx(search["hits"][0]["score"], abs=1e-5)
    status, png, headers = get(server, "/api/explain.png?q=a+blue+sky&path=blue.mp4")
    assert status == 200 and png[:4] == b"\x89PNG"


def test_each_thumbnail_shows_the_sampled_frame_the_model_saw(server):
    """The clips paint their frame index: frame i has a white bar at x = 4i..4i+4 of 64 px. The 6 frames sampled
    uniformly from 16 are 0, 3, 6, 9, 12, 15; thumbnail k must show the bar of frame 3k (scaled to 240 px)."""
    import io

    import numpy as np
    from PIL import Image

    for k, index in enumerate([0, 3, 6, 9, 12, 15]):
        status, jpeg, _ = get(server, f"/thumbnails/blue.mp4?frame={k}")
        assert status == 200
        picture = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=float)
        assert picture.shape[1] == 240
        assert abs(int(picture.mean(0).argmax()) - (4 * index + 2) * 240 / 64) <= 8
    status, body, _ = get(server, "/thumbnails/blue.mp4?frame=6")
    assert status == 400 and "not one of its 6 sampled frames" in json.loads(body)["error"]


def test_best_frame_is_the_largest_weighted_best_word_match_and_its_span_the_run_of_its_clip():
    similarity = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.0], [0.3, 0.1, 0.2, 0.1, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    word_mask = torch.tensor([True, True, False])  # the third word is padding: never the best match
    frame_mask = torch.tensor([True, True, True, True, False])
    logits = torch.tensor([0.0, 0.0, 0.0, 0.5, 9.0])  # the padded frame's weight is ignored
    clips = torch.tensor([0, 1, 1, 1, -1])
    frame, first, last = _best_span(similarity, word_mask, frame_mask, logits, clips)
    # w = softmax(0, 0, 0, 0.5): frame 3 gives 0.8 * 1.65 / Z > frame 1's 0.9 / Z
    assert (frame, first, last) == (3, 1, 3)


# -- what is served --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_path",
    [
        "/videos/../../../../etc/passwd",
        "/videos/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/videos/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/videos/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
        "/videos//etc/passwd",
        "/videos/%2Fetc%2Fpasswd",
        "/videos/blue.mp4/../../index/manifest.json",
        "/videos/..%5c..%5cindex%5cmanifest.json",
        "/thumbnails/..%2f..%2findex%2fmanifest.json?frame=0",
        "/videos/" + urllib.parse.quote(OUTSIDE_LINK),
        "/thumbnails/" + urllib.parse.quote(OUTSIDE_LINK) + "?frame=0",
        "/videos/../outside/secret.mp4",
        "/videos/%2e%2e/outside/secret.mp4",
    ],
)
def test_nothing_but_indexed_videos_inside_the_video_folder_is_served(server, raw_path):
    status, body, _ = get(server, raw_path)
    assert status == 404, body
    assert b"root:" not in body and b"format_version" not in body and not body.startswith(b"\x00\x00\x00")
    assert "error" in json.loads(body)


def test_a_manifest_path_leading_out_of_the_video_folder_is_not_served(trusted):
    """The path check does not trust the manifest either: an entry `../outside/secret.mp4` (a hand-edited or foreign
    manifest) is refused like a request for it."""
    from hbi_hf.serve import HBINotServedError

    service = HBISearchService(trusted[2])
    service.positions["../outside/secret.mp4"] = 0
    service.positions[str(trusted[0].parent / "outside" / "secret.mp4")] = 0
    for path in ("../outside/secret.mp4", str(trusted[0].parent / "outside" / "secret.mp4")):
        with pytest.raises(HBINotServedError, match="out of the video folder"):
            service.resolve_video(path)
    assert service.resolve_video("blue.mp4") == (trusted[0] / "blue.mp4").resolve()


def test_an_indexed_link_out_of_the_video_folder_is_listed_but_not_served(server):
    status, answer = get_json(server, "/api/search", q="a purple secret", k=5)
    linked = [hit for hit in answer["hits"] if hit["path"] == OUTSIDE_LINK]
    assert status == 200 and linked and linked[0]["video_url"] is None and linked[0]["thumbnail_url"] is None
    status, data = get_json(server, "/api/explain", q="a purple secret", path=OUTSIDE_LINK)
    assert status == 404 and "out of the video folder" in data["error"]


@pytest.mark.parametrize(
    "raw_path", ["/videos/clips/yellow%20sun%20%C3%A9.webm", "/videos/clips%2Fyellow%20sun%20%C3%A9.webm"]
)
def test_percent_encoded_names_of_indexed_videos_are_served_with_ranges(server, trusted, raw_path):
    videos, _, _ = trusted
    content = (videos / "clips" / "yellow sun é.webm").read_bytes()
    status, body, _ = get(server, raw_path)
    assert status == 200 and body == content
    host, port = server.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", raw_path, headers={"Range": "bytes=10-29"})
    response = connection.getresponse()
    assert response.status == 206 and response.read() == content[10:30]
    connection.close()


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(q=""), "the query is empty"),
        (dict(q="   "), "the query is empty"),
        (dict(q="x" * 1001), "at most 1000 are accepted"),
        (dict(q="a red square", k="ten"), "k must be an integer"),
        (dict(q="a red square", k="0"), "k must be >= 1"),
    ],
)
def test_bad_queries_get_a_one_line_message(server, params, message):
    status, answer = get_json(server, "/api/search", **params)
    assert status == 400 and message in answer["error"] and "Traceback" not in answer["error"]


def test_a_video_damaged_after_indexing_gets_a_message(server, trusted):
    videos, _, _ = trusted
    path = videos / "green.mp4"
    saved = path.read_bytes()
    try:
        path.write_bytes(b"not a video any more" * 50)
        status, answer = get_json(server, "/api/explain", q="a green field", path="green.mp4")
        assert status == 400 and "green.mp4" in answer["error"] and "Traceback" not in answer["error"]
        assert str(videos.resolve()) not in answer["error"]  # the server's own folders are not told to the client
        status, body, _ = get(server, "/thumbnails/green.mp4?frame=0")
        assert status == 400 and "green.mp4" in json.loads(body)["error"]
        assert str(videos.resolve()) not in json.loads(body)["error"]
        path.unlink()
        status, answer = get_json(server, "/api/explain", q="a green field", path="green.mp4")
        assert status == 404 and "gone" in answer["error"]
    finally:
        path.write_bytes(saved)


def test_a_file_name_that_is_not_utf8_is_a_hit_without_player_and_never_breaks_the_answer(trusted):
    """Linux file names are bytes: one indexed as `caf\\xe9.mp4` (Latin-1) used to make every search whose hits
    included it answer 500 (its URL and JSON could not be encoded). It is now listed with U+FFFD in place of the
    undecodable bytes, without player or thumbnail, and the answer is JSON as always."""
    from dataclasses import asdict

    videos = Path(trusted[0])
    name = os.fsdecode(b"caf\xe9.mp4")  # a surrogate escape, as os.listdir gives it
    service = HBISearchService(trusted[2])
    service.searcher.paths = [name if path == "blue.mp4" else path for path in service.searcher.paths]
    service.positions = {path: position for position, path in enumerate(service.searcher.paths)}
    (videos / name).write_bytes((videos / "blue.mp4").read_bytes())
    try:
        hits = service.search("a blue sky", top_k=len(CAPTIONS))
    finally:
        (videos / name).unlink()
    (hit,) = [hit for hit in hits if hit.path.startswith("caf")]
    assert hit.path == "caf\ufffd.mp4" and hit.video_url is None and hit.thumbnail_url is None
    json.dumps([asdict(hit) for hit in hits], ensure_ascii=False).encode("utf-8")  # as the JSON response encodes it


def test_serve_listens_on_this_machine_only_unless_told():
    index = str(Path(__file__).parent)
    assert parse_args(["serve", index]).host == "127.0.0.1"
    assert parse_args(["serve", index, "--host", "0.0.0.0", "--port", "8000"]).port == 8000


def test_serve_on_a_port_in_use_fails_at_once_with_one_line(trusted, monkeypatch, capsys):
    """The address is bound before the model loads: a busy port is one error line, status 1, nothing loaded (it
    loaded the model first, then uvicorn logged the error and exited with status 3)."""
    import hbi_hf.serve
    from hbi_hf.cli import main

    monkeypatch.setattr(hbi_hf.serve, "HBISearchService", lambda *args: pytest.fail("the model was loaded"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(trusted[2]), "--port", str(port)]) == 1
    error = capsys.readouterr().err
    assert f"hbi-hf serve: error: cannot listen on 127.0.0.1:{port}" in error and "choose another --port" in error


@pytest.mark.parametrize("port", ["-1", "65536", "99999"])
def test_serve_refuses_a_port_out_of_range_as_an_argument_error(port, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["serve", str(Path(__file__).parent), "--port", port])
    assert exit_info.value.code == 2
    assert f"argument --port: must be a port number from 0 to 65535; got {port}" in capsys.readouterr().err


# -- the page in a real browser --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):  # CI installs it: its absence there is a failure, never a silent skip
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:  # launch() gives the browser a fresh temporary profile
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def test_the_page_finds_the_clip_plays_its_span_and_explains_it(server, browser):
    """Type a query, press Enter: the right clip comes first (printed: how long after Enter), its player starts at the
    matched span, and its explain view shows the interaction values the API gives."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"http://{server}/")
    page.fill("#query", "a blue sky")
    start = time.perf_counter()
    page.press("#query", "Enter")
    page.wait_for_selector(".hit")
    elapsed = time.perf_counter() - start
    print(f"\nfirst results within {elapsed:.2f} s of pressing Enter")
    first = page.locator(".hit").first
    assert first.get_attribute("data-path") == "blue.mp4"
    assert "score" in first.inner_text() and "best match" in first.inner_text()
    page.wait_for_function("document.querySelector('.hit img').naturalWidth > 0")

    _, answer = get_json(server, "/api/search", q="a blue sky", k=1)
    best = answer["hits"][0]
    first.click()
    page.wait_for_function(
        "(start) => { const v = document.querySelector('#player video');"
        " return v && v.readyState >= 1 && Math.abs(v.currentTime - start) < 0.3; }",
        arg=best["start"],
    )

    first.locator(".explain-button").click()
    cell = page.locator(".level[data-level='entity'] td").first
    cell.wait_for()
    _, data = get_json(server, "/api/explain", q="a blue sky", path="blue.mp4")
    assert float(cell.get_attribute("data-value")) == pytest.approx(data["levels"][0]["values"][0][0], rel=1e-6)
    assert page.locator(".level").count() == 3
    assert page.locator("#message").inner_text() == ""

    page.fill("#query", "   x" * 300)
    page.press("#query", "Enter")
    page.wait_for_function("document.querySelector('#message').textContent.length > 0")
    assert "at most 1000" in page.locator("#message").inner_text()
    page.close()


DEMO_MODEL = Path(os.environ.get("HBI_DEMO_MODEL", Path(__file__).parents[1] / "outputs" / "demo"))
"""The retrieval demo's saved model and processor (`make demo`)."""


def start_serve(index_dir: Path) -> tuple[subprocess.Popen, str]:
    """`hbi-hf serve INDEX --port 0` in its own process; returns it and the `host:port` it says it listens on."""
    command = [sys.executable, "-m", "hbi_hf_cli", "serve", str(index_dir), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 240
    while not any("serving" in line for line in lines):
        assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
        lines.append(process.stdout.readline())
    return process, lines[-1].split(" on ")[1].split()[0].removeprefix("http://").rstrip("/")


@pytest.mark.slow
def test_the_page_finds_a_demo_test_caption_in_the_demo_index(browser, tmp_path):
    """README's screenshot (`make screenshot` writes it to HBI_SERVE_SCREENSHOT): the embedded dataset's test videos
    indexed with the demo's model by `hbi-hf index`, `hbi-hf serve` on that index, and the first test caption typed
    into the page: the caption's own video is among the hits shown; its player and explain view are opened."""
    if not (DEMO_MODEL / "model.safetensors").is_file():
        pytest.skip(f"no demo model in {DEMO_MODEL}: run `make demo` first (or set HBI_DEMO_MODEL)")
    from hbi_hf.retrieval_data import synthetic_retrieval_splits

    test = synthetic_retrieval_splits(seed=0)["test"]  # `make demo`'s dataset (seed 0, in the cache)
    videos = tmp_path / "videos"
    videos.mkdir()
    for path in sorted(set(test["video_path"])):
        (videos / Path(path).name).write_bytes(Path(path).read_bytes())
    caption, own = test[0]["caption"], Path(test[0]["video_path"]).name
    index = [sys.executable, "-m", "hbi_hf_cli", "index", str(videos), "--model", str(DEMO_MODEL)]
    subprocess.run([*index, "--out", str(tmp_path / "index"), "--no-progress"], check=True)
    process, server = start_serve(tmp_path / "index")
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://{server}/")
        page.fill("#query", caption)
        page.press("#query", "Enter")
        page.wait_for_selector(".hit")
        shown = [hit.get_attribute("data-path") for hit in page.locator(".hit").all()]
        assert own in shown, f"{own} ({caption!r}) is not among the hits shown: {shown}"
        page.wait_for_function("[...document.querySelectorAll('.hit img')].every((img) => img.naturalWidth > 0)")
        hit = page.locator(f".hit[data-path='{own}']")
        hit.click()
        page.wait_for_function("(v => v && v.readyState >= 2 && !v.seeking)(document.querySelector('#player video'))")
        hit.locator(".explain-button").click()
        page.locator(".level[data-level='entity'] td").first.wait_for()
        assert page.locator("#message").inner_text() == ""
        print(f"\nquery {caption!r}: {own} is hit {shown.index(own) + 1} of {len(shown)}")
        page.screenshot(path=os.environ.get("HBI_SERVE_SCREENSHOT", str(tmp_path / "serve.png")), full_page=False)
        page.close()
    finally:
        process.kill()
        process.wait()


def test_a_new_query_clears_the_player_and_the_explain_view_of_the_previous_one(server, browser):
    """The player and explain view belong to a hit of the query shown: a new query, answered or refused, takes them
    away (they used to stay beside the new hits, or beside the error message, explaining a query no longer asked)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"http://{server}/")
    page.fill("#query", "a blue sky")
    page.press("#query", "Enter")
    page.locator(".hit").first.locator(".explain-button").click()
    page.locator(".level[data-level='entity'] td").first.wait_for()
    assert page.locator("#player video").count() == 1

    page.fill("#query", "a green field")
    page.press("#query", "Enter")
    page.wait_for_function("document.querySelector('.hit').dataset.path === 'green.mp4'")
    assert page.locator("#player").inner_text() == "" and page.locator("#player video").count() == 0
    assert page.locator("#explain").inner_text() == ""

    page.locator(".hit").first.locator(".explain-button").click()
    page.locator(".level[data-level='entity'] td").first.wait_for()
    page.fill("#query", "   x" * 300)
    page.press("#query", "Enter")
    page.wait_for_function("document.querySelector('#message').textContent.length > 0")
    assert page.locator(".hit").count() == 0 and page.locator("#player video").count() == 0
    assert page.locator("#explain").inner_text() == ""
    page.close()


def test_a_late_explain_answer_never_replaces_the_one_asked_for_last(server, browser):
    """Explaining takes seconds: click explain on one hit, then on another, and the first answer may come last. The
    view shows the hit asked for last (it showed whichever answer arrived last), and an answer for the previous query
    never fills the view of a new one."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    held = []
    page.route("**/api/explain?*path=red.mp4*", lambda route: held.append(route))
    page.goto(f"http://{server}/")
    page.fill("#query", "a red square")
    page.press("#query", "Enter")
    page.wait_for_selector(".hit[data-path='red.mp4']")
    page.locator(".hit[data-path='red.mp4'] .explain-button").click()
    while not held:
        page.wait_for_timeout(50)
    page.locator(".hit[data-path='blue.mp4'] .explain-button").click()
    page.locator(".level[data-level='entity'] td").first.wait_for()
    held.pop().continue_()
    page.wait_for_timeout(1500)
    assert "blue.mp4" in page.locator("#explain h3").first.inner_text()

    page.locator(".hit[data-path='red.mp4'] .explain-button").click()
    while not held:
        page.wait_for_timeout(50)
    page.fill("#query", "a green field")
    page.press("#query", "Enter")
    page.wait_for_function("document.querySelector('.hit').dataset.path === 'green.mp4'")
    held.pop().continue_()
    page.wait_for_timeout(1500)
    assert page.locator("#explain").inner_text() == ""

    # the same for searches: a late failure of an earlier query leaves the hits of the last one
    page.route("**/api/search?q=a%20yellow*", lambda route: held.append(route))
    page.fill("#query", "a yellow sun")
    page.press("#query", "Enter")
    while not held:
        page.wait_for_timeout(50)
    page.fill("#query", "a blue sky")
    page.press("#query", "Enter")
    page.wait_for_function("document.querySelector('.hit').dataset.path === 'blue.mp4'")
    held.pop().fulfill(status=500, content_type="application/json", body='{"error": "late failure"}')
    page.wait_for_timeout(1000)
    assert page.locator(".hit").count() == len(CAPTIONS) + 1 and page.locator("#message").inner_text() == ""
    page.close()


def test_the_space_app_serves_its_folders_on_the_space_port(monkeypatch):
    """space/app.py: the index, model and videos beside it (or as the environment says), on 0.0.0.0:$PORT."""
    import runpy

    import hbi_hf.serve

    calls = []
    monkeypatch.setattr(hbi_hf.serve, "serve", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setenv("PORT", "7861")
    monkeypatch.setenv("HBI_VIDEOS", "/data/videos")
    runpy.run_path(str(Path(__file__).parents[1] / "space" / "app.py"), run_name="__main__")
    ((args, kwargs),) = calls
    assert args == ("index",) and kwargs["model_name_or_path"] == "model" and kwargs["video_root"] == "/data/videos"
    assert kwargs["host"] == "0.0.0.0" and kwargs["port"] == 7861


def test_serve_help_and_argument_errors_import_neither_torch_nor_the_server():
    code = (
        "import sys\n"
        "from hbi_hf_cli import main\n"
        "for argv in (['--help'], ['serve', '--help'], ['serve', '.', '--port', 'x'], ['serve', '/nonexistent']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'hbi_hf', 'starlette', 'uvicorn') if m in sys.modules)\n"
        "sys.exit(f'imported {heavy}' if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-500:]
    assert "usage: hbi-hf serve" in result.stdout and "127.0.0.1" in result.stdout


def test_a_query_encoded_at_its_own_length_scores_as_when_padded(trusted):
    """The server cuts the query's padding before the text tower (a shorter forward pass): same scores at every
    level."""
    from hbi_hf.search_index import encode_text

    service = HBISearchService(trusted[2])
    for query in ("a blue sky", "a red square at night"):  # 5 and 7 tokens of max_words 10
        padded, _ = encode_text(service.model, service.processor, query)
        cut = service.encode_query(query)
        assert cut.level_tokens[0].shape[1] < padded.level_tokens[0].shape[1]
        gallery = service.searcher.index.features()  # every video's features (search reads its shortlist only)
        with torch.no_grad():
            for level_cut, level_padded in zip(
                service.model.similarity_per_level(cut, gallery),
                service.model.similarity_per_level(padded, gallery),
            ):
                torch.testing.assert_close(level_cut, level_padded, atol=1e-5, rtol=1e-5)


def test_the_command_serves_the_index_until_stopped(trusted):
    """`hbi-hf serve INDEX --port 0` in its own process: it says where it listens, answers there, and stops on Ctrl-C
    with one line."""
    import signal

    process, server = start_serve(trusted[2])
    try:
        assert server.startswith("127.0.0.1:") and server != "127.0.0.1:0"
        status, answer = get_json(server, "/api/search", q="a green field", k=1)
        assert status == 200 and answer["hits"][0]["path"] == "green.mp4"
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 130  # Ctrl-C: one line and status 130, as every hbi-hf command
        rest = process.stdout.read()
        assert "hbi-hf serve: interrupted" in rest and "Traceback" not in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_features_held_in_memory_or_read_per_query_give_the_same_hits(trusted):
    held, read = HBISearchService(trusted[2]), HBISearchService(trusted[2], in_memory=False)
    for query in ("a blue sky", "a yellow sun"):
        assert [hit.__dict__ for hit in held.search(query)] == [hit.__dict__ for hit in read.search(query)]
