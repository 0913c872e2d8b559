"""The web layer that serve, server and ui share: the guard against other sites' pages (Origin,
Sec-Fetch-Site, the API key), JSON bodies only as application/json, one id rule and lookup, the
worker-process supervisor, and `server`/`ui` making a key per start when none is given."""

from __future__ import annotations

import re
import time

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from tunesmith.cli import main
from tunesmith.web.bodies import read_json
from tunesmith.web.children import Children, log_tail
from tunesmith.web.errors import EXCEPTION_HANDLERS, RequestError
from tunesmith.web.guard import LOOPBACK_HOSTS, Guard, same_origin
from tunesmith.web.ids import id_pattern, lookup, new_id

KEY = "sk-web-test"
OWN = "http://127.0.0.1:8000"
"""The origin the test client's requests go to (its Host header is 127.0.0.1:8000)."""


@pytest.fixture(scope="module")
def web():
    """A guarded app with a JSON route, as serve's, server's and the page's routes are guarded."""
    async def echo(request: Request) -> Response:
        return JSONResponse(await read_json(request, 1000))

    async def listing(request: Request) -> Response:
        return JSONResponse({"data": []})

    app = Starlette(routes=[Route("/v1/echo", echo, methods=["POST"]), Route("/v1/list", listing, methods=["GET"])],
                    exception_handlers=EXCEPTION_HANDLERS)
    return TestClient(Guard(app, KEY, LOOPBACK_HOSTS), base_url=OWN)


def auth(**headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}", **headers}


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "http://127.0.0.1:9999"},  # another port of our own host: another origin
    {"Origin": "null"},  # a sandboxed frame's, or a no-referrer page's
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:8000"},
])
def test_a_state_change_from_another_sites_page_is_403_even_with_the_key(web, headers):
    r = web.post("/v1/echo", json={"a": 1}, headers=auth(**headers))
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "cross_origin" and r.json()["error"]["type"] == "permission_error"


def test_the_servers_own_page_and_clients_without_an_origin_pass_with_the_key(web):
    own = {"Origin": OWN, "Sec-Fetch-Site": "same-origin"}
    assert web.post("/v1/echo", json={"a": 1}, headers=auth(**own)).json() == {"a": 1}
    assert web.post("/v1/echo", json={"a": 2}, headers=auth()).json() == {"a": 2}  # the openai client sends no Origin
    for headers in (own, {}):  # ...and without the key, neither gets in
        r = web.post("/v1/echo", json={"a": 1}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    # A read from another site's page passes the Origin rule (the browser keeps our answer from it:
    # no CORS headers) but still needs the key, which that page does not have.
    assert web.get("/v1/list", headers={"Origin": "http://evil.example"}).status_code == 401
    assert web.get("/v1/list", headers=auth(Origin="http://evil.example")).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_a_json_route_refuses_a_body_of_another_type_with_415(web, content_type):
    r = web.post("/v1/echo", content=b'{"a": 1}', headers=auth(**{"Content-Type": content_type}))
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "unsupported_media_type" and content_type.split(";")[0] in r.text


def test_a_json_route_reads_application_json_with_parameters_or_an_undeclared_body(web):
    r = web.post("/v1/echo", content=b'{"a": 1}', headers=auth(**{"Content-Type": "Application/JSON; charset=utf-8"}))
    assert r.json() == {"a": 1}
    assert web.post("/v1/echo", content=b'{"a": 3}', headers=auth()).json() == {"a": 3}  # curl --data-binary @f


def test_same_origin_compares_the_origin_with_the_host_header():
    assert same_origin({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000"})
    assert same_origin({"host": "tunesmith.example.com", "origin": "https://Tunesmith.example.com"})  # a TLS proxy
    assert same_origin({"host": "127.0.0.1:8000"})
    assert not same_origin({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8001"})
    assert not same_origin({"host": "", "origin": "null"})
    assert not same_origin({"host": "127.0.0.1:8000", "sec-fetch-site": "cross-site"})


def test_one_id_rule_and_a_lookup_that_checks_the_id_first():
    file_id = new_id("file")
    assert id_pattern("file").fullmatch(file_id) and len(file_id) == len("file-") + 24
    assert new_id("file") != file_id and not id_pattern("ftjob").fullmatch(file_id)
    asked = []
    missing = RequestError(404, "no such file", "file_id", "file_not_found")

    def get(value):
        asked.append(value)
        return {"id": value} if value == file_id else None

    assert lookup(file_id, id_pattern("file"), get, missing) == {"id": file_id}
    for bad in ("../tunesmith.db", "file-" + "0" * 24):
        with pytest.raises(RequestError) as refused:
            lookup(bad, id_pattern("file"), get, missing)
        assert refused.value is missing
    assert asked == [file_id, "file-" + "0" * 24]  # the path-like id never reached the lookup


def test_the_supervisor_starts_reaps_and_stops_its_children(tmp_path):
    children: Children[str] = Children(stop_wait_s=10)
    # `python -m timeit STATEMENT... SERVER_PID`: the server's pid is one more (harmless) statement.
    children.start("quick", "timeit", ["-n", "1", "-r", "1", "pass"], tmp_path / "quick.log")
    children.start("slow", "timeit", ["-n", "1", "-r", "1", "import time; time.sleep(60)"], tmp_path / "slow.log")
    while children.alive("quick"):
        pass
    assert children.alive("slow") and children.reap() == {"quick": 0} and list(children) == ["slow"]
    assert "loop" in log_tail(tmp_path / "quick.log")  # timeit's own report, appended to its log
    assert children.stop() == {"slow": -15} and list(children) == []  # SIGTERM ends it


@pytest.mark.parametrize("command", ["ui", "server"])
def test_a_start_without_a_key_makes_a_random_one_and_prints_it(monkeypatch, tmp_path, command):
    """As Jupyter's token: a new key per start, printed, and the page opened with it (in the
    fragment, which the browser never sends)."""
    import tunesmith.cli_server
    import tunesmith.server.app

    monkeypatch.delenv("TUNESMITH_API_KEY", raising=False)
    started, opened = [], []
    monkeypatch.setattr(tunesmith.server.app, "run_server", lambda settings, build: started.append(settings))
    monkeypatch.setattr(tunesmith.cli_server, "_open_when_up", lambda url, page: opened.append((url, page)))
    outputs = [CliRunner().invoke(main, [command, "--home", str(tmp_path), "--port", "8123"]) for _ in range(2)]
    assert all(o.exit_code == 0 for o in outputs), outputs[0].output
    keys = [s.api_key for s in started]
    assert all(re.fullmatch(r"[0-9a-f]{48}", k) for k in keys) and keys[0] != keys[1]
    for output, key in zip(outputs, keys):
        printed = re.search(r"http://\S+", output.output).group(0)
        if command == "ui":
            assert printed == f"http://127.0.0.1:8123/#key={key}"
        else:
            assert printed == "http://127.0.0.1:8123/v1" and f"API key {key}" in output.output
    if command == "ui":
        for _ in range(100):  # the opener runs in a thread
            if len(opened) == 2:
                break
            time.sleep(0.01)
        assert opened == [("http://127.0.0.1:8123/", f"http://127.0.0.1:8123/#key={k}") for k in keys]
    given = CliRunner().invoke(main, [command, "--home", str(tmp_path), "--api-key", "sk-mine", "--no-open"]
                               if command == "ui" else [command, "--home", str(tmp_path), "--api-key", "sk-mine"])
    assert started[-1].api_key == "sk-mine" and "sk-mine" not in given.output.replace("#key=sk-mine", "")
