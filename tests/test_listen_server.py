"""`jndqa listen serve` (flows/listen_server.py) against a real uvicorn server on 127.0.0.1 (a free port,
a background thread, stopped by each test's fixture): the test folder's files and nothing outside it,
valid submissions written to the inbox and stored, hostile ones refused with nothing changed, two
listeners at once, a busy store."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pytest
import soundfile as sf

from jndqa.flows.listen_server import ListenFolderError, create_app, serve
from jndqa.flows.retrain import ingest
from jndqa.store import Store

HEADER = "ref,test,score,listener,item,condition,scale,trial,time_ms,kind,test_id"
ABX_ID = "20261205T0700Z-abx-3f2a9c"
MUSHRA_ID = "20261205T0700Z-mushra-77e1d0"
INDEX = b"<!doctype html><title>listen</title><script src=listen.js></script>"
SECRET = "top secret, outside the test folder"


def make_folder(root: Path, kind: str, test_id: str) -> Path:
    """A test folder: index.html, listen.js, test.json and three 0.5 s stimuli at 16 kHz (a: 440 Hz sine,
    b: the sine with a little noise, c: noise)."""
    (root / "audio").mkdir(parents=True)
    sr, t = 16000, np.arange(8000) / 16000
    rng = np.random.default_rng(7)
    sine = 0.3 * np.sin(2 * np.pi * 440 * t)
    noisy, noise = sine + 0.02 * rng.standard_normal(t.size), 0.1 * rng.standard_normal(t.size)
    for name, x in (("a", sine), ("b", noisy), ("c", noise)):
        sf.write(root / "audio" / f"{name}.flac", x, sr)
    (root / "index.html").write_bytes(INDEX)
    (root / "listen.js").write_text("// the page\n")
    stimuli = ["audio/a.flac", "audio/b.flac", "audio/c.flac"]
    test = {"format": "jndqa-listen/1", "test_id": test_id, "kind": kind, "run_id": "r1",
            "created": "2026-12-05T07:00:00Z", "stimuli": stimuli, "trials": []}  # fmt: skip
    (root / "test.json").write_text(json.dumps(test))
    return root


@contextmanager
def running(app):
    """``app`` served by uvicorn on 127.0.0.1 (a free port) in a background thread; yields the port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive()


def request(port: int, method: str, path: str, body=None, headers=None, **kw) -> tuple[int, bytes]:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        con.request(method, path, body=body, headers=headers or {}, **kw)
        r = con.getresponse()
        return r.status, r.read()
    finally:
        con.close()


def post(port: int, payload=None, *, body: bytes | None = None, ctype="application/json; charset=utf-8"):
    """POST /api/results; returns (status, parsed JSON answer)."""
    data = body if body is not None else json.dumps(payload).encode()
    status, answer = request(port, "POST", "/api/results", data, {"Content-Type": ctype} if ctype else {})
    return status, json.loads(answer)


def abx_payload(listener="L 1@lab", test_id=ABX_ID) -> dict:
    rows = [{"ref": "audio/a.flac", "test": "audio/b.flac", "score": 1, "scale": "jnd", "item": "it1",
             "condition": "opus-64k", "trial": str(k), "time_ms": 1830 + k} for k in range(1, 4)]  # fmt: skip
    rows[1]["score"] = 0
    return {"format": "jndqa-listen-results/1", "test_id": test_id, "kind": "abx", "listener": listener, "rows": rows}


def mushra_payload(listener: str, hidden: float) -> dict:
    rows = [{"ref": "audio/a.flac", "test": f"audio/{name}.flac", "score": score, "scale": "mushra", "item": "it1",
             "condition": name, "trial": "1"} for name, score in (("a", hidden), ("b", 70), ("c", 20.5))]  # fmt: skip
    return {"format": "jndqa-listen-results/1", "test_id": MUSHRA_ID, "kind": "mushra", "listener": listener,
            "rows": rows}  # fmt: skip


class Env:
    def __init__(self, root: Path, kind: str, test_id: str, port: int | None = None):
        self.folder = make_folder(root / "test", kind, test_id)
        self.db = root / "bench.duckdb"
        self.inbox = self.folder / "inbox"
        self.port = port

    def state(self) -> tuple:
        """What a submission may change: the inbox's files, the stored ratings and rating files."""
        files = sorted(str(p.relative_to(self.inbox)) for p in self.inbox.rglob("*"))
        con = duckdb.connect(str(self.db))
        try:
            return files, *con.execute("SELECT (SELECT count(*) FROM ratings), (SELECT count(*) FROM rating_files)"
                                       ).fetchone()  # fmt: skip
        finally:
            con.close()

    def csvs(self) -> set[str]:
        return {p.name for p in self.inbox.glob("*.csv")}


