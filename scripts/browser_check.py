#!/usr/bin/env python3
"""Load a page in headless Chromium, fail on any browser-side error, screenshot it.

A dependency-free (standard library only) driver for the Chrome DevTools
Protocol over ``--remote-debugging-pipe``: Chromium reads NUL-terminated JSON
commands from fd 3 and writes NUL-terminated JSON responses and events to fd 4,
so no websocket, no port and no pip package are needed.

What it checks, for ``--url``:

* the page reaches ``document.documentElement.dataset.state == "ready"`` within
  ``--timeout`` seconds ("error", or never getting there, fails and prints
  ``dataset.error`` and the start of ``document.body.innerText``);
* every ``--expect "SELECTOR>=N"`` matches at least N elements;
* nothing went wrong on the way: ``console.error``/``console.assert``, uncaught
  exceptions, Log-domain errors (CSP violations and the like), failed loads,
  HTTP responses >= 400, and any request to another origin than ``--url``'s
  (``data:`` and ``blob:`` URLs excepted). Requests to other origins are also
  *blocked* (Fetch domain), and host names other than ``--url``'s do not
  resolve, so a check never sends traffic off the machine;
* optionally, ``--click SELECTOR`` clicks the first match, waits for the page to
  go through ``dataset.state`` "loading" back to "ready", checks
  ``--then-expect`` and takes a second screenshot.

It writes a full-page PNG to ``OUT/NAME.png`` (and ``OUT/NAME2.png`` after a
click), prints a short summary and every failure, and exits 0 only when there
were no failures (1: checks failed, 2: the browser could not be driven or
was not found, 130/143: interrupted by SIGINT/SIGTERM). Chromium and its temporary profile are always removed.

Contract for a page under test:

* set ``document.documentElement.dataset.state = "ready"`` once it has
  rendered (or ``"error"``, with the reason in ``dataset.error``); when an
  action reloads data, set it to ``"loading"`` first and back to ``"ready"``;
* fetch everything from its own origin: no CDN, no web fonts, no analytics;
* declare an icon, or Chromium asks for ``/favicon.ico`` and a 404 there is a
  failure like any other. ``<link rel="icon" href="data:,">`` in ``<head>``
  is enough (with a Content-Security-Policy, allow it: ``img-src 'self' data:``,
  or the CSP violation is reported instead).

Usage (the test suite runs it the same way against the server it started;
``scripts/ensure-chromium.sh`` prints the browser to use, installing Debian's
``chromium`` when it is missing)::

    python3 scripts/browser_check.py --url http://127.0.0.1:9000/dashboard \\
        --out target/browser --name dashboard --expect "svg>=1" \\
        --click "button#refresh" --then-name refreshed --then-expect "svg>=1" \\
        --chromium "$(scripts/ensure-chromium.sh)"
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import itertools
import json
import math
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

COMMAND_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.1
# After a click, a page that never shows "loading" is accepted as done once it
# has been "ready" this long and the --then-expect selectors hold.
CLICK_GRACE_S = 0.3
# Events (notably Network ones, which come from another process than the
# page's console) can trail the evaluation that saw "ready"; give them this
# long to arrive before the verdict.
SETTLE_S = 0.3

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # running as root in containers; the page is our own
    "--disable-gpu",
    "--disable-dev-shm-usage",  # /dev/shm is tiny in containers
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-pipe",
    "--window-size=1280,900",
    # No calls home: updates, sync, metrics, pings, field trials.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-pings",
]


class CdpError(Exception):
    """The browser could not be driven: it died, or a command failed or timed out."""


class CdpTimeout(CdpError):
    """A command got no answer in time (a hung browser, or a page stuck in a loop)."""


class JsError(Exception):
    """An expression evaluated in the page threw."""


# --------------------------------------------------------------------------
# The pipe transport
# --------------------------------------------------------------------------


class Browser:
    """A Chromium process and the CDP pipe to it.

    A reader thread splits fd 4's stream on NUL bytes: responses are handed to
    the caller waiting on their id, events go to ``self.events``. ``on_event``,
    if given, is also called on the reader thread for every event; it is used
    for what cannot wait for the main thread (answering paused requests).
    """

    def __init__(self, chromium: str, extra_flags: list[str], on_event=None):
        self.profile = tempfile.mkdtemp(prefix="browser-check-")
        self.events: queue.Queue[dict] = queue.Queue()
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._pending: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()  # guards _pending, _closed and writes
        self._closed: str | None = None  # why the pipe closed, once it has
        # Chromium's stdout and stderr, shown when it cannot be driven; closed in close().
        self._stderr = open(os.path.join(self.profile, "chromium.stderr"), "w+b")  # noqa: SIM115
        self.proc: subprocess.Popen | None = None

        # cmd: we write, Chromium reads on fd 3. out: Chromium writes on fd 4.
        cmd_r, cmd_w = os.pipe()
        out_r, out_w = os.pipe()
        # Lift the child's ends above 4 so the dup2()s onto 3 and 4 in the
        # child cannot overwrite one another (os.pipe() may return 3 or 4).
        child_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(out_w, fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (cmd_r, out_w):
            os.close(fd)
        # pass_fds makes Popen keep fds 3 and 4 across its close_fds sweep,
        # but it first marks them inheritable, which fails if they are not
        # open here. They always are unless stdio was closed; fill any gap.
        placeholders = _occupy_fds(3, 4)

        # preexec_fn is unsafe only with other threads running; ours starts below.
        def wire_fds() -> None:  # runs in the child, between fork and exec
            os.dup2(child_r, 3)  # os.dup2 makes the new fd inheritable
            os.dup2(child_w, 4)

        try:
            self.proc = subprocess.Popen(
                [chromium, *CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={self.profile}"],
                stdin=subprocess.DEVNULL,
                stdout=self._stderr,
                stderr=self._stderr,
                pass_fds=(3, 4),
                preexec_fn=wire_fds,  # noqa: PLW1509 - no other thread yet
                # Own process group: Ctrl-C in the terminal reaches only us
                # (we then clean up), and we can kill renderers and all.
                start_new_session=True,
            )
        except BaseException:
            for fd in (cmd_w, out_r):
                os.close(fd)
            self._remove_profile()
            raise
        finally:
            for fd in (child_r, child_w, *placeholders):
                os.close(fd)
        self._cmd_w = cmd_w
        self._out_r = out_r
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()

    # -- protocol -----------------------------------------------------------

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = COMMAND_TIMEOUT_S,
    ) -> dict:
        """Send a command and wait for its result; raise CdpError on error or timeout."""
        box: queue.Queue = queue.Queue(maxsize=1)
        msg_id = self._write(method, params, session, box)
        try:
            reply = box.get(timeout=timeout)
        except queue.Empty:
            hint = " (is the page's main thread stuck in a loop?)" if method == "Runtime.evaluate" else ""
            raise CdpTimeout(f"{method}: no answer from Chromium within {timeout:.0f} s{hint}") from None
        finally:
            with self._lock:
                self._pending.pop(msg_id, None)
        if "closed" in reply:
            raise CdpError(f"{method}: {reply['closed']}")
        if "error" in reply:
            err = reply["error"]
            raise CdpError(f"{method}: {err.get('message')} {err.get('data', '')}".strip())
        return reply.get("result", {})

    def send_nowait(self, method: str, params: dict | None = None, session: str | None = None) -> None:
        """Send a command whose answer nobody waits for (safe on the reader thread)."""
        with contextlib.suppress(CdpError):  # the browser is gone; the main thread will find out
            self._write(method, params, session, None)

    def _write(self, method, params, session, box) -> int:
        msg_id = next(self._ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        with self._lock:
            if self._closed:
                raise CdpError(f"{method}: {self._closed}")
            if box is not None:
                self._pending[msg_id] = box
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._cmd_w, view) :]
            except OSError as e:
                self._pending.pop(msg_id, None)
                failed = e
            else:
                return msg_id
        raise CdpError(f"{method}: cannot write to Chromium ({failed.strerror}){self._exit_status()}")

    def _exit_status(self) -> str:
        """' (Chromium exited with code N)' once it has exited, else ''."""
        try:
            code = self.proc.wait(timeout=1) if self.proc is not None else None
        except subprocess.TimeoutExpired:
            return ""
        return "" if code is None else f" (Chromium exited with code {code})"

    def _read_loop(self) -> None:
        buf = bytearray()
        reason = "Chromium closed the DevTools pipe"
        try:
            while True:
                chunk = os.read(self._out_r, 1 << 16)
                if not chunk:
                    break
                buf += chunk
                # Messages are NUL-terminated; a chunk may hold several, or part of one.
                while (end := buf.find(b"\0")) >= 0:
                    raw = bytes(buf[:end])
                    del buf[: end + 1]
                    self._dispatch(json.loads(raw))
        except Exception as e:  # noqa: BLE001 - anything here ends the session
            reason = f"reading the DevTools pipe failed: {e!r}"
        reason += self._exit_status()
        with self._lock:
            self._closed = reason
            waiting = list(self._pending.values())
            self._pending.clear()
        for box in waiting:  # wake every caller now rather than after 30 s
            box.put({"closed": reason})

    def _dispatch(self, msg: dict) -> None:
        if "id" in msg:
            with self._lock:
                box = self._pending.get(msg["id"])
            if box is not None:
                box.put(msg)
            return
        if self._on_event is not None:
            self._on_event(self, msg)
        self.events.put(msg)

    # -- teardown -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def stderr_tail(self, lines: int = 15) -> str:
        """Chromium's last words, less the D-Bus complaints it always makes in a container."""
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        kept = [line for line in text.splitlines() if ":ERROR:dbus/" not in line]
        return "\n".join(kept[-lines:])

    def close(self) -> None:
        """Stop Chromium (politely, then not), every process it started, and remove the profile."""
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(CdpError):
                    self.send("Browser.close", timeout=3)
                if not _wait(proc, 5):
                    _killpg(proc.pid, signal.SIGTERM)
                    _wait(proc, 5)
            # Renderers and helpers share the process group and can outlive the browser.
            _killpg(proc.pid, signal.SIGKILL)
            _wait(proc, 5)
        # With every writer gone the reader sees EOF; only then is fd 4's read
        # end safe to close (its number could otherwise be reused under the thread).
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.join(timeout=5)
        for name in ("_cmd_w", "_out_r"):
            fd = getattr(self, name, None)
            if fd is not None and not (name == "_out_r" and reader is not None and reader.is_alive()):
                os.close(fd)
            setattr(self, name, None)
        self._remove_profile()

    def _remove_profile(self) -> None:
        with contextlib.suppress(OSError):
            self._stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _occupy_fds(*fds: int) -> list[int]:
    """Open /dev/null until each of ``fds`` is open; return the placeholders opened."""
    opened: list[int] = []
    while any(not _fd_open(fd) for fd in fds):
        opened.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return opened


