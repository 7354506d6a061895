"""report.html in a real headless Chromium: it loads with no console errors, every image decodes.

The browser is driven over the Chrome DevTools Protocol through ``--remote-debugging-pipe``
(JSON messages separated by NUL bytes on file descriptors 3 and 4, the transport Puppeteer and
Playwright use): no Python dependency beyond the standard library and no network port.
Chromium is Debian's ``chromium`` package (``apt-get install -y chromium``, done by .ci/run);
without it these tests are skipped with that reason. Set ``TK_CHROMIUM`` to use another binary
and ``TK_SCREENSHOT_DIR`` to keep the screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from transferkit.report import write_report
from transferkit.report.example import example_misclassified, example_result

CHROMIUM = os.environ.get("TK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and Path("/usr/bin/chromium").exists():
    CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="needs Chromium (Debian: apt-get install -y chromium, which .ci/run does) or TK_CHROMIUM=path",
    ),
    pytest.mark.timeout(120),
]


class CDPError(RuntimeError):
    pass


class Browser:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, binary: str, profile: Path, width: int = 1280, height: int = 900) -> None:
        self._log = open(profile / "chromium-stderr.log", "wb")  # noqa: SIM115
        to_chrome_r, self._to_chrome_w = os.pipe()
        self._from_chrome_r, from_chrome_w = os.pipe()

        def child_fds() -> None:  # Chromium reads commands on fd 3 and writes replies on fd 4
            high_r, high_w = os.dup(to_chrome_r), os.dup(from_chrome_w)  # safe if either is 3 or 4
            os.dup2(high_r, 3, inheritable=True)
            os.dup2(high_w, 4, inheritable=True)

        args = [
            binary,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--mute-audio",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=child_fds,
            pass_fds=(3, 4),  # kept open after preexec_fn has put the pipes there
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        self.width, self.height = width, height

    # -- transport
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError("timed out waiting for Chromium")
            ready, _, _ = select.select([self._from_chrome_r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_chrome_r, 1 << 20)
            if not chunk:
                self._log.flush()
                err = Path(self._log.name).read_bytes().decode(errors="replace")[-2000:]
                raise CDPError(f"Chromium closed the DevTools pipe. stderr tail:\n{err}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(
        self, method: str, params: dict | None = None, *, session: bool = True, timeout: float = 30
    ) -> dict:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        for ev in self.events:
            if ev["method"] == method:
                return ev
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_message(deadline)
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg

    # -- page
    def open_page(self) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}, session=False
        )["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )

    def load(self, url: str) -> None:
        self.events.clear()
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {result['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise CDPError(f"evaluate failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors (failed loads) seen so far."""
        out = []
        for ev in self.events:
            p = ev.get("params", {})
            if ev["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(
                    "console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
                )
            elif ev["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
            elif ev["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                out.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}".strip())
        return out

    def screenshot(self, path: Path) -> Path:
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {
            "x": 0,
            "y": 0,
            "width": self.width,
            "height": min(int(size["height"]) + 1, 16000),
            "scale": 1,
        }
        data = self.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
            timeout=60,
        )["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=5)
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._to_chrome_w, self._from_chrome_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()


IMAGES_JS = """JSON.stringify(Array.from(document.images).map(i => ({
  alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight, src: i.src.slice(0, 30)})))"""


@pytest.fixture(scope="module")
def browser():
    profile = Path(tempfile.mkdtemp(prefix="tk-chromium-"))
    b = Browser(CHROMIUM, profile)
    try:
        b.open_page()
        yield b
    finally:
        b.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory) -> Path:
    env = os.environ.get("TK_SCREENSHOT_DIR")
    path = Path(env) if env else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_report_loads_cleanly_in_chromium(browser, tmp_path, screenshot_dir):
    report = write_report(example_result(), tmp_path / "run", misclassified_images=example_misclassified())
    browser.load(report.resolve().as_uri())
    assert browser.evaluate("document.readyState") == "complete"
    assert browser.evaluate("document.title").startswith("transferkit report")
    images = json.loads(browser.evaluate(IMAGES_JS))
    assert len(images) == 7, images  # every figure of the full example
    broken = [img for img in images if not (img["complete"] and img["w"] > 0 and img["h"] > 0)]
    assert not broken, f"images that did not decode: {broken}"
    assert all(img["src"].startswith("data:image/png;base64,") for img in images)
    assert browser.errors() == []
    shot = browser.screenshot(screenshot_dir / "report_full.png")
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_minimal_report_loads_cleanly(browser, tmp_path, screenshot_dir):
    report = write_report({"title": "minimal"}, tmp_path / "run")
    browser.load(report.resolve().as_uri())
    assert json.loads(browser.evaluate(IMAGES_JS)) == []
    assert browser.errors() == []
    browser.screenshot(screenshot_dir / "report_minimal.png")


def test_the_check_catches_console_errors_and_broken_images(browser, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img id="x" src="data:image/png;base64,AAAA"><script>console.error("boom")</script></body></html>'
    )
    browser.load(bad.as_uri())
    images = json.loads(browser.evaluate(IMAGES_JS))
    assert images[0]["w"] == 0
    assert any("boom" in e for e in browser.errors())
