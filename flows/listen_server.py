"""Serving a listening test (`jndqa listen serve`): the test folder's files, read-only, and
``POST /api/results`` (docs/listen.md "Serving a test" is the contract).

- **Files**: Starlette's ``StaticFiles`` over the folder (``GET /`` is ``index.html``): no directory
  listing, no path outside the folder (``..``, ``%2e%2e``, absolute paths and symlinks leading out are
  404), and nothing under the inbox, the store's files or a dot-name, should they lie inside it.
- **Results**: the body is read up to ``max_body`` + 1 bytes whatever ``Content-Length`` says (413
  beyond), must be ``application/json`` (415) and is checked by strict pydantic models (422 with the
  reasons: wrong types or keys, a ``ref``/``test`` that is not one of the test's stimuli, a score
  outside its scale, another test's ``test_id``). A valid submission is written as a canonical ratings
  CSV (:mod:`jndqa.datasets.ratings`) into the inbox, the audio it names linked into
  ``<inbox>/audio/`` first (so no reader ever sees a CSV without its audio), the CSV itself created
  atomically; then, with a store, ingested by :func:`jndqa.flows.retrain.ingest` under the store's
  writer lock (one writer at a time; submissions of this process queue on a lock). 201 when stored;
  503 when the store is busy or unavailable (the CSV stays in the inbox for the next retrain). Nothing is
  written on any 4xx.

fastapi and uvicorn come with Prefect; they are imported when an app is made, not with this module.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import shutil
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

__all__ = ["CSV_COLUMNS", "MAX_BODY", "RESULTS_FORMAT", "TEST_FORMAT", "ListenFolderError", "create_app", "serve"]

TEST_FORMAT = "jndqa-listen/1"
RESULTS_FORMAT = "jndqa-listen-results/1"
MAX_BODY = 1_000_000  # bytes of a results body
MAX_ROWS = 5000
MAX_TEXT = 200  # characters of any string in a submission
CSV_COLUMNS = ("ref", "test", "score", "listener", "item", "condition", "scale", "trial", "time_ms", "kind", "test_id")
KIND_SCALE = {"jnd": "jnd", "abx": "jnd", "mushra": "mushra"}  # the scale of a test kind's rows
SCALE_RANGE = {"jnd": (0.0, 1.0), "mushra": (0.0, 100.0)}  # jnd: exactly 0 or 1
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_LISTENER = re.compile(r"[A-Za-z0-9_.@ -]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")  # would break the CSV's one-line-per-row reading
_STIMULUS = re.compile(r"audio/[^/\\.][^/\\]*")
_INGEST_LOCK = threading.Lock()  # process-wide: DuckDB has one writer, and two listeners may post at once
_STORE_OPEN_TIMEOUT = 10.0  # seconds a submission waits for another process's DuckDB connection


class ListenFolderError(ValueError):
    """A test folder that cannot be served; the message names the file and the fix."""


# ----------------------------------------------------------------- the results JSON
def _text(value: str, what: str) -> str:
    if len(value) > MAX_TEXT:
        raise ValueError(f"{what} is {len(value)} characters long, at most {MAX_TEXT} are accepted")
    if _CONTROL.search(value):
        raise ValueError(f"{what} holds control characters (line breaks, tabs, NUL, ...)")
    return value


class ResultRow(BaseModel):
    """One row of a submission (docs/listen.md "Results")."""

    model_config = ConfigDict(strict=True, extra="forbid")

    ref: str
    test: str
    score: float = Field(allow_inf_nan=False)
    scale: Literal["jnd", "mushra"]
    item: str | None = None  # null or absent: empty in the CSV
    condition: str | None = None
    trial: str | None = None
    time_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @field_validator("ref", "test", "item", "condition", "trial")
    @classmethod
    def _strings(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        _text(value, info.field_name or "a string")
        stimuli = (info.context or {}).get("stimuli")
        if info.field_name in ("ref", "test") and stimuli is not None and value not in stimuli:
            raise ValueError(f"{value!r} is not one of the test's stimuli (audio/<name> as in test.json)")
        return value

    @model_validator(mode="after")
    def _score_in_scale(self) -> ResultRow:
        low, high = SCALE_RANGE[self.scale]
        if self.scale == "jnd" and self.score not in (low, high):
            raise ValueError(f"score {self.score:g} is not 0 or 1 on the jnd scale (0 same, 1 different)")
        if not low <= self.score <= high:
            raise ValueError(f"score {self.score:g} is outside the {self.scale} scale [{low:g}, {high:g}]")
        return self


class Submission(BaseModel):
    """The body of ``POST /api/results``; the context (``test_id``, ``kind``, ``stimuli``) is the served test's."""

    model_config = ConfigDict(strict=True, extra="forbid")

    format: Literal["jndqa-listen-results/1"]
    test_id: str
    kind: Literal["jnd", "mushra", "abx"]
    listener: str
    rows: list[ResultRow] = Field(min_length=1, max_length=MAX_ROWS)

    @field_validator("listener")
    @classmethod
    def _listener(cls, value: str) -> str:
        if not _LISTENER.fullmatch(value):
            raise ValueError("listener must be 1-64 characters from A-Z a-z 0-9 _ . @ - and space")
        return value

    @field_validator("test_id")
    @classmethod
    def _test_id(cls, value: str, info: ValidationInfo) -> str:
        _text(value, "test_id")
        expected = (info.context or {}).get("test_id")
        if expected is not None and value != expected:
            raise ValueError(f"test_id {value!r} is not the served test's ({expected!r}); reload the page")
        return value

    @model_validator(mode="after")
    def _kind(self, info: ValidationInfo) -> Submission:
        expected = (info.context or {}).get("kind")
        if expected is not None and self.kind != expected:
            raise ValueError(f"kind {self.kind!r} is not the served test's ({expected!r})")
        scale = KIND_SCALE[self.kind]
        wrong = [i for i, r in enumerate(self.rows) if r.scale != scale]
        if wrong:
            raise ValueError(f"rows {', '.join(map(str, wrong[:10]))}: the rows of a {self.kind} test are on the "
                             f"{scale} scale")  # fmt: skip
        return self


