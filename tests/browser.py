"""Headless Chromium (Debian's `chromium`), driven over the DevTools protocol: open a page as a user
does, wait until its text shows what a test expects, save a screenshot. `check_gold_in_dagster_ui`
is what the UI tests of the embedded default and of the cluster both expect Dagster to show.

    with Browser() as browser:
        text = browser.open("http://127.0.0.1:3000/runs/ID", expect=["Success"], screenshot=path)
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import websocket

REPO = Path(__file__).resolve().parents[1]
# Where the UI tests leave their screenshots (overwritten by each run; not versioned).
SCREENSHOTS = REPO / ".test-output" / "screenshots"

# Dagster's UI greets a new browser with a newsletter dialog; a returning user has dismissed it.
_DISMISSED = "try { localStorage.setItem('communityNux', '1'); } catch (e) {}"


class BrowserError(RuntimeError):
    pass


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise BrowserError("headless Chromium is missing: apt-get install chromium (make test installs it as root)")
    return found


class Browser:
    def __init__(self, width: int = 1600, height: int = 1000):
        self.size = (width, height)
        self._ids = itertools.count(1)

    def __enter__(self) -> Browser:
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-")
        self.process = subprocess.Popen(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile.name}",
                f"--window-size={self.size[0]},{self.size[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        # Chromium prints its DevTools endpoint once it listens; the page target is found from there.
        for line in self.process.stderr:
            if line.startswith("DevTools listening on "):
                port = line.split(":")[2].split("/")[0]
                break
        else:
            raise BrowserError(f"chromium exited ({self.process.wait()}) before listening")
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.call("Page.enable")
        self.call("Page.addScriptToEvaluateOnNewDocument", source=_DISMISSED)
        return self

    def __exit__(self, *exc) -> None:
        # Chromium's helper processes write into the profile until they exit: close the browser,
        # then end its whole process group, before the profile folder goes.
        try:
            self.call("Browser.close")
        except Exception:  # noqa: BLE001 - already gone: the process group below still ends
            pass
        self.socket.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.profile.cleanup()

    def call(self, method: str, **params):
        message_id = next(self._ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def text(self) -> str:
        result = self.call(
            "Runtime.evaluate", expression="document.body ? document.body.innerText : ''", returnByValue=True
        )
        return result["result"].get("value", "")

    def open(self, url: str, expect: list[str], screenshot: Path | None = None, timeout: float = 90) -> str:
        """Load `url`, wait until every string of `expect` is in the page's visible text, then save a
        screenshot. Returns the text; raises with what was missing on timeout."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            missing = [s for s in expect if s not in text]
            if not missing:
                break
            if time.monotonic() > deadline:
                self._save(screenshot)
                raise BrowserError(f"{url}: after {timeout:.0f}s the page lacks {missing}; it shows: {text[:1500]!r}")
            time.sleep(1)
        time.sleep(1)  # let the last responses paint
        self._save(screenshot)
        return text

    def _save(self, screenshot: Path | None) -> None:
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


def check_gold_in_dagster_ui(base_url: str, location: str, run_id: str, out: Path) -> None:
    """The gold asset graph with every check passed, a gold asset's checks, and the gold run's page
    with its success, as a user sees them after a silver_to_gold_processing run; screenshots in `out`."""
    from shopstream import catalog, schema

    gold = [
        schema.GOLD_CUSTOMER_ANALYTICS,
        schema.GOLD_SALES_SUMMARY,
        schema.GOLD_SALES_BY_CATEGORY,
        schema.GOLD_PRODUCT_ANALYTICS,
        schema.SILVER_DATA_QUALITY_REPORT,
    ]
    per_table = Counter(check.table for check in catalog.GOLD_CHECKS)
    passed = sorted({f"{n} / {n} Passed" for n in per_table.values()})
    with Browser(height=2400) as browser:  # tall enough for the whole gold graph
        browser.open(
            f"{base_url}/locations/{location}/asset-groups/gold",
            expect=gold + passed,
            screenshot=out / "asset-graph.png",
        )
        checks = [check.name for check in catalog.GOLD_CHECKS if check.table == schema.GOLD_SALES_SUMMARY]
        browser.open(
            f"{base_url}/assets/{schema.GOLD_SALES_SUMMARY}?view=checks",
            expect=[*checks, "Passed"],
            screenshot=out / "checks.png",
        )
        total = len(catalog.GOLD_CHECKS)
        browser.open(
            f"{base_url}/runs/{run_id}",
            expect=["Success", "silver_to_gold_processing", f"{len(gold)} assets", f"{total} checks", "RUN_SUCCESS"],
            screenshot=out / "run.png",
        )