@pytest.fixture(scope="module")
def abx(tmp_path_factory):
    env = Env(tmp_path_factory.mktemp("abx"), "abx", ABX_ID)
    (env.folder.parent / "secret.txt").write_text(SECRET)
    (env.folder / "leak.txt").symlink_to(env.folder.parent / "secret.txt")
    (env.folder / ".hidden").write_text(SECRET)
    app = create_app(env.folder, db=env.db)
    (env.inbox / "planted.txt").write_text(SECRET)
    with running(app) as env.port:
        yield env


def test_serves_the_folder_and_nothing_outside_it(abx):
    assert request(abx.port, "GET", "/") == (200, INDEX)
    assert request(abx.port, "GET", "/audio/a.flac") == (200, (abx.folder / "audio" / "a.flac").read_bytes())
    assert request(abx.port, "GET", "/test.json")[0] == 200
    assert request(abx.port, "GET", "/listen.js") == (200, b"// the page\n")
    for path in ("/%2e%2e/secret.txt", "/../secret.txt", "/audio/../../secret.txt", "/audio/%2e%2e/%2e%2e/secret.txt",
                 "/%2e%2e/bench.duckdb", "/audio/../../etc/passwd", "//etc/passwd", "/leak.txt", "/.hidden",
                 "/inbox/planted.txt", "/inbox/", "/audio/", "/audio", "/api/results"):  # fmt: skip
        status, body = request(abx.port, "GET", path)
        assert status == 404 and SECRET.encode() not in body and b"<a href" not in body, path
    assert request(abx.port, "POST", "/index.html", b"{}", {"Content-Type": "application/json"})[0] == 405


def test_a_valid_abx_submission_is_written_to_the_inbox_and_stored(abx):
    files, ratings, _ = abx.state()
    status, answer = post(abx.port, abx_payload())
    assert status == 201, answer
    name = answer["file"]
    assert re.fullmatch(r"\d{8}T\d{6}Z-L_1@lab-[0-9a-f]{8}\.csv", name)
    assert answer["rows"] == 3 and answer["quarantined"] == 0
    assert answer["stored"] == {"format": "ratings-csv", "rows": 3, "new": 3, "known": 0, "quarantined": 0,
                                "file_seen_before": False, "quarantine_kinds": {}}  # fmt: skip
    assert (abx.inbox / name).read_text().splitlines() == [
        HEADER,
        f"audio/a.flac,audio/b.flac,1,L 1@lab,it1,opus-64k,jnd,1,1831,abx,{ABX_ID}",
        f"audio/a.flac,audio/b.flac,0,L 1@lab,it1,opus-64k,jnd,2,1832,abx,{ABX_ID}",
        f"audio/a.flac,audio/b.flac,1,L 1@lab,it1,opus-64k,jnd,3,1833,abx,{ABX_ID}",
    ]
    for n in ("a.flac", "b.flac"):  # hard-linked: the same file
        assert (abx.inbox / "audio" / n).stat().st_ino == (abx.folder / "audio" / n).stat().st_ino
    assert not (abx.inbox / "audio" / "c.flac").exists()
    after, n_ratings, _ = abx.state()
    assert set(after) - set(files) == {name} | ({"audio", "audio/a.flac", "audio/b.flac"} - set(files))
    assert n_ratings == ratings + 3
    rows = [r for r in Store(abx.db).ratings() if r["source"] == str(abx.inbox / name)]
    assert sorted(r["score"] for r in rows) == [0.0, 1.0, 1.0]
    assert {(r["listener"], r["scale"], r["item"], r["condition"]) for r in rows} == {("L 1@lab", "jnd", "it1",
                                                                                        "opus-64k")}  # fmt: skip
    assert {json.loads(r["extra"])["test_id"] for r in rows} == {ABX_ID}
    status, again = post(abx.port, abx_payload())  # the same ratings again: a new file, nothing new stored
    assert status == 201 and again["file"] != name
    assert (again["stored"]["new"], again["stored"]["known"]) == (0, 3)