def _reasons(exc: ValidationError, limit: int = 20) -> list[str]:
    """'where: why' of each error of ``exc`` (the first ``limit``), without echoing the input."""
    out = []
    for err in exc.errors(include_url=False, include_input=False)[:limit]:
        where = ""
        for part in err["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        msg = str(err["msg"]).removeprefix("Value error, ")
        out.append(f"{where}: {msg}" if where else msg)
    if exc.error_count() > limit:
        out.append(f"... and {exc.error_count() - limit} more")
    return out


# ----------------------------------------------------------------- the test folder
def _load_test(folder: Path) -> dict:
    """test.json, checked (format, test_id, kind, stimuli that are files audio/<name> inside the folder)."""
    path = folder / "test.json"
    if not (folder / "index.html").is_file():
        raise ListenFolderError(f"{folder / 'index.html'}: no such file; serve a folder made by `jndqa listen make`")
    try:
        test = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ListenFolderError(f"{path}: no such file; serve a folder made by `jndqa listen make`") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ListenFolderError(f"{path}: not a readable JSON file ({exc}); remake the test") from None
    if not isinstance(test, dict) or test.get("format") != TEST_FORMAT:
        got = test.get("format") if isinstance(test, dict) else type(test).__name__
        raise ListenFolderError(f"{path}: format {got!r} is not {TEST_FORMAT!r}; remake the test with this jndqa")
    test_id, kind, stimuli = test.get("test_id"), test.get("kind"), test.get("stimuli")
    if not isinstance(test_id, str) or not test_id or len(test_id) > MAX_TEXT or _CONTROL.search(test_id):
        raise ListenFolderError(f"{path}: test_id must be a string of 1-{MAX_TEXT} characters, not {test_id!r}")
    if kind not in KIND_SCALE:
        raise ListenFolderError(f"{path}: kind {kind!r} is not one of {', '.join(KIND_SCALE)}")
    if not isinstance(stimuli, list) or not stimuli or not all(isinstance(s, str) for s in stimuli):
        raise ListenFolderError(f"{path}: stimuli must be a non-empty list of audio/<name> paths")
    root = folder.resolve()
    for s in stimuli:
        if not _STIMULUS.fullmatch(s):
            raise ListenFolderError(f"{path}: stimulus {s!r} is not audio/<name> (a file directly in audio/)")
        real = (folder / s).resolve()
        if not real.is_relative_to(root) or not real.is_file():
            raise ListenFolderError(f"{path}: stimulus {s!r} is not a file inside {folder}; remake the test")
    return {"test_id": test_id, "kind": kind, "stimuli": frozenset(stimuli)}


def _blocked(full: str, denied: list[str]) -> bool:
    """Whether a served path (resolved) is one of ``denied`` or under one."""
    return any(full == d or full.startswith(d + os.sep) for d in denied)


def _static_files(folder: Path, denied: list[str]):
    from starlette.staticfiles import StaticFiles

    class _Folder(StaticFiles):
        def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:  # no dot-names, nothing denied
            if any(part.startswith(".") for part in Path(path).parts if part not in (".", "..")):
                return "", None
            full, st = super().lookup_path(path)
            if st is not None and _blocked(full, denied):
                return "", None
            return full, st

    return _Folder(directory=folder, html=True)


# ----------------------------------------------------------------- writing a submission
def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _csv_text(sub: Submission) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in sub.rows:
        time_ms = "" if r.time_ms is None else str(round(r.time_ms))  # csv writes None (item, ...) as empty
        w.writerow([r.ref, r.test, _number(r.score), sub.listener, r.item, r.condition, r.scale, r.trial, time_ms,
                    sub.kind, sub.test_id])  # fmt: skip
    return buf.getvalue()


class _Conflict(Exception):
    pass


def _same_file(a: Path, b: Path) -> bool:
    import filecmp

    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _check_audio(folder: Path, audio_dir: Path, names: list[str]) -> None:
    for rel in names:
        dst = audio_dir / Path(rel).name
        if (dst.exists() or dst.is_symlink()) and not _same_file(folder / rel, dst):
            raise _Conflict(f"{dst} exists with other content than {rel}; serve this test with its own --inbox")


def _link_audio(folder: Path, audio_dir: Path, names: list[str]) -> None:
    """Hard-link (else copy) each of ``names`` (audio/<name>) into ``audio_dir`` under its name."""
    audio_dir.mkdir(parents=True, exist_ok=True)
    for rel in names:
        src, dst = folder / rel, audio_dir / Path(rel).name
        if dst.exists():
            continue  # checked: the same content (names are content hashes)
        try:
            os.link(src, dst)
        except FileExistsError:
            continue  # another submission linked it meanwhile
        except OSError:  # another file system, or no hard links there
            tmp = audio_dir / f".{dst.name}.{secrets.token_hex(4)}.tmp"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)