def _fd_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------


def origin_of(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return ("file", "", None)
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme)
    return (parts.scheme, (parts.hostname or "").lower(), parts.port or default)


def is_local_url(url: str, origin: tuple) -> bool:
    """Same origin as the page under test, or inline (data:, blob:)."""
    return url.startswith(("data:", "blob:")) or origin_of(url) == origin


@dataclass
class Failure:
    kind: str
    text: str
    url: str = ""

    def __str__(self) -> str:
        return f"[{self.kind}] {self.text}" + (f"  ({self.url})" if self.url else "")


@dataclass
class Run:
    """What the page did, collected from the event stream."""

    origin: tuple
    session: str = ""
    failures: list[Failure] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the summary, in order
    requests: dict[str, str] = field(default_factory=dict)  # requestId -> first URL
    foreign: set[str] = field(default_factory=set)  # requestIds of blocked requests
    log_network_errors: list[Failure] = field(default_factory=list)

    def check(self, ok: bool, what: str, failure: Failure | None = None) -> bool:
        self.lines.append(f"  {'ok  ' if ok else 'FAIL'}  {what}")
        if not ok and failure is not None:
            self.failures.append(failure)
        return ok

    # Events from the page, drained on the main thread.
    def handle(self, ev: dict) -> None:
        if ev.get("sessionId") != self.session:
            return
        method, p = ev["method"], ev.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(_remote_object_text(a) for a in p.get("args", []))
            self.failures.append(Failure(f"console.{p['type']}", text, _where(p.get("stackTrace"))))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            exc = d.get("exception") or {}
            text = exc.get("description") or d.get("text", "exception")
            url = d.get("url", "")
            if url:
                url += f":{d.get('lineNumber', 0) + 1}:{d.get('columnNumber', 0) + 1}"
            url = url or _where(d.get("stackTrace"))
            self.failures.append(Failure("uncaught exception", text, "" if url in text else url))
        elif method == "Log.entryAdded":
            e = p.get("entry", {})
            if e.get("level") == "error":
                f = Failure(f"log/{e.get('source', '?')}", e.get("text", ""), e.get("url", ""))
                # "Failed to load resource" duplicates the Network checks below;
                # it is reported only if those did not catch the same URL.
                (self.log_network_errors if e.get("source") == "network" else self.failures).append(f)
        elif method == "Network.requestWillBeSent":
            rid, url = p["requestId"], p["request"]["url"]
            self.requests.setdefault(rid, url)
            if not is_local_url(url, self.origin):
                self.foreign.add(rid)
                self.failures.append(Failure("foreign request", "fetched from another origin (blocked)", url))
        elif method == "Network.responseReceived":
            r = p["response"]
            if r.get("status", 0) >= 400:
                self.failures.append(
                    Failure("http", f"{r['status']} {r.get('statusText', '')}".strip(), r["url"])
                )
        elif method == "Network.loadingFailed":
            rid = p["requestId"]
            if not p.get("canceled") and rid not in self.foreign:
                reason = p.get("errorText") or "failed"
                if p.get("blockedReason"):
                    reason += f", blocked: {p['blockedReason']}"
                self.failures.append(Failure("load failed", reason, self.requests.get(rid, "")))

    def finish(self) -> None:
        seen = {f.url for f in self.failures}
        self.failures += [f for f in self.log_network_errors if f.url not in seen]
        self.log_network_errors.clear()


