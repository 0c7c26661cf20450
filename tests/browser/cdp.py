"""Headless Chromium driven over the Chrome DevTools Protocol, with aiohttp and nothing else.

Just what the dashboard tests need: open one page, evaluate JavaScript, click and
type with real input events, take a screenshot, and collect everything the page
reported as an error (console errors, uncaught exceptions, failed loads).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import pathlib
import shutil
import signal
import subprocess
import time
from typing import Any

import aiohttp

CHROMIUM = "/usr/bin/chromium"

# Flags known to work as root on the reference machine. Without the background-networking
# ones Chromium tries to reach Google services and this machine's closed network refuses them.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-port=0",
]


def ensure_chromium(timeout: float = 900.0) -> str | None:
    """Install Debian's chromium when it is missing and we may (root, apt-get). Returns why not, or None."""
    if os.path.exists(CHROMIUM):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{CHROMIUM} is missing and apt-get cannot run here (needs root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(
            ["apt-get", "update", "-qq"], env=env, check=True, timeout=timeout, capture_output=True
        )
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
            env=env,
            check=True,
            timeout=timeout,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as e:
        detail = getattr(e, "stderr", b"") or b""
        return f"apt-get install chromium failed: {e} {detail.decode(errors='replace')[-500:]}"
    return None if os.path.exists(CHROMIUM) else "apt-get install chromium did not provide /usr/bin/chromium"


class CdpError(Exception):
    pass


class Page:
    """One Chromium process with one page, spoken to over its DevTools WebSocket."""

    def __init__(self, profile_dir: pathlib.Path, width: int = 1600, height: int = 1000) -> None:
        self.profile = profile_dir
        self.width, self.height = width, height
        self.proc: subprocess.Popen | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._waiters: list[tuple[str, asyncio.Future]] = []
        self._reader: asyncio.Task | None = None
        self.errors: list[dict[str, Any]] = []  # what the page reported as going wrong
        self.console: list[str] = []

    async def start(self, timeout: float = 30.0) -> Page:
        self.profile.mkdir(parents=True, exist_ok=True)
        log = open(self.profile / "chromium.log", "wb")  # noqa: SIM115 - kept open for the process
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={self.width},{self.height}",
             "about:blank"],
            stdout=log,
            stderr=log,
            start_new_session=True,  # its renderer and helper processes share our process group id
        )  # fmt: skip
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise CdpError(
                    f"chromium did not start: {(self.profile / 'chromium.log').read_text()[-2000:]}"
                )
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t["type"] == "page")
        self._ws = await self._http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self.send(f"{domain}.enable")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = msg.json()
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    if "error" in data:
                        fut.set_exception(CdpError(str(data["error"])))
                    else:
                        fut.set_result(data.get("result", {}))
                continue
            self._event(data["method"], data.get("params", {}))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(CdpError("DevTools connection closed"))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"{params['type']}: {text}")
            if params["type"] in ("error", "assert"):
                self.errors.append({"source": "console", "text": text})
        elif method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text", "")
            self.errors.append({"source": "exception", "text": text})
        elif method == "Log.entryAdded":
            e = params["entry"]
            if e["level"] == "error":
                self.errors.append({"source": e.get("source", "log"), "text": e.get("text", ""),
                                    "url": e.get("url", "")})  # fmt: skip
        for waiter in list(self._waiters):
            name, fut = waiter
            if name == method and not fut.done():
                fut.set_result(params)
                self._waiters.remove(waiter)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        msg_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send_json({"id": msg_id, "method": method, "params": params})
        return await asyncio.wait_for(fut, 30.0)

    async def goto(self, url: str, timeout: float = 20.0) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(("Page.loadEventFired", fut))
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise CdpError(f"{url}: {result['errorText']}")
        await asyncio.wait_for(fut, timeout)

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited); page exceptions raise CdpError."""
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise CdpError(f"{expression!r}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0, what: str = "") -> Any:
        """Poll until the expression is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout}s for {what or expression}")
            await asyncio.sleep(0.1)

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the first element matching ``selector``."""
        box = await self.eval(
            f"(() => {{ const e = document.querySelector({selector!r}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        if box is None:
            raise CdpError(f"nothing matches {selector}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def type(self, selector: str, text: str) -> None:
        """Focus the field, clear it, and type ``text`` as keyboard input."""
        await self.eval(
            f"(() => {{ const e = document.querySelector({selector!r}); e.focus(); e.select(); }})()"
        )
        await self.send("Input.insertText", text=text)

    async def press(self, key: str = "Enter") -> None:
        codes = {"Enter": 13, "Escape": 27}
        for kind in ("keyDown", "keyUp"):
            await self.send("Input.dispatchKeyEvent", type=kind, key=key, code=key,
                            windowsVirtualKeyCode=codes[key], text="\r" if key == "Enter" and kind == "keyDown" else "")  # fmt: skip

    async def screenshot(self, path: pathlib.Path) -> pathlib.Path:
        r = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(r["data"]))
        return path

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send("Browser.close"), 5.0)
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
        if self._http is not None:
            await self._http.close()
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group we started: chromium and its helpers
                self.proc.wait(5)
