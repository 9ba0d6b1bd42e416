"""A minimal stand-in for the Hugging Face Hub HTTP API on 127.0.0.1, for end-to-end push / pull tests with the real
`huggingface_hub` client (HF_ENDPOINT pointed here, HF_HUB_DISABLE_XET=1). It implements the calls a push and a
download make: repo creation, YAML validation, pre-upload (every file "regular", so no LFS), NDJSON commits (base64
contents), `resolve` HEAD/GET of committed files, and the folder listing (`tree`) a processor download asks for. Everything lives in memory."""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FakeRepo:
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)

    @property
    def head(self) -> str:
        return self.commits[-1] if self.commits else "0" * 40


class FakeHub:
    """`with FakeHub() as hub:` serves on `hub.endpoint`; `hub.repos[repo_id].files` holds what was committed and
    `hub.requests` every `(method, path)` received."""

    def __init__(self):
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                return

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, payload=None, headers: dict | None = None, body: bytes | None = None):
                data = body if body is not None else json.dumps(payload if payload is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if body is None else "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def do_POST(self) -> None:
                hub.requests.append(("POST", self.path))
                body = self._body()
                if self.path == "/api/repos/create":
                    request = json.loads(body)
                    repo_id = "/".join(p for p in (request.get("organization"), request["name"]) if p)
                    with hub._lock:
                        hub.repos.setdefault(repo_id, FakeRepo())
                    return self._reply(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id, "id": repo_id})
                if self.path == "/api/validate-yaml":
                    return self._reply(200, {"errors": [], "warnings": []})
                match = re.fullmatch(r"/api/models/(.+)/(preupload|commit)/([^/?]+)(\?.*)?", self.path)
                if not match or match.group(1) not in hub.repos:
                    return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                repo = hub.repos[match.group(1)]
                if match.group(2) == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                            ]
                        },
                    )
                return self._commit(match.group(1), repo, body)

            def _commit(self, repo_id: str, repo: FakeRepo, body: bytes) -> None:
                with hub._lock:
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        value = item["value"]
                        if item["key"] == "file":
                            repo.files[value["path"]] = base64.b64decode(value["content"])
                        elif item["key"] == "deletedFile":
                            repo.files.pop(value["path"], None)
                        elif item["key"] != "header":
                            return self._reply(400, {"error": f"unsupported commit item {item['key']}"})
                    commit = hashlib.sha1(f"{repo_id}{len(repo.commits)}{sorted(repo.files)}".encode()).hexdigest()
                    repo.commits.append(commit)
                return self._reply(
                    200,
                    {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{commit}", "commitOid": commit, "success": True},
                )

            def _tree(self, match: re.Match) -> None:
                repo = hub.repos.get(match.group(1))
                if repo is None:
                    return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                folder = (match.group(3) or "").strip("/")
                prefix = f"{folder}/" if folder else ""
                entries = [
                    {"type": "file", "path": path, "size": len(content), "oid": hashlib.sha1(content).hexdigest()}
                    for path, content in sorted(repo.files.items())
                    if path.startswith(prefix) and "/" not in path[len(prefix) :]
                ]
                if folder and not entries:
                    return self._reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                return self._reply(200, entries)

            def _resolve(self) -> None:
                hub.requests.append((self.command, self.path))
                tree = re.fullmatch(r"/api/models/(.+?/.+?)/tree/([^/?]+)(/[^?]*)?(\?.*)?", self.path)
                if tree:
                    return self._tree(tree)
                match = re.fullmatch(r"/(.+?/.+?)/resolve/([^/]+)/(.+?)(\?.*)?", self.path)
                if not match or match.group(1) not in hub.repos:
                    return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                repo = hub.repos[match.group(1)]
                content = repo.files.get(match.group(3))
                if content is None:
                    return self._reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                etag = hashlib.sha1(content).hexdigest()
                headers = {"ETag": f'"{etag}"', "X-Repo-Commit": repo.head}
                return self._reply(200, headers=headers, body=content)

            do_GET = _resolve
            do_HEAD = _resolve

        return Handler
