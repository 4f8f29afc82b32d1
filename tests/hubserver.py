"""A local stand-in for the part of the Hugging Face Hub API that huggingface_hub's downloads use.

- GET /api/models/{org}/{name}[/revision/{rev}]?blobs=True: model info with per-file size, blobId, LFS sha256.
- HEAD/GET /{org}/{name}/resolve/{rev}/{path}: small files answer 200 with ETag = git blob SHA-1; LFS files answer
  302 with an absolute Location, X-Linked-Etag (sha256) and X-Linked-Size, like the hub's CDN redirect. Every
  answer carries X-Repo-Commit.
- GET /lfs/{sha256}: the LFS bytes, with Range support (206 + Content-Range) so downloads can resume.

Faults for tests: `cut[path] = n` serves only the first n bytes of the next full GET of that file, then drops the
connection; `down = True` answers 503 to file requests. Every request is logged as (method, path, Range header).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    files: dict[str, bytes]
    lfs: set[str] = field(default_factory=set)
    sha: str = ""

    def __post_init__(self) -> None:
        if not self.sha:
            digest = hashlib.sha1(json.dumps(sorted((k, hashlib.sha1(v).hexdigest()) for k, v in self.files.items())).encode())
            self.sha = digest.hexdigest()

    def blob_id(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.files[path]).hexdigest()


class HubServer:
    def __init__(self, repos: dict[str, Repo], address: str = "127.0.0.1"):
        """address: where it listens; the SSH test hosts reach this machine at 10.231.7.1 (tests/infra/README.md)."""
        self.repos = repos
        self.log: list[tuple[str, str, str | None]] = []
        self.auth: list[str | None] = []
        self.cut: dict[str, int] = {}
        self.down = False
        self._httpd = ThreadingHTTPServer((address, 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def file_gets(self) -> list[tuple[str, str, str | None]]:
        return [entry for entry in self.log if entry[0] == "GET" and not entry[1].startswith("/api/")]

    def lfs_blob(self, sha256: str) -> tuple[str, bytes] | None:
        for repo in self.repos.values():
            for path in repo.lfs:
                if repo.sha256(path) == sha256:
                    return path, repo.files[path]
        return None


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.log.append((self.command, path, self.headers.get("Range")))
            hub.auth.append(self.headers.get("Authorization"))
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
                return self._info(m.group(1), m.group(2) or "main")
            if hub.down:
                return self._send(503, b"down", {})
            if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                return self._resolve(m.group(1), m.group(2), m.group(3), body)
            if m := re.fullmatch(r"/lfs/([0-9a-f]{64})", path):
                found = hub.lfs_blob(m.group(1))
                if found:
                    return self._bytes(found[0], found[1], body)
            self._send(404, b"not found", {"X-Error-Code": "EntryNotFound"})

        def _repo(self, repo_id: str, revision: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._send(404, b"no repo", {"X-Error-Code": "RepoNotFound"})
            elif revision not in ("main", repo.sha):
                self._send(404, b"no revision", {"X-Error-Code": "RevisionNotFound"})
                return None
            return repo

        def _info(self, repo_id: str, revision: str) -> None:
            repo = self._repo(repo_id, revision)
            if repo is None:
                return
            siblings = []
            for name, data in sorted(repo.files.items()):
                entry: dict = {"rfilename": name, "size": len(data), "blobId": repo.blob_id(name)}
                if name in repo.lfs:
                    entry["lfs"] = {"size": len(data), "sha256": repo.sha256(name), "pointerSize": 134}
                siblings.append(entry)
            info = {"_id": repo.sha[:24], "id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": False, "siblings": siblings}
            self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})

        def _resolve(self, repo_id: str, revision: str, name: str, body: bool) -> None:
            repo = self._repo(repo_id, revision)
            if repo is None:
                return
            if name not in repo.files:
                return self._send(404, b"no file", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.sha})
            commit = {"X-Repo-Commit": repo.sha}
            if name in repo.lfs:
                sha = repo.sha256(name)
                headers = {
                    **commit,
                    "Location": f"{hub.url}/lfs/{sha}",
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(len(repo.files[name])),
                    "ETag": f'"{repo.blob_id(name)}"',
                }
                return self._send(302, b"", headers)
            self._bytes(name, repo.files[name], body, {**commit, "ETag": f'"{repo.blob_id(name)}"'})

        def _bytes(self, name: str, data: bytes, body: bool, extra: dict | None = None) -> None:
            headers = dict(extra or {})
            start = 0
            if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or ""):
                start = int(m.group(1))
            status = 206 if start else 200
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            payload = data[start:]
            cut = hub.cut.pop(name, None) if body and not start else None
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not body:
                return
            if cut is not None:
                self.wfile.write(payload[:cut])
                self.wfile.flush()
                self.close_connection = True
                hub.down = True  # the "network" stays down until the test brings it back
                return
            self.wfile.write(payload)

        def _send(self, status: int, payload: bytes, headers: dict) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

    return Handler
