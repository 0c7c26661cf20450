"""The dashboard in headless Chromium against a running ``telacd demo``.

A person's path through it: the login form refuses a wrong token with a message,
accepts the demo admin token, the queues and agents fill in and keep changing
as the simulated floor works, a click on an active session opens the vehicle
with its trail, and a viewer (wallboard) token gets the same board marked
read-only. Nothing the page logs may be an error, apart from the one refused
login this test provokes on purpose. The screenshot is kept in test-artifacts/.
"""

from __future__ import annotations

import json

import pytest

from .conftest import ARTIFACTS

pytestmark = pytest.mark.browser

# the state of the queue table and agent board that the server, not the local clock, changes
QUEUES_SEEN = """JSON.stringify([...document.querySelectorAll('#queues tbody tr')].map(
  tr => [...tr.querySelectorAll('td')].filter(td => !td.querySelector('.since')).map(td => td.textContent)))"""
AGENTS_SEEN = """JSON.stringify([...document.querySelectorAll('#agents .agent')].map(
  a => [a.dataset.agent, a.dataset.state, a.querySelector('.agent-meta').textContent]))"""


def visible(selector: str) -> str:
    return f"(() => {{ const e = document.querySelector({selector!r}); return !!e && !e.closest('[hidden]'); }})()"


async def test_dashboard_live_in_chromium(demo, page):
    base = f"http://{demo.http}"
    await page.goto(base + "/")
    await page.wait_for(visible("#login-form"), what="the login form")
    assert await page.eval(visible("#board")) is False

    # a wrong token: a clear message on the form, still logged out
    await page.type("#token", "not-a-token")
    await page.click("#login-submit")
    message = await page.wait_for(
        "(() => { const e = document.querySelector('#login-error'); return !e.hidden && e.textContent; })()",
        what="the login error",
    )
    assert "not an [[admins]] token" in message
    assert await page.eval(visible("#board")) is False
    refused = list(page.errors)  # the browser logs the 401 of that attempt; nothing else may appear
    assert all("401" in e["text"] and e.get("url", "").endswith("/api/dashboard") for e in refused), refused

    # the demo's admin token
    await page.type("#token", "demo")
    await page.press("Enter")
    await page.wait_for(visible("#board"), what="the board")
    assert "admin" in await page.eval("document.querySelector('#viewer').textContent")
    await page.wait_for("document.querySelector('#status').dataset.status === 'live'", what="the live socket")

    # queues (both configured queues, with their priority classes) and the agent board
    await page.wait_for("document.querySelectorAll('#queues tr.queue').length === 2", what="two queues")
    queues = await page.eval("[...document.querySelectorAll('#queues tr.queue')].map(r => r.dataset.queue)")
    assert queues == ["emergency", "service"]
    classes = await page.eval(
        "[...document.querySelectorAll('#queues tr.klass[data-queue=emergency]')].map(r => r.dataset.klass)"
    )
    assert classes == ["crash", "sos", "rollover"]
    await page.wait_for("document.querySelectorAll('#agents .agent').length === 7", what="seven agent cards")
    agents = set(
        await page.eval("[...document.querySelectorAll('#agents .agent')].map(a => a.dataset.agent)")
    )
    assert {"demo-ann", "demo-bo", "demo-chen", "demo-dai", "demo-eli", "demo-fang", "you"} == agents
    assert await page.eval("document.querySelector('#agents [data-agent=you]').dataset.state") == "logged_out"

    # live: snapshots keep arriving, and what the floor does shows up on the board
    first = float(await page.eval("document.querySelector('#updated').dataset.at"))
    await page.wait_for(f"Number(document.querySelector('#updated').dataset.at) >= {first + 2}",
                        timeout=8, what="two more snapshots")  # fmt: skip
    queues_before, agents_before = await page.eval(QUEUES_SEEN), await page.eval(AGENTS_SEEN)
    await page.wait_for(
        f"{QUEUES_SEEN} !== {json.dumps(queues_before)}", timeout=20, what="the queues to change"
    )
    await page.wait_for(
        f"{AGENTS_SEEN} !== {json.dumps(agents_before)}", timeout=20, what="the agents to change"
    )
    busy = await page.eval(
        "[...document.querySelectorAll('#agents .agent')].filter(a => a.dataset.state !== 'logged_out').length"
    )
    assert busy == 6

    # the map: outline drawn, vehicles and alerts on it; sessions counted by region
    assert await page.eval("document.querySelectorAll('#map path.region').length") > 30
    await page.wait_for(
        "(document.querySelector('#map .v-online') || {}).getAttribute?.('d')", what="vehicle dots"
    )
    await page.wait_for("document.querySelectorAll('#map .alert').length > 0", what="an alert on the map")
    # the demo fleet drives around Shenzhen: its alerts fall in Guangdong or Hong Kong (a service call
    # from a vehicle that has not reported yet would be "unlocated", so wait for a located one)
    await page.wait_for(
        "[...document.querySelectorAll('#regions .bar-row')].some(r => ['Guangdong', 'Hong Kong'].includes(r.dataset.key))",
        what="sessions counted by region",
    )
    regions = set(
        await page.eval("[...document.querySelectorAll('#regions .bar-row')].map(r => r.dataset.key)")
    )
    assert regions <= {"Guangdong", "Hong Kong", "unlocated"}, regions
    await page.wait_for("document.querySelectorAll('#topic-kinds .bar-row').length > 0", what="hot topics")

    # open a session: the vehicle and its trail
    await page.wait_for("!!document.querySelector('#sessions tr.session')", what="an active session")
    sid = await page.eval("document.querySelector('#sessions tr.session').dataset.sid")
    await page.click(f"#sessions tr.session[data-sid='{sid}']")
    await page.wait_for(f"document.querySelector('#detail').dataset.sid === {sid!r}", what="the drawer")
    await page.wait_for(
        "document.querySelector('#detail').dataset.loaded === '1'", what="the session details"
    )
    facts = await page.eval(
        "Object.fromEntries([...document.querySelectorAll('#detail dt')].map(dt => [dt.textContent,"
        " dt.nextElementSibling.textContent]))"
    )
    assert facts["Session"] == sid
    assert facts["Vehicle"].startswith("0139")  # the demo fleet's phones
    assert "Connection" in facts and "Position" in facts
    assert int(await page.eval("document.querySelector('#detail .trail-map').dataset.points")) >= 1
    events = await page.eval(
        "[...document.querySelectorAll('#detail .events li')].map(li => li.dataset.event)"
    )
    assert "created" in events and "queued" in events
    await page.wait_for(
        f"document.querySelector('#map .alert.selected')?.dataset.sid === {sid!r}", what="highlight"
    )

    shot = await page.screenshot(ARTIFACTS / "dashboard.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

    await page.press("Escape")
    await page.wait_for("document.querySelector('#detail').hidden", what="the drawer to close")

    # a wallboard: the viewer token sees the same board, marked read-only
    await page.click("#logout")
    await page.wait_for(visible("#login-form"), what="the login form after signing out")
    await page.type("#token", "wallboard")
    await page.click("#login-submit")
    await page.wait_for(visible("#board"), what="the board for a viewer")
    assert await page.eval("document.querySelector('#viewer').dataset.role") == "viewer"
    assert "read-only" in await page.eval("document.querySelector('#viewer').textContent")
    await page.wait_for(
        "document.querySelector('#status').dataset.status === 'live'", what="the viewer's socket"
    )

    assert page.errors == refused, page.errors
