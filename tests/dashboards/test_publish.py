"""Publishing to Grafana's HTTP API, against a small in-process stand-in for Grafana's endpoints."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from grafana_client import GrafanaApi

from dashboards import DATASOURCE_UID, dashboard_files
from dashboards.publish import publish


class FakeGrafana(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, str, Any]] = []
        self.datasources: dict[str, dict[str, Any]] = {}


class Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length", 0))
        return json.loads(self.rfile.read(n)) if n else None

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, None))
        uid = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/api/datasources/uid/") and uid in self.server.datasources:
            self._reply(200, self.server.datasources[uid])
        else:
            self._reply(404, {"message": "not found"})

    def do_POST(self) -> None:
        body = self._body()
        self.server.requests.append(("POST", self.path, body))
        if self.path == "/api/datasources":
            self.server.datasources[body["uid"]] = {**body, "id": 7}
        self._reply(200, {"status": "success", "id": 7})

    def do_PUT(self) -> None:
        self.server.requests.append(("PUT", self.path, self._body()))
        self._reply(200, {"message": "updated"})


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    server = FakeGrafana()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_publish_creates_then_updates(grafana: FakeGrafana) -> None:
    api = GrafanaApi.from_url(f"http://admin:admin@127.0.0.1:{grafana.server_port}")
    db = "postgresql://reader:s3cret@db.internal:5433/monitoring"
    first = publish(api, db)
    assert first.datasource == "created"
    created = next(b for m, p, b in grafana.requests if m == "POST" and p == "/api/datasources")
    assert created["uid"] == DATASOURCE_UID and created["url"] == "db.internal:5433"
    assert created["jsonData"]["database"] == "monitoring" and created["secureJsonData"]["password"] == "s3cret"
    posted = [b for m, p, b in grafana.requests if m == "POST" and p == "/api/dashboards/db"]
    assert len(posted) == len(dashboard_files()) >= 3
    assert all(b["overwrite"] and b["folderUid"] == "infersentry" and "id" not in b["dashboard"] for b in posted)
    second = publish(api, db)
    assert second.datasource == "updated"
    assert any(m == "PUT" and p == "/api/datasources/7" for m, p, _ in grafana.requests)


def test_publish_refuses_sqlite() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        publish(GrafanaApi.from_url("http://admin:admin@127.0.0.1:9"), "sqlite:///x.db")
