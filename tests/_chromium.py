"""A real headless Chromium for the HTML reports' tests and benchmark (Debian's package,
scripts/install-chromium.sh), driven through the DevTools protocol over a pipe: Python's
standard library only, no port, no websocket.

``open_page(path)`` loads one local file and returns what a person's browser would have seen:

- ``console``: every console message (console.log/error/..., the browser's own log lines such
  as CSP violations and failed loads), ``errors``: those of level error plus uncaught exceptions;
- ``requests``: every request the page attempted other than the file itself (and data:/blob:
  URLs, which never leave the page), with why it did not happen (CSP, blocked by this harness);
- ``dom``: the DOM after load, ``dom_after``/``result``: after ``script`` ran (or ``keys`` were
  pressed, as real key events), ``screenshot``: a PNG, ``timing``: the page's navigation and
  paint timing, plus the wall time from navigate to the load event.

No network is possible: every request the page makes is paused and failed by the harness
(Fetch domain), host names resolve to nothing and the proxy is a closed loopback port, so even
a request the harness failed to see could not leave the machine. (Not seen: requests of a
worker the page starts; the reports start none, and those could not leave either.)

``png_stats``/``png_is_blank`` decode a PNG with zlib (no Pillow).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The Debian package's real binary; /usr/bin/chromium is a shell wrapper that adds flags we
# do not want (GPU rasterisation) and prints a warning on some machines.
_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")

FLAGS = [
    "--headless=new",
    "--no-sandbox",  # root, in a container
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
    "--font-render-hinting=none",
    # Nothing can leave: no name resolves and every connection goes to a closed loopback port.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--remote-debugging-pipe",
]

# URLs that are not requests: they never leave the page.
_NOT_REQUESTS = ("data:", "blob:", "about:")

_KEYS = {  # key -> (code, windowsVirtualKeyCode)
    "/": ("Slash", 191), "Escape": ("Escape", 27), "Enter": ("Enter", 13), "ArrowDown": ("ArrowDown", 40),
    "ArrowUp": ("ArrowUp", 38), "Tab": ("Tab", 9), "?": ("Slash", 191),
}


class ChromiumError(RuntimeError):
    pass


def chromium_binary() -> str | None:
    """The browser to run (CWM_AGENT_CHROMIUM, when set, and only it), or None where none is installed."""
    env = os.environ.get("CWM_AGENT_CHROMIUM")
    for candidate in [env] if env else _CANDIDATES:
        found = shutil.which(candidate) if not os.path.isabs(candidate) else (
            candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    return None


def chromium_version() -> str:
    binary = chromium_binary()
    if binary is None:
        raise ChromiumError("chromium is not installed: run scripts/install-chromium.sh")
    return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()


@dataclass
class PageResult:
    url: str
    console: list[dict] = field(default_factory=list)    # {"level", "text", "source", "url"}
    exceptions: list[str] = field(default_factory=list)  # uncaught errors and rejections
    requests: list[dict] = field(default_factory=list)   # {"url", "type", "blocked"}
    dom: str = ""
    dom_after: str | None = None
    result: Any = None
    screenshot: Path | None = None
    timing: dict = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        """Everything a person would see in red in the console."""
        return self.exceptions + [f"{m['source']}: {m['text']}" for m in self.console if m["level"] == "error"]


class Browser:
    """One Chromium process; ``open`` loads pages in fresh tabs, one after the other."""

    def __init__(self, *, timeout: float = 60, size: tuple[int, int] = (1280, 800)):
        binary = chromium_binary()
        if binary is None:
            raise ChromiumError("chromium is not installed: run scripts/install-chromium.sh")
        self.timeout = timeout
        self.size = size
        self._profile = tempfile.mkdtemp(prefix="cwm-chromium-")
        self._stderr = open(Path(self._profile) / "stderr.log", "wb")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire():  # the child reads commands on fd 3 and writes answers on fd 4
            # out of the way first (either end may already be fd 3 or 4), then into place
            high_r, high_w = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self._proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={size[0]},{size[1]}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr, preexec_fn=wire,
            close_fds=True, pass_fds=(3, 4), start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        self._pages: dict[str, str] = {}  # session -> the URL it may load
        try:
            self.version = self.send("Browser.getVersion")["product"]
        except Exception:
            self.close()
            raise

    # -- the protocol ------------------------------------------------------------------------
    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        message_id = self._post(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise ChromiumError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _post(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        """Send without waiting for the answer (which _read then drops)."""
        self._next_id += 1
        message: dict = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        return self._next_id

    def pump(self, seconds: float) -> None:
        """Read events for a while (requests a script started, late console messages)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._read(deadline, quiet=True)
            except TimeoutError:
                return

    def _read(self, deadline: float, quiet: bool = False) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                if quiet:
                    raise TimeoutError
                raise ChromiumError(f"no answer from chromium in {self.timeout}s; see {self._stderr.name}")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise ChromiumError(f"chromium exited ({self._proc.poll()}); see {self._stderr.name}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self._events.append(message)
            if message["method"] == "Fetch.requestPaused" and message.get("sessionId") in self._pages:
                self._answer(message, self._pages[message["sessionId"]])
        return message

    def _answer(self, event: dict, url: str) -> None:
        """A paused request: the page's own file goes on, anything else fails (answered at once,
        since the page's load, and so Page.navigate's own answer, may wait on it)."""
        params = event["params"]
        wanted = params["request"]["url"]
        if wanted.split("#")[0] == url or wanted.startswith(_NOT_REQUESTS):
            self._post("Fetch.continueRequest", {"requestId": params["requestId"]}, event["sessionId"])
        else:
            event["_blocked_by_harness"] = True
            self._post("Fetch.failRequest", {"requestId": params["requestId"], "errorReason": "BlockedByClient"},
                       event["sessionId"])

    # -- pages -------------------------------------------------------------------------------
    def open(self, path: str | Path, *, script: str | None = None, keys: tuple[str, ...] | list[str] = (),
             screenshot: str | Path | None = None, full_page: bool = False, settle: float = 0.3,
             size: tuple[int, int] | None = None, fragment: str = "") -> PageResult:
        """Load ``path`` in a new tab and report on it (see the module's docstring).

        ``keys`` are pressed (real key events, in order) after load, then ``script`` (a JS
        expression; its value, awaited and JSON-able, is ``result``) runs; ``dom_after`` is the DOM then.
        ``fragment`` opens ``path#fragment``.
        """
        path = Path(path).resolve()
        if not path.is_file():
            raise FileNotFoundError(path)
        url = path.as_uri()
        width, height = size or self.size
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        first_event = len(self._events)
        self._pages[session] = url
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.send(f"{domain}.enable", {}, session)
            # every request pauses here: the page's own file goes on, anything else is failed
            self.send("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, session)
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
            self.send("Emulation.setFocusEmulationEnabled", {"enabled": True}, session)
            # requests the page's CSP stopped before they reached the network layer
            self.send("Page.addScriptToEvaluateOnNewDocument", {"source": _CSP_LISTENER}, session)
            started = time.monotonic()
            # the load event, answering paused requests meanwhile (the file itself is one)
            self._post("Page.navigate", {"url": url + (f"#{fragment}" if fragment else "")}, session)
            self._until(session, "Page.loadEventFired", first_event)
            wall_load = time.monotonic() - started
            timing = self._evaluate(session, _TIMING_JS, await_promise=True) or {}
            timing["wall_load_ms"] = round(wall_load * 1000, 1)
            result = PageResult(url=url, timing=timing)
            result.dom = self._evaluate(session, "document.documentElement.outerHTML")
            if screenshot is not None:
                shot = self._screenshot(session, full_page)
                Path(screenshot).write_bytes(shot)
                result.screenshot = Path(screenshot)
            if keys or script is not None:
                for key in keys:
                    self.press(session, key)
                if script is not None:
                    result.result = self._evaluate(session, script, await_promise=True)
                result.dom_after = self._evaluate(session, "document.documentElement.outerHTML")
            self.pump(settle)  # late messages and requests (timers, a fetch the script started)
            self._collect(result, self._events[first_event:], session, url)
            for blocked in self._evaluate(session, "window.__cwmCspViolations || []"):
                # blockedURI is the URL, or just its scheme ("file") when the browser keeps the rest private
                known = {r["url"] for r in result.requests} | {r["url"].split(":")[0] for r in result.requests}
                if blocked["url"] not in known and blocked["url"] not in ("inline", "eval", "data", "blob"):
                    result.requests.append({"url": blocked["url"], "type": blocked["directive"], "blocked": "csp"})
            return result
        finally:
            try:
                self.send("Target.closeTarget", {"targetId": target})
            except ChromiumError:
                pass
            self._pages.pop(session, None)
            self._events = [e for e in self._events if e.get("sessionId") != session]

    def press(self, session: str, key: str) -> None:
        if len(key) == 1 and key not in _KEYS:
            code = f"Key{key.upper()}" if key.isalpha() else f"Digit{key}" if key.isdigit() else ""
            vk = ord(key.upper())
            text = key
        else:
            code, vk = _KEYS[key]
            text = key if len(key) == 1 else ("\r" if key == "Enter" else "")
        base = {"key": key, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", **base, **({"text": text} if text else {})}, session)
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **base}, session)

    def _until(self, session: str, method: str, since: int) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e["method"] == method and e.get("sessionId") == session for e in self._events[since:]):
            self._read(deadline)

    def _evaluate(self, session: str, expression: str, await_promise: bool = False) -> Any:
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": await_promise, "userGesture": True}, session)
        if "exceptionDetails" in reply:
            raise ChromiumError(f"script failed: {_describe(reply['exceptionDetails'])}")
        return reply["result"].get("value")

    def _screenshot(self, session: str, full_page: bool) -> bytes:
        import base64

        params: dict = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            metrics = self.send("Page.getLayoutMetrics", {}, session)["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", params, session)["data"])

    @staticmethod
    def _collect(result: PageResult, events: list[dict], session: str, url: str) -> None:
        requests: dict[str, dict] = {}
        for event in events:
            if event.get("sessionId") != session:
                continue
            method, params = event["method"], event["params"]
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", a.get("type")))) for a in params["args"])
                level = {"warning": "warning", "error": "error", "assert": "error"}.get(params["type"], "info")
                result.console.append({"level": level, "text": text, "source": "console-api", "url": ""})
            elif method == "Log.entryAdded":
                entry = params["entry"]
                result.console.append({"level": entry["level"], "text": entry["text"], "source": entry["source"],
                                       "url": entry.get("url", "")})
            elif method == "Runtime.exceptionThrown":
                result.exceptions.append(_describe(params["exceptionDetails"]))
            elif method == "Network.requestWillBeSent":
                req = params["request"]["url"]
                if req.split("#")[0] != url and not req.startswith(_NOT_REQUESTS):
                    requests.setdefault(params["requestId"], {"url": req, "type": params.get("type", ""),
                                                              "blocked": None})
            elif method == "Network.loadingFailed" and params["requestId"] in requests:
                requests[params["requestId"]]["blocked"] = (params.get("blockedReason")
                                                            or params.get("corsErrorStatus", {}).get("corsError")
                                                            or params.get("errorText"))
            elif method == "Network.webSocketCreated":
                requests.setdefault(params["requestId"], {"url": params["url"], "type": "WebSocket", "blocked": None})
            elif method == "Fetch.requestPaused" and event.get("_blocked_by_harness"):
                req = params["request"]["url"]
                key = params.get("networkId") or params["requestId"]
                requests.setdefault(key, {"url": req, "type": params.get("resourceType", ""),
                                          "blocked": "harness"})
        # one row per URL attempt: Fetch and Network see the same request under one id
        seen: set[tuple[str, str]] = set()
        for row in requests.values():
            if (row["url"], row["type"]) not in seen:
                seen.add((row["url"], row["type"]))
                result.requests.append(row)

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                os.write(self._to_chrome, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(timeout=10)
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_page(path: str | Path, **options) -> PageResult:
    """One page in a browser of its own: ``Browser().open(path, **options)``."""
    browser_options = {k: options.pop(k) for k in ("timeout",) if k in options}
    with Browser(**browser_options) as browser:
        return browser.open(path, **options)


def _describe(details: dict) -> str:
    exc = details.get("exception") or {}
    return exc.get("description") or details.get("text", "exception")


_CSP_LISTENER = """
window.__cwmCspViolations = [];
document.addEventListener('securitypolicyviolation', e => window.__cwmCspViolations.push(
  {url: e.blockedURI, directive: e.effectiveDirective}));
"""

# The page's own timing: navigation entry, first paints, and the moment two animation frames
# after load have passed (layout and paint of the loaded page done), all in ms from navigation start.
_TIMING_JS = """
new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const paint = Object.fromEntries(performance.getEntriesByType('paint').map(p => [p.name, p.startTime]));
  const r = x => Math.round(x * 10) / 10;
  done({
    response_end_ms: r(nav.responseEnd), dom_interactive_ms: r(nav.domInteractive),
    dom_content_loaded_ms: r(nav.domContentLoadedEventEnd), load_ms: r(nav.loadEventEnd),
    first_paint_ms: paint['first-paint'] == null ? null : r(paint['first-paint']),
    first_contentful_paint_ms: paint['first-contentful-paint'] == null ? null : r(paint['first-contentful-paint']),
    ready_ms: r(performance.now()), transfer_bytes: nav.decodedBodySize,
    dom_nodes: document.getElementsByTagName('*').length,
  });
})))
"""


# -- PNG ------------------------------------------------------------------------------------
def png_pixels(path: str | Path) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows of RGB or RGBA bytes) of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, idat = 8, b""
    width = height = depth = colour = interlace = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {colour}, interlace {interlace})")
    bpp = 4 if colour == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2 and not line.strip(b"\0"):  # the row above again (most rows of a page)
            line = bytearray(prev)
        elif kind == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def png_stats(path: str | Path) -> dict:
    """Size, distinct colours and the share of pixels that differ from the most common one (the background)."""
    width, height, bpp, rows = png_pixels(path)
    counts: Counter[bytes] = Counter()
    row_counts: Counter[bytes] = Counter()
    previous = None
    for row in rows:
        if row != previous:
            row_counts = Counter(row[x:x + 3] for x in range(0, len(row), bpp))  # alpha left out
            previous = row
        counts.update(row_counts)
    background, most = counts.most_common(1)[0]
    total = width * height
    return {"width": width, "height": height, "colours": len(counts), "background": background.hex(),
            "foreground_fraction": (total - most) / total if total else 0.0}


def png_is_blank(path: str | Path, *, min_colours: int = 8, min_foreground: float = 0.005) -> bool:
    """True for a page that drew nothing (one colour, or next to no pixels off the background)."""
    stats = png_stats(path)
    return stats["colours"] < min_colours or stats["foreground_fraction"] < min_foreground