def _write_csv(inbox: Path, listener: str, text: str) -> Path:
    """``text`` as ``<inbox>/<UTC time>-<listener>-<8 hex>.csv``, created atomically and never over another."""
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", listener)
    data = text.encode("utf-8")
    while True:
        path = inbox / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{safe}-{secrets.token_hex(4)}.csv"
        tmp = inbox / f".{path.name}.tmp"  # not *.csv: a reader of the inbox never takes it
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails rather than replace an existing file
        except FileExistsError:
            continue
        finally:
            tmp.unlink()
        return path


# ----------------------------------------------------------------- the app
def create_app(folder: Path, *, db: Path | None = None, inbox: Path | None = None, max_body: int = MAX_BODY):
    """The FastAPI app serving the test ``folder`` (read-only) and ``POST /api/results`` (module docstring).
    Raises :class:`ListenFolderError` for a folder that cannot be served (no index.html, a missing or
    invalid test.json, a stimulus that is not a file in it), :class:`jndqa.store.StoreError` for a store
    that cannot be opened."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    folder = Path(folder)
    if not folder.is_dir():
        raise ListenFolderError(f"{folder}: no such folder; give the folder `jndqa listen make` wrote")
    test = _load_test(folder)
    inbox = Path(inbox) if inbox is not None else folder / "inbox"
    try:
        inbox.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ListenFolderError(f"{inbox}: cannot make the inbox ({exc}); give another --inbox") from None
    store = None
    if db is not None:
        from jndqa.store import Store

        from .retrain import ingest

        store = Store(db, open_timeout=_STORE_OPEN_TIMEOUT)
    denied = [os.path.realpath(inbox)]
    if db is not None:
        real_db = os.path.realpath(db)
        denied += [real_db, real_db + ".wal", real_db + ".lock", real_db + ".tmp"]
    context = {"test_id": test["test_id"], "kind": test["kind"], "stimuli": test["stimuli"]}

    def reply(status: int, detail: str, **more: Any) -> JSONResponse:
        return JSONResponse({"detail": detail, **more}, status_code=status)

    def keep(sub: Submission) -> JSONResponse:
        """Write the CSV and its audio into the inbox, then store it (runs in a worker thread)."""
        names = sorted({r.ref for r in sub.rows} | {r.test for r in sub.rows})
        text = _csv_text(sub)
        try:
            _check_audio(folder, inbox / "audio", names)
        except _Conflict as exc:
            return reply(409, str(exc))
        try:
            _link_audio(folder, inbox / "audio", names)
            path = _write_csv(inbox, sub.listener, text)
        except OSError as exc:  # a full or read-only disk: not the listener's fault, and worth retrying
            return reply(503, f"the inbox {inbox} cannot be written: {exc}")
        n = len(sub.rows)
        if store is None:
            return JSONResponse({"file": path.name, "rows": n, "stored": None, "quarantined": None}, status_code=201)
        import duckdb

        from jndqa.store import StoreError

        later = f"the results are saved as {path.name} in the inbox; the next retrain from the inbox stores them"
        with _INGEST_LOCK:
            try:
                store.acquire_writer(f"listen serve {path.name}")
            except StoreError as exc:
                return reply(503, f"the store is busy: {exc}; {later}", file=path.name, rows=n)
            try:
                files, failures = ingest(store, [path])
            except (StoreError, duckdb.Error, OSError) as exc:
                return reply(503, f"the store is unavailable: {exc}; {later}", file=path.name, rows=n)
            finally:
                store.release_writer()
        if failures:  # the server wrote a file the ratings reader refuses: a bug, not bad input
            return reply(500, f"{failures[0]['reason']}; {later}", file=path.name, rows=n)
        counts = {k: v for k, v in files[0].items() if k != "file"}
        return JSONResponse({"file": path.name, "rows": n, "stored": counts, "quarantined": counts["quarantined"]},
                            status_code=201)  # fmt: skip

    app = FastAPI(title=f"jndqa listening test {test['test_id']}", docs_url=None, redoc_url=None, openapi_url=None)

    async def results(request):  # a plain Starlette endpoint: the body is read and checked here, not by FastAPI
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return reply(415, f"send the results as application/json, not {ctype or 'no content type'!r}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            return reply(413, f"the body is {int(declared)} bytes; at most {max_body} are accepted")
        body = bytearray()
        async for chunk in request.stream():  # whatever Content-Length said: stop past max_body
            body += chunk
            if len(body) > max_body:
                return reply(413, f"the body is more than {max_body} bytes; at most {max_body} are accepted")

        def constant(name: str):
            raise ValueError(f"{name} is not a JSON number")

        try:
            data = json.loads(bytes(body), parse_constant=constant)
        except (ValueError, RecursionError) as exc:
            return reply(422, f"the body is not JSON: {str(exc)[:200]}")
        try:
            sub = Submission.model_validate(data, context=context)
        except ValidationError as exc:
            reasons = _reasons(exc)
            return reply(422, "; ".join(reasons), errors=reasons)
        return await run_in_threadpool(keep, sub)

    app.add_route("/api/results", results, methods=["POST"])
    app.mount("/", _static_files(folder, denied), name="test")
    app.state.test = test
    app.state.inbox = inbox
    return app


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(folder: Path, *, db: Path | None = None, inbox: Path | None = None, host: str = "127.0.0.1",
          port: int = 8765, log: Callable[[str], Any] = print) -> None:  # fmt: skip
    """Serve the test ``folder`` with uvicorn on ``host``:``port`` until interrupted (Ctrl-C), printing
    its URL with ``log``; a host other than 127.0.0.1/localhost/::1 gets a warning that the test (and
    its results endpoint) can be reached from the network. Raises :class:`ListenFolderError` as
    :func:`create_app` does and ``OSError`` when the address cannot be bound."""
    import uvicorn

    app = create_app(folder, db=db, inbox=inbox)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        if host not in LOCAL_HOSTS:
            log(f"warning: listening on {host}: the test is reachable from the network, and anyone who reaches it "
                "can post results into the inbox" + (" and the store" if db is not None else ""))  # fmt: skip
        where = f"results to {app.state.inbox}" + (f", stored in {db}" if db is not None else "")
        log(f"serving {folder} at {_url(host, port)} ({where}); Ctrl-C stops")
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
