"""A minimal headless-Chromium driver for report tests, over the DevTools protocol.

Real browser, no mocks: Debian's ``chromium`` runs headless with a fresh profile, the page is
loaded from ``file://``, and every console error, uncaught exception, failed resource load and
JavaScript dialog (``alert``) is recorded. Uses the ``websockets`` package Prefect already
depends on; no browser download.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--mute-audio",
    "--remote-debugging-port=0",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


@dataclass
class PageLoad:
    url: str
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    dialogs: list[str] = field(default_factory=list)  # alert/confirm/prompt messages


class Chromium:
    def __init__(self, exe: str, timeout: float = 60.0):
        self.profile = tempfile.mkdtemp(prefix="jndqa-chromium-")
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        port = None
        deadline = time.monotonic() + timeout
        while port is None:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.proc.returncode} before DevTools started")
            if "DevTools listening on ws://" in line:
                port = int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not start DevTools in time")
        self._drain = __import__("threading").Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        from websockets.sync.client import connect

        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
        self._id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        # A desktop-sized viewport from the start: pages lay out once, as an engineer sees them.
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip

    def _drain_stderr(self) -> None:
        for _ in self.proc.stderr:
            pass

    def send(self, method: str, params: dict | None = None) -> dict:
        self._id += 1
        msg_id = self._id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + self.timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict) -> None:
        self.events.append(msg)
        if msg.get("method") == "Page.javascriptDialogOpening":  # never leave the page blocked
            self.ws.send(json.dumps({"id": 0, "method": "Page.handleJavaScriptDialog", "params": {"accept": True}}))

    def pump(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self._event(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                return

    def evaluate(self, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:60]}...: {res['exceptionDetails']}")
        return res["result"].get("value")

    def load(self, path: Path, *, ready: str = "true", settle: float = 0.5) -> PageLoad:
        """Open ``path`` and wait for its load event and for the JS expression ``ready``."""
        self.events.clear()
        url = path.resolve().as_uri()
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: no load event")
            self.pump(0.1)
        while not self.evaluate(ready):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: never ready ({ready})")
            self.pump(0.1)
        self.pump(settle)
        out = PageLoad(url)
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.errors.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.errors.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
            elif method == "Page.javascriptDialogOpening":
                out.dialogs.append(p.get("message", ""))
        return out

    def wait(self, expression: str, seconds: float = 10.0):
        """Pump events until the JS ``expression`` is truthy; its value (TimeoutError after ``seconds``)."""
        deadline = time.monotonic() + seconds
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true within {seconds:g} s: {expression}")
            self.pump(0.05)
        return value

    def download(self, link: str, target: Path, seconds: float = 10.0) -> Path:
        """Click the download link ``link`` (a CSS selector) with downloads going to ``target``; the saved file."""
        target.mkdir(parents=True, exist_ok=True)
        self.send("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(target)})
        path = target / self.evaluate(f"document.querySelector({json.dumps(link)}).download")
        self.evaluate(f"document.querySelector({json.dumps(link)}).click()")
        deadline = time.monotonic() + seconds
        while not (path.is_file() and path.stat().st_size):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no download {path.name} in {target} within {seconds:g} s")
            self.pump(0.05)
        return path

    def screenshot(self, path: Path) -> None:
        """The whole page as PNG, at the fixed 1400-px-wide viewport the pages were laid out in."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1}
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)