def _remote_object_text(obj: dict) -> str:
    if "value" in obj:
        v = obj["value"]
        return v if isinstance(v, str) else json.dumps(v)
    return obj.get("description") or obj.get("unserializableValue") or obj.get("type", "?")


def _where(stack: dict | None) -> str:
    frames = (stack or {}).get("callFrames") or []
    if not frames:
        return ""
    f = frames[0]
    return f"{f.get('url') or '<inline>'}:{f.get('lineNumber', 0) + 1}:{f.get('columnNumber', 0) + 1}"


class Page:
    """The target under test, and the main-thread loop that drains events."""

    def __init__(self, browser: Browser, run: Run):
        self.b, self.run = browser, run
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        run.session = self.session
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.cmd(f"{domain}.enable")
        # Pause every request so the reader thread can block other origins
        # (see answer_paused_request) before anything leaves the machine.
        self.cmd("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]})

    def cmd(self, method: str, params: dict | None = None, timeout: float = COMMAND_TIMEOUT_S) -> dict:
        result = self.b.send(method, params, self.session, timeout)
        self.drain()
        return result

    def drain(self) -> None:
        while True:
            try:
                self.run.handle(self.b.events.get_nowait())
            except queue.Empty:
                return

    def sleep(self, seconds: float) -> None:
        """Wait, handling events as they come."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(queue.Empty):
                self.run.handle(self.b.events.get(timeout=left))
        self.drain()

    def evaluate(self, expression: str):
        r = self.cmd("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise JsError((d.get("exception") or {}).get("description") or d.get("text", "exception"))
        return r.get("result", {}).get("value")

    def state(self) -> str | None:
        # While a navigation is in flight the context can vanish under us; that is "not yet".
        try:
            return self.evaluate(
                "document.documentElement ? document.documentElement.dataset.state ?? null : null"
            )
        except JsError:
            return None
        except CdpError:
            if self.b.closed or sys.exc_info()[0] is CdpTimeout:
                raise
            return None  # "Execution context was destroyed" and the like

    def count(self, selector: str) -> int:
        return self.evaluate(f"document.querySelectorAll({json.dumps(selector)}).length")

    def screenshot(self, path: Path) -> tuple[int, int, int]:
        m = self.cmd("Page.getLayoutMetrics")
        content, viewport = m["cssContentSize"], m["cssLayoutViewport"]
        width = math.ceil(max(content["width"], viewport["clientWidth"]))
        height = math.ceil(max(content["height"], viewport["clientHeight"]))
        shot = self.cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        )
        data = base64.b64decode(shot["data"])
        path.write_bytes(data)
        w, h = struct.unpack(">II", data[16:24])  # the PNG IHDR chunk
        return len(data), w, h


def answer_paused_request(browser: Browser, ev: dict, origin: tuple) -> None:
    """Reader-thread hook: let same-origin requests through, fail all others.

    This cannot wait for the main thread, which may itself be waiting on a
    command (Page.navigate) that needs the paused request to finish.
    """
    if ev.get("method") != "Fetch.requestPaused":
        return
    p = ev["params"]
    if is_local_url(p["request"]["url"], origin):
        browser.send_nowait("Fetch.continueRequest", {"requestId": p["requestId"]}, ev.get("sessionId"))
    else:
        browser.send_nowait(
            "Fetch.failRequest",
            {"requestId": p["requestId"], "errorReason": "BlockedByClient"},
            ev.get("sessionId"),
        )


def parse_expect(spec: str) -> tuple[str, int]:
    """'svg.chart>=3' -> ('svg.chart', 3); a bare selector means >= 1."""
    selector, sep, n = spec.rpartition(">=")
    if not sep:
        return spec.strip(), 1
    try:
        return selector.strip(), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --expect {spec!r}: want 'SELECTOR>=N'") from None


def wait_ready(
    page: Page, run: Run, timeout: float, what: str, after_click: list[tuple[str, int]] | None = None
) -> bool:
    """Poll dataset.state until "ready" (True) or "error"/timeout (False, recorded).

    With ``after_click`` (the --then-expect list), the page is expected to go
    "loading" -> "ready"; one that stays "ready" is accepted after
    CLICK_GRACE_S if those selectors already hold.
    """
    start = time.monotonic()
    saw_loading = False
    state = None
    while True:
        state = page.state()
        elapsed = time.monotonic() - start
        if state == "error":
            break
        if state == "ready":
            if after_click is None or saw_loading:
                run.check(True, f"{what}: dataset.state=ready after {elapsed:.1f} s")
                return True
            if elapsed >= CLICK_GRACE_S and all((_count_or_none(page, s) or 0) >= n for s, n in after_click):
                run.check(
                    True,
                    f"{what}: dataset.state stayed ready, expected content present after {elapsed:.1f} s",
                )
                return True
        elif state == "loading":
            saw_loading = True
        if elapsed >= timeout:
            if state == "ready":  # after a click: never went "loading", content still short
                run.check(True, f"{what}: dataset.state stayed ready ({timeout:g} s)")
                return True  # the caller's expectation checks name what is missing
            break
        page.sleep(POLL_INTERVAL_S)

    if state == "error":
        detail = f'dataset.state="error" after {time.monotonic() - start:.1f} s'
    else:
        detail = (
            f"not ready within {timeout:g} s (dataset.state={state!r})"
            if state
            else f"not ready within {timeout:g} s (dataset.state never set)"
        )
    try:
        err = page.evaluate("document.documentElement.dataset.error ?? null")
        body = page.evaluate("document.body ? document.body.innerText : ''") or ""
    except (JsError, CdpError):
        err, body = None, ""
    text = detail + (f"; dataset.error={err!r}" if err else "")
    if body.strip():
        text += "\n      page text: " + body[:2000].strip().replace("\n", "\n      ")
    run.check(False, f"{what}: {detail}", Failure("not ready", text))
    return False


def _count_or_none(page: Page, selector: str) -> int | None:
    try:
        return page.count(selector)
    except JsError:
        return None


def check_expectations(page: Page, run: Run, expects: list[tuple[str, int]]) -> None:
    for selector, n in expects:
        try:
            got = page.count(selector)
        except JsError as e:
            run.check(False, f"{selector} >= {n}: invalid selector", Failure("expect", f"{selector!r}: {e}"))
            continue
        run.check(
            got >= n,
            f"{selector} >= {n}: found {got}",
            Failure("expect", f"{selector!r}: found {got} element(s), expected at least {n}"),
        )


def take_screenshot(page: Page, run: Run, out: Path, name: str) -> None:
    path = out / f"{name}.png"
    size, w, h = page.screenshot(path)
    run.lines.append(f"  shot  {path} ({w}x{h} px, {size:,} bytes)")


def check_page(args: argparse.Namespace) -> Run:
    """Everything between starting Chromium and the verdict; Chromium is always stopped."""
    origin = origin_of(args.url)
    run = Run(origin)
    host = urllib.parse.urlsplit(args.url).hostname or ""
    # Names other than the page's own resolve to nothing: belt and braces for the
    # Fetch blocking, and it covers the browser's own background lookups too.
    rules = "MAP * ~NOTFOUND" + (f" , EXCLUDE {host}" if host else "")
    flags = [f"--host-resolver-rules={rules}"]
    browser = Browser(args.chromium, flags, on_event=lambda b, ev: answer_paused_request(b, ev, origin))
    try:
        try:
            page = Page(browser, run)
            nav = page.cmd("Page.navigate", {"url": args.url})
            if nav.get("errorText"):
                run.check(
                    False,
                    f"load {args.url}: {nav['errorText']}",
                    Failure("navigation", nav["errorText"], args.url),
                )
                return run
            loaded = wait_ready(page, run, args.timeout, "load")
            if loaded:
                check_expectations(page, run, args.expect)
            take_screenshot(page, run, args.out, args.name)  # also when not ready: it shows why

            if args.click and not loaded:
                run.lines.append(f"  skip  click {args.click} (the page never became ready)")
            elif args.click:
                clicked = page.evaluate(
                    f"(() => {{ const el = document.querySelector({json.dumps(args.click)});"
                    " if (!el) return false; el.click(); return true; })()"
                )
                if run.check(
                    bool(clicked),
                    f"click {args.click}",
                    Failure("click", f"no element matches {args.click!r}"),
                ):
                    if wait_ready(
                        page, run, args.timeout, f"after click {args.click}", after_click=args.then_expect
                    ):
                        check_expectations(page, run, args.then_expect)
                    take_screenshot(page, run, args.out, args.then_name)
            page.sleep(SETTLE_S)
        except (CdpError, JsError) as e:
            tail = browser.stderr_tail()
            raise CdpError(
                f"{e}" + (f"\n--- chromium stderr (last lines) ---\n{tail}" if tail else "")
            ) from None
    finally:
        browser.close()
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", required=True, type=Path, help="folder for the screenshots")
    ap.add_argument("--name", default="dashboard", help="screenshot name, without .png (default: dashboard)")
    ap.add_argument("--expect", action="append", default=[], type=parse_expect, metavar="'SELECTOR>=N'")
    ap.add_argument("--click", metavar="SELECTOR", help="click the first match once the page is ready")
    ap.add_argument("--then-name", default="after-click", help="screenshot name after --click")
    ap.add_argument("--then-expect", action="append", default=[], type=parse_expect, metavar="'SELECTOR>=N'")
    ap.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for dataset.state=ready (default 60)"
    )
    ap.add_argument("--chromium", help="browser binary (default: $CHROMIUM, then chromium on PATH)")
    args = ap.parse_args(argv)
    if args.then_expect and not args.click:
        ap.error("--then-expect needs --click")

    args.chromium = (
        args.chromium
        or os.environ.get("CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if not args.chromium or not shutil.which(args.chromium):
        print(
            "browser_check: no Chromium found; run scripts/ensure-chromium.sh "
            "(or apt-get install chromium) or pass --chromium PATH",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    # A plain `kill` (a test runner's timeout) should clean up like Ctrl-C does.
    def terminated(*_):
        print("browser_check: terminated; stopping Chromium", file=sys.stderr)
        sys.exit(143)

    signal.signal(signal.SIGTERM, terminated)
    try:
        run = check_page(args)
    except CdpError as e:
        print(f"browser_check: cannot drive Chromium: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("browser_check: interrupted", file=sys.stderr)
        return 130
    run.finish()

    print(f"browser_check {args.url}")
    print("\n".join(run.lines))
    print(f"  requests: {len(run.requests)} ({len(run.foreign)} to other origins)")
    if run.failures:
        print(f"FAILED: {len(run.failures)} failure(s)")
        for f in run.failures:
            print(f"  - {f}")
        return 1
    print("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
