"""Take the README's screenshot of the dashboard: ``telacd demo`` for a while, then a picture.

    .venv/bin/python -m tests.browser.shoot --seconds 150 --out docs/dashboard.png

Not a test: a tool beside the browser tests that reuses their Chromium driver and demo runner.
The demo's service calls are partly in Chinese: without a CJK font (Debian: fonts-wqy-microhei)
headless Chromium draws them as boxes.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import tempfile

from .cdp import Page, ensure_chromium
from .conftest import Demo


async def shoot(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = pathlib.Path(tmp)
        demo = await Demo(
            tmp_path,
            vehicles=args.vehicles,
            alarm_rate=args.alarm_rate,
            service_rate=args.service_rate,
            report_interval=args.report_interval,
        ).start()
        page = await Page(tmp_path / "profile", width=args.width, height=args.height).start()
        try:
            await asyncio.sleep(args.seconds)
            await page.goto(f"http://{demo.http}/")
            await page.type("#token", "demo")
            await page.press("Enter")
            await page.wait_for("document.querySelector('#status').dataset.status === 'live'")
            await asyncio.sleep(3)
            if args.open_session:
                await page.wait_for("!!document.querySelector('#sessions tr.session')", timeout=30)
                await page.click("#sessions tr.session")
                await page.wait_for("document.querySelector('#detail').dataset.loaded === '1'")
                await asyncio.sleep(1)
            out = await page.screenshot(pathlib.Path(args.out))
            print(f"{out} ({out.stat().st_size} bytes); page errors: {page.errors or 'none'}")
        finally:
            await page.close()
            demo.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="let the demo floor run this long first")
    parser.add_argument("--out", default="docs/dashboard.png")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=940)
    parser.add_argument("--vehicles", type=int, default=300)
    # telacd demo's own defaults, so the picture is what `make run` shows
    parser.add_argument("--alarm-rate", type=float, default=0.12)
    parser.add_argument("--service-rate", type=float, default=0.05)
    parser.add_argument("--report-interval", type=float, default=5.0)
    parser.add_argument("--open-session", action="store_true", help="show one session's drawer")
    args = parser.parse_args()
    why_not = ensure_chromium()
    if why_not:
        raise SystemExit(why_not)
    asyncio.run(shoot(args))


if __name__ == "__main__":
    main()