def test_two_listeners_posting_at_once_are_both_stored(abx):
    _, ratings, rating_files = abx.state()
    csvs = abx.csvs()
    barrier, answers = threading.Barrier(2), {}

    def listener(name):
        barrier.wait(10)
        answers[name] = post(abx.port, abx_payload(name))

    threads = [threading.Thread(target=listener, args=(n,)) for n in ("L2", "L3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert {n: (s, a["stored"]["new"]) for n, (s, a) in answers.items()} == {"L2": (201, 3), "L3": (201, 3)}
    new = abx.csvs() - csvs
    assert len(new) == 2 and {answers["L2"][1]["file"], answers["L3"][1]["file"]} == new
    _, n_ratings, n_files = abx.state()
    assert (n_ratings, n_files) == (ratings + 6, rating_files + 2)


def _with(path: str, value) -> bytes:
    """The valid abx payload with ``value`` set at ``path`` (keys and row indexes joined by '.')."""
    payload = abx_payload()
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = payload
    for p in parents:
        node = node[p]
    node[last] = value
    return json.dumps(payload).encode()


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


HOSTILE = {  # case: (body, content type, status, a fragment of the answer's detail)
    "ref ../../etc/passwd": (_with("rows.0.ref", "../../etc/passwd"), None, 422,
                             "rows[0].ref: '../../etc/passwd' is not one of the test's stimuli"),
    "ref /etc/passwd": (_with("rows.0.ref", "/etc/passwd"), None, 422, "rows[0].ref: '/etc/passwd' is not one"),
    "test audio/../test.json": (_with("rows.1.test", "audio/../test.json"), None, 422,
                                "rows[1].test: 'audio/../test.json' is not one"),
    "unknown stimulus": (_with("rows.2.test", "audio/zz.flac"), None, 422, "rows[2].test: 'audio/zz.flac' is not one"),
    "score as string": (_with("rows.0.score", "1"), None, 422, "rows[0].score: Input should be a valid number"),
    "score true": (_with("rows.0.score", True), None, 422, "rows[0].score"),
    "jnd score 2": (_with("rows.0.score", 2), None, 422, "rows[0]: score 2 is not 0 or 1 on the jnd scale"),
    "score NaN": (_with("rows.0.score", 0).replace(b'"score": 0', b'"score": NaN'), None, 422, "NaN is not"),
    "rows not a list": (_with("rows", {"ref": "audio/a.flac"}), None, 422, "rows: Input should be a valid list"),
    "no rows": (_with("rows", []), None, 422, "rows: List should have at least 1 item"),
    "5001 rows": (_with("rows", [abx_payload()["rows"][0]] * 5001), None, 422, "rows: List should have at most 5000"),
    "listener with a slash": (_with("listener", "L1/../x"), None, 422, "listener: listener must be 1-64"),
    "listener of 65": (_with("listener", "L" * 65), None, 422, "listener: listener must be 1-64"),
    "empty listener": (_with("listener", ""), None, 422, "listener: listener must be 1-64"),
    "item with a line break": (_with("rows.0.item", "a\nref,test"), None, 422, "rows[0].item: item holds control"),
    "item of 201": (_with("rows.0.item", "i" * 201), None, 422, "rows[0].item: item is 201 characters long"),
    "trial as number": (_with("rows.0.trial", 3), None, 422, "rows[0].trial: Input should be a valid string"),
    "negative time": (_with("rows.0.time_ms", -1), None, 422, "rows[0].time_ms"),
    "wrong test_id": (_with("test_id", "other"), None, 422, f"test_id 'other' is not the served test's ('{ABX_ID}')"),
    "wrong kind": (_with("kind", "mushra"), None, 422, "kind 'mushra' is not the served test's ('abx')"),
    "mushra row in an abx test": (_with("rows.0.scale", "mushra"), None, 422,
                                  "rows 0: the rows of a abx test are on the jnd scale"),
    "wrong format": (_with("format", "jndqa-listen-results/2"), None, 422, "format: Input should be"),
    "extra key": (_with("comment", "hi"), None, 422, "comment: Extra inputs are not permitted"),
    "extra row key": (_with("rows.0.path", "/etc/passwd"), None, 422, "rows[0].path: Extra inputs are not permitted"),
    "not JSON": (b"ref,test,score\n", None, 422, "the body is not JSON"),
    "a JSON list": (b"[1, 2]", None, 422, "valid dictionary"),
    "deep nesting": (_nested(200_000), None, 422, "the body is not JSON"),
    "text/plain": (_with("listener", "L9"), "text/plain", 415, "application/json"),
    "form": (b"listener=L9", "application/x-www-form-urlencoded", 415, "application/json"),
    "no content type": (_with("listener", "L9"), "", 415, "no content type"),
    "over 1 MB": (_with("rows.0.item", "x" * 1_000_001), None, 413, "at most 1000000"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_payloads_are_refused_and_change_nothing(abx, case):
    body, ctype, expected, fragment = HOSTILE[case]
    before = abx.state()
    status, answer = post(abx.port, body=body, ctype="application/json" if ctype is None else ctype)
    assert (status, before) == (expected, abx.state())
    assert fragment in answer["detail"], answer


def test_oversized_bodies_without_an_honest_length_are_refused(abx):
    before = abx.state()
    chunks = [b"[" + b"0," * 30_000] * 20  # 1.2 MB, chunked: no Content-Length at all
    status, answer = request(abx.port, "POST", "/api/results", iter(chunks), {"Content-Type": "application/json"},
                             encode_chunked=True)  # fmt: skip
    assert status == 413 and b"more than 1000000 bytes" in answer
    # A Content-Length smaller than the body: the server reads only what it announced (not JSON: 422);
    # the rest is no request (400) and the connection is closed.
    body = json.dumps(abx_payload("L8")).encode()
    with socket.create_connection(("127.0.0.1", abx.port), timeout=10) as s:
        s.sendall(b"POST /api/results HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 40\r\n\r\n" + body)  # fmt: skip
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 422 ") and b"the body is not JSON" in answer
    assert abx.state() == before


def test_the_app_reads_no_more_than_max_body_whatever_content_length_says(tmp_path):
    """The ASGI app itself, fed by a client that announces 10 bytes and never stops sending."""
    env = Env(tmp_path, "abx", ABX_ID)
    app = create_app(env.folder, max_body=100_000)
    received, sent = [0], []

    async def receive():
        received[0] += 65536
        return {"type": "http.request", "body": b" " * 65536, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/results", "raw_path": b"/api/results", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"10")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}  # fmt: skip
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    assert sent[0]["status"] == 413 and received[0] == 2 * 65536
    assert list(env.inbox.iterdir()) == []


def test_a_busy_store_answers_503_and_keeps_the_csv_in_the_inbox(abx):
    """The server takes the store's writer lock (an flock: a second one fails even within one process)
    for each ingest and does not wait for it."""
    _, ratings, _ = abx.state()
    csvs = abx.csvs()
    holder = Store(abx.db)
    holder.acquire_writer("x")
    try:
        status, answer = post(abx.port, abx_payload("L4"))
        assert status == 503
        assert "database in use by run x (pid" in answer["detail"] and "next retrain" in answer["detail"]
        assert abx.csvs() - csvs == {answer["file"]} and answer["rows"] == 3
        assert abx.state()[1] == ratings
    finally:
        holder.release_writer()
    files, failures = ingest(Store(abx.db), [abx.inbox / answer["file"]])
    assert failures == [] and (files[0]["new"], files[0]["quarantined"]) == (3, 0)
    assert abx.state()[1] == ratings + 3
    status, answer = post(abx.port, abx_payload("L5"))  # the lock is free again
    assert status == 201 and answer["stored"]["new"] == 3


def test_mushra_submissions_and_post_screening(tmp_path):
    env = Env(tmp_path, "mushra", MUSHRA_ID)
    with running(create_app(env.folder, db=env.db)) as port:
        status, answer = post(port, mushra_payload("M1", 100))
        assert status == 201 and (answer["stored"]["new"], answer["quarantined"]) == (3, 0)
        assert (env.inbox / answer["file"]).read_text().splitlines()[1:] == [
            f"audio/a.flac,audio/a.flac,100,M1,it1,a,mushra,1,,mushra,{MUSHRA_ID}",
            f"audio/a.flac,audio/b.flac,70,M1,it1,b,mushra,1,,mushra,{MUSHRA_ID}",
            f"audio/a.flac,audio/c.flac,20.5,M1,it1,c,mushra,1,,mushra,{MUSHRA_ID}",
        ]
        status, answer = post(port, mushra_payload("M2", 40))  # hidden reference rated 40: screened out
        assert status == 201 and answer["stored"]["new"] == 0 and answer["quarantined"] == 3
        assert answer["stored"]["quarantine_kinds"] == {"post-screening": 3}
        before = env.state()
        payload = mushra_payload("M3", 100)
        payload["rows"][1]["score"] = 101
        status, answer = post(port, payload)
        assert status == 422 and "rows[1]: score 101 is outside the mushra scale [0, 100]" in answer["detail"]
        payload["rows"][1]["scale"] = "jnd"
        payload["rows"][1]["score"] = 1
        status, answer = post(port, payload)
        assert status == 422 and "rows 1: the rows of a mushra test are on the mushra scale" in answer["detail"]
        assert env.state() == before
        assert sorted(p.name for p in (env.inbox / "audio").iterdir()) == ["a.flac", "b.flac", "c.flac"]
    assert len(Store(env.db).ratings(scale="mushra")) == 3


def test_without_a_store_and_with_a_conflicting_inbox(tmp_path):
    env = Env(tmp_path, "abx", ABX_ID)
    (env.inbox / "audio").mkdir(parents=True)
    (env.inbox / "audio" / "a.flac").write_bytes(b"another test's a.flac")
    with running(create_app(env.folder)) as port:
        status, answer = post(port, abx_payload())
        assert status == 409 and "a.flac exists with other content" in answer["detail"]
        assert sorted(p.name for p in env.inbox.rglob("*")) == ["a.flac", "audio"]
        payload = abx_payload()
        for row in payload["rows"]:
            row["ref"] = "audio/c.flac"
        payload["rows"][0].update(item=None, condition=None)  # null: empty
        del payload["rows"][1]["trial"], payload["rows"][1]["time_ms"]  # absent: empty
        status, answer = post(port, payload)
        assert status == 201 and (answer["rows"], answer["stored"], answer["quarantined"]) == (3, None, None)
        assert (env.inbox / answer["file"]).read_text().splitlines()[1:3] == [
            f"audio/c.flac,audio/b.flac,1,L 1@lab,,,jnd,1,1831,abx,{ABX_ID}",
            f"audio/c.flac,audio/b.flac,0,L 1@lab,it1,opus-64k,jnd,,,abx,{ABX_ID}",
        ]
        assert sorted(p.name for p in (env.inbox / "audio").iterdir()) == ["a.flac", "b.flac", "c.flac"]
    assert not env.db.exists()


def test_a_folder_that_cannot_be_served_is_named(tmp_path):
    env = Env(tmp_path, "abx", ABX_ID)
    test = env.folder / "test.json"
    good = test.read_text()
    test.write_text("{not json")
    with pytest.raises(ListenFolderError, match=r"test\.json: not a readable JSON file"):
        create_app(env.folder)
    test.write_text(good.replace("audio/c.flac", "audio/zz.flac"))
    with pytest.raises(ListenFolderError, match=r"test\.json: stimulus 'audio/zz.flac' is not a file inside"):
        create_app(env.folder)
    test.write_text(good.replace("audio/c.flac", "../secret.flac"))
    with pytest.raises(ListenFolderError, match=r"stimulus '../secret.flac' is not audio/<name>"):
        create_app(env.folder)
    test.write_text(good.replace("jndqa-listen/1", "jndqa-listen/9"))
    with pytest.raises(ListenFolderError, match=r"test\.json: format 'jndqa-listen/9' is not 'jndqa-listen/1'"):
        create_app(env.folder)
    test.unlink()
    with pytest.raises(ListenFolderError, match=r"test\.json: no such file"):
        create_app(env.folder)


def test_serve_binds_prints_the_url_and_warns_off_localhost(tmp_path, monkeypatch):
    import uvicorn

    env = Env(tmp_path, "abx", ABX_ID)
    runs = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: runs.append(sockets[0].getsockname()))
    lines = []
    serve(env.folder, port=0, log=lines.append)
    port = runs[0][1]
    assert runs[0][0] == "127.0.0.1" and port > 0
    assert len(lines) == 1 and f"at http://127.0.0.1:{port}/ " in lines[0] and "warning" not in lines[0]
    lines.clear()
    serve(env.folder, host="0.0.0.0", port=0, log=lines.append)
    assert lines[0].startswith("warning: listening on 0.0.0.0: the test is reachable from the network")
    assert f"at http://0.0.0.0:{runs[1][1]}/" in lines[1]
