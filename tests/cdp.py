"""A small Chrome DevTools Protocol client over `--remote-debugging-pipe`, for tests.

Chromium started with `--remote-debugging-pipe` reads protocol commands on file descriptor 3
and writes responses and events on descriptor 4; each message is one JSON object followed by a
NUL byte. Commands to a page go through a flat session (`Target.attachToTarget` with
`flatten: true`): the message carries the `sessionId`.

    with Browser() as browser:
        page = browser.open_page(url, offline=True)     # network off, only file:/data: loads
        page.evaluate("document.title")
        png = page.screenshot()
    page.console, page.exceptions, page.log, page.blocked   # what the page said / asked for

Every wait has a deadline (TimeoutError); the browser process group is always killed on exit.
No dependency beyond the standard library.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe", "--hide-scrollbars", "--mute-audio"]
ALLOWED_SCHEMES = ("file:", "data:")


class CDPError(RuntimeError):
    """The browser answered a command with an error, or died."""


class Browser:
    """One headless Chromium process driven over the DevTools pipe."""

    def __init__(self, executable: str = CHROMIUM, timeout: float = 10.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="refq-chromium-")
        self._next_id = 0
        self._buffer = b""
        self._pending = []          # events read while waiting for a response
        self._handlers = {}         # event method -> [callback(message), ...]
        child_in, self._out = os.pipe()     # we write commands; the browser reads fd 3
        self._in, child_out = os.pipe()     # the browser writes fd 4; we read

        def wire_fds():  # in the child, before exec: the pipe ends become fds 3 and 4
            a = fcntl.fcntl(child_in, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(child_out, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.close(a)
            os.close(b)

        self._stderr = open(os.path.join(self.profile, "stderr.log"), "wb")
        try:
            self.proc = subprocess.Popen(
                [executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
                close_fds=False, preexec_fn=wire_fds, start_new_session=True)
        finally:
            os.close(child_in)
            os.close(child_out)

    # -------------------------------------------------------------- lifetime
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Ask the browser to quit, then kill its process group; remove its profile."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.send("Browser.close", timeout=2.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=3.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this object started
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=3.0)
        for fd in (self._out, self._in):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def stderr_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            with open(os.path.join(self.profile, "stderr.log"), "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        return ""

    # -------------------------------------------------------------- messages
    def _write(self, message: dict):
        data = json.dumps(message).encode() + b"\0"
        while data:
            n = os.write(self._out, data)
            data = data[n:]

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the browser in time; stderr: "
                                   + self.stderr_tail(500))
            ready, _, _ = select.select([self._in], [], [], left)
            if ready:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise CDPError("the browser closed its pipe; stderr: " + self.stderr_tail())
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _dispatch(self, message: dict):
        for handler in self._handlers.get(message.get("method"), []):
            handler(message)
        self._pending.append(message)

    def post(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        """Send a command without waiting for its answer; return its id."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._write(message)
        return self._next_id

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send a command and return its result (CDPError on an error answer)."""
        ident = self.post(method, params, session)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            message = self._read(deadline)
            if message.get("id") == ident:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self._dispatch(message)

    def wait_event(self, method: str, session: str | None = None,
                   timeout: float | None = None) -> dict:
        """The first event `method` (of `session`) not yet consumed, waiting for it if needed."""
        def match(m):
            return m.get("method") == method and (session is None or m.get("sessionId") == session)

        for i, m in enumerate(self._pending):
            if match(m):
                return self._pending.pop(i)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            message = self._read(deadline)
            if "method" in message:
                self._dispatch(message)
                if match(message):
                    self._pending.remove(message)
                    return message

    def pump(self, seconds: float):
        """Read and dispatch events for `seconds`."""
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while True:
                message = self._read(deadline)
                if "method" in message:
                    self._dispatch(message)

    def on(self, method: str, handler):
        """Call `handler(message)` for every event `method` read from now on."""
        self._handlers.setdefault(method, []).append(handler)

    # -------------------------------------------------------------- pages
    def open_page(self, url: str, *, offline: bool = True, width: int = 1280,
                  height: int = 900) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.prepare(offline, width, height)
        page.navigate(url)
        return page


class Page:
    """One tab: collects console calls, exceptions, log entries and refused requests."""

    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session
        self.console, self.exceptions, self.log, self.blocked = [], [], [], []
        for method, handler in (("Runtime.consoleAPICalled", self._console),
                                ("Runtime.exceptionThrown", self._exception),
                                ("Log.entryAdded", self._log),
                                ("Fetch.requestPaused", self._request)):
            browser.on(method, self._mine(handler))

    def _mine(self, handler):
        """`handler` for this page's events only."""
        return lambda m: handler(m) if m.get("sessionId") == self.session else None

    def send(self, method, params=None, timeout=None):
        return self.browser.send(method, params, self.session, timeout)

    def _console(self, m):
        p = m["params"]
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
        self.console.append((p.get("type"), text))

    def _exception(self, m):
        d = m["params"]["exceptionDetails"]
        self.exceptions.append(d.get("exception", {}).get("description") or d.get("text"))

    def _log(self, m):
        e = m["params"]["entry"]
        self.log.append((e.get("level"), e.get("source"), e.get("text"), e.get("url", "")))

    def _request(self, m):
        p = m["params"]
        url = p["request"]["url"]
        if url.startswith(ALLOWED_SCHEMES):
            self.browser.post("Fetch.continueRequest", {"requestId": p["requestId"]},
                              m.get("sessionId"))
        else:
            self.blocked.append(url)
            self.browser.post("Fetch.failRequest", {"requestId": p["requestId"],
                                                    "errorReason": "BlockedByClient"},
                              m.get("sessionId"))

    def prepare(self, offline: bool, width: int, height: int):
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable")
        if offline:
            self.send("Network.emulateNetworkConditions",
                      {"offline": True, "latency": 0, "downloadThroughput": -1,
                       "uploadThroughput": -1})
            self.send("Fetch.enable", {"patterns": [{"urlPattern": "*"}]})
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def navigate(self, url: str):
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (JSON-able), CDPError when it throws."""
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CDPError(d.get("exception", {}).get("description") or d.get("text"))
        return r["result"].get("value")

    def click(self, x: float, y: float):
        """A real left click at viewport coordinates (CSS pixels)."""
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y,
                                                   "button": "left", "clickCount": 1})

    def content_size(self) -> tuple:
        m = self.send("Page.getLayoutMetrics")
        size = m.get("cssContentSize") or m["contentSize"]
        return size["width"], size["height"]

    def screenshot(self, timeout: float = 15.0) -> tuple:
        """(PNG bytes, (width, height)) of the whole page, beyond the viewport."""
        w, h = self.content_size()
        r = self.send("Page.captureScreenshot",
                      {"format": "png", "captureBeyondViewport": True,
                       "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}},
                      timeout=timeout)
        return base64.b64decode(r["data"]), (w, h)
