"""HTTP serving: a real uvicorn server on loopback, a real HTTP client (httpx)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from recpress.serving.app import create_app  # noqa: E402
from recpress.serving.artifact import Artifact  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_model, small_split) -> Iterator[str]:
    path = tmp_path_factory.mktemp("http") / "artifact"
    Artifact.from_model(small_model, small_split, metrics={"test": {"recall@50": 0.5}}).save(path)
    app = create_app(path, max_batch=50, max_k=30)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(5)


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=10) as c:
        yield c


def test_health_metadata_openapi(client) -> None:
    assert client.get("/health").json() == {"status": "ok", "users": 40, "items": 60}
    meta = client.get("/metadata").json()
    assert meta["manifest"]["dim"] == 8 and meta["limits"] == {
        "max_k": 30,
        "max_batch": 50,
        "default_k": 20,
    }
    assert meta["user_id_type"] == "str"
    schema = client.get("/openapi.json").json()
    assert {"/recommend", "/health", "/metadata"} <= set(schema["paths"])
    assert {"get", "post"} <= set(schema["paths"]["/recommend"])


def test_get_and_post_recommend(client, small_split) -> None:
    r = client.get("/recommend", params={"user": "u3", "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["user"] == "u3" and len(body["items"]) == 5 and body["fallback"] is False
    seen = set(small_split.item_ids[small_split.train[3].indices])
    assert not seen & set(body["items"])
    r = client.post("/recommend", json={"users": ["u3", "stranger"], "k": 5})
    assert r.status_code == 200
    res = r.json()["results"]
    assert res[0]["items"] == body["items"] and res[1]["fallback"] is True
    assert client.get("/recommend", params={"user": "u3"}).json()["items"][:5] == body["items"]


def test_burst_of_bad_requests_then_good_ones(client) -> None:
    bad = [
        (client.get, "/recommend", {"params": {"user": "u1", "k": 0}}, 422, "k"),
        (client.get, "/recommend", {"params": {"user": "u1", "k": 10**9}}, 422, "less than"),
        (client.get, "/recommend", {"params": {"user": "u1", "k": "ten"}}, 422, "integer"),
        (client.get, "/recommend", {"params": {"k": 5}}, 422, "user: required"),
        (client.get, "/recommend", {"params": {"user": "x", "unknown": "error"}}, 404, "'x'"),
        (client.post, "/recommend", {"json": {"users": ["u1"] * 51}}, 413, "limit of 50"),
        (client.post, "/recommend", {"json": {"users": [], "k": 3}}, 422, "users"),
        (client.post, "/recommend", {"json": {"users": [1.5], "k": 3}}, 422, "users.0"),
        (client.post, "/recommend", {"json": {"users": [{"a": 1}]}}, 422, "users.0"),
        (client.post, "/recommend", {"json": {"users": "u1"}}, 422, "users"),
        (client.post, "/recommend", {"json": {"users": ["u1"], "k": "5"}}, 422, "k"),
        (client.post, "/recommend", {"json": {"users": ["u1"], "k": -1}}, 422, "k"),
        (client.post, "/recommend", {"json": {"users": ["u1"], "extra": 1}}, 422, "extra"),
        (
            client.post,
            "/recommend",
            {"json": {"users": ["u1", "zz"], "unknown": "error"}},
            404,
            "unknown user",
        ),
        (
            client.post,
            "/recommend",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "not valid JSON",
        ),
        (client.get, "/nope", {}, 404, "Not Found"),
    ]
    for _ in range(3):
        for method, url, kwargs, status, text in bad:
            r = method(url, **kwargs)
            assert r.status_code == status, (url, kwargs, r.text)
            detail = r.json()["detail"]
            assert isinstance(detail, str) and text in detail, (kwargs, detail)
    for _ in range(5):
        assert client.get("/recommend", params={"user": "u1", "k": 3}).status_code == 200
        assert client.post("/recommend", json={"users": ["u1", "u2"], "k": 30}).status_code == 200
    assert client.get("/health").status_code == 200


def test_integer_id_artifacts_check_types(tmp_path: Path, small_model) -> None:
    from fastapi.testclient import TestClient

    from tests.conftest import random_split

    split = random_split(n_users=40, n_items=60)
    path = Artifact.from_model(small_model, split).save(tmp_path / "a")
    with TestClient(create_app(path)) as c:
        assert c.get("/recommend", params={"user": "7", "k": 2}).json()["user"] == 7
        r = c.get("/recommend", params={"user": "abc"})
        assert r.status_code == 422 and "integers" in r.json()["detail"]
        assert c.post("/recommend", json={"users": [7, "8"]}).status_code == 200
        assert c.post("/recommend", json={"users": [True]}).status_code == 422
