"""The web view in Debian's headless Chromium (Playwright's Python driver, no browser
download): log in with the token, watch a loopback lab switch alice's entry and migrate
her VM (manual approval, clicked in the page), check what the page shows; screenshots
go to tests/artifacts/webview/ (gitignored). A browser without the token sees nothing."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from webview_support import ARGS, CHROMIUM, RLOC, TOKEN, Lab

ART = Path(__file__).parent / "artifacts" / "webview"
WAIT_MS = 30_000
expect.set_options(timeout=WAIT_MS)  # the lab runs on a shared, sometimes loaded machine


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: apt-get install chromium (Makefile DEB_PACKAGES)")
    ART.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        # launch() gives the browser a fresh temporary user-data dir of its own
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def row(page: Page, user: str) -> Any:
    return page.locator(f'#users tbody tr[data-user="{user}"]')


def approve_first(page: Page, kind: str, user: str, lab: Lab) -> None:
    """Click approve on the user's pending plan of that kind until one is approved (a
    newer decision may supersede the plan between rendering and the click)."""
    sel = f'#plans-pending li[data-kind="{kind}"][data-user="{user}"]'
    for _ in range(10):
        li = page.locator(sel).first
        li.wait_for(timeout=WAIT_MS)
        pid = str(li.get_attribute("data-plan"))
        # dispatch_event: the click reaches this button even if the list moves meanwhile
        li.locator("button.approve").dispatch_event("click")
        deadline = time.monotonic() + WAIT_MS / 1000
        while (plan := lab.ctl.store.plan(pid)) is not None and plan["state"] == "recommended":
            assert time.monotonic() < deadline, f"plan {pid} not approved"
            time.sleep(0.05)
        assert plan is not None
        if plan["state"] in ("approved", "ongoing", "succeeded"):
            assert plan["approved_by"] == "api"
            return
        # Superseded before the click: wait until the page drops it, then the next one.
        expect(page.locator(f'#plans-pending li[data-plan="{pid}"]')).to_have_count(0)
    raise AssertionError(f"could not approve a {kind} plan of {user}")


def reject_one(page: Page, kind: str, lab: Lab) -> None:
    """Click reject on a pending plan: it is skipped in the store and leaves the list."""
    sel = f'#plans-pending li[data-kind="{kind}"]'
    for _ in range(10):
        li = page.locator(sel).first
        li.wait_for(timeout=WAIT_MS)
        pid = li.get_attribute("data-plan")
        li.locator("button.reject").dispatch_event("click")
        expect(page.locator(f'#plans-pending li[data-plan="{pid}"]')).to_have_count(
            0, timeout=WAIT_MS
        )
        plan = lab.ctl.store.plan(str(pid))
        assert plan is not None
        if plan["state"] == "skipped":  # else superseded before the click: try the next
            notes = [t["note"] for t in lab.ctl.store.transitions(str(pid))]
            assert "rejected through the API" in notes
            return
    raise AssertionError(f"could not reject a {kind} plan")


def test_page_follows_switch_and_migration(tmp_path: Path, browser: Browser) -> None:
    with Lab(tmp_path, manual=True) as lab:
        page: Page = browser.new_page(viewport={"width": 1400, "height": 950})
        page.on("dialog", lambda d: d.dismiss())
        page.goto(f"{lab.base}/ui/")
        page.fill("#token", TOKEN)
        page.click("#login-button")
        expect(page.locator("#app")).to_be_visible()
        expect(page.locator("#conn")).to_have_text("live", timeout=WAIT_MS)
        # Before the stress: both users on their VM's DC, SLA met.
        expect(row(page, "alice").locator(".sla")).to_have_text("met", timeout=WAIT_MS)
        expect(row(page, "bob").locator(".sla")).to_have_text("met", timeout=WAIT_MS)
        expect(row(page, "alice").locator(".entry")).to_have_text("dc1")
        expect(row(page, "alice").locator(".host")).to_have_text("dc1")
        expect(row(page, "bob").locator(".host")).to_have_text("dc3")
        expect(page.locator('#dc-table tr[data-dc="dc1"] .n-host')).to_have_text("1")
        page.screenshot(path=str(ART / "1-before.png"))

        lab.sc.stress_at = time.time()
        # The violation appears live, and Step 1's plan waits for approval.
        expect(row(page, "alice").locator(".sla")).to_have_text("violated", timeout=WAIT_MS)
        page.locator('#plans-pending li[data-kind="entry_switch"]').first.wait_for(timeout=WAIT_MS)
        page.screenshot(path=str(ART / "2-violated-pending.png"))
        reject_one(page, "entry_switch", lab)
        approve_first(page, "entry_switch", "alice", lab)
        expect(row(page, "alice").locator(".entry")).to_have_text("dc2", timeout=WAIT_MS)
        expect(row(page, "alice").locator(".host")).to_have_text("dc1")  # VM not moved yet
        # Still violated through dc2 (the VM is behind dc1): Step 2 proposes a migration.
        row(page, "alice").click()
        expect(page.locator("#detail-name")).to_have_text("alice")
        expect(page.locator(".v-LISPpriorities")).to_contain_text(
            f"{RLOC['dc2']}=1", timeout=WAIT_MS
        )
        expect(page.locator(f'.rloc-table tr[data-rloc="{RLOC["dc1"]}"]')).to_contain_text(
            re.compile(r"30\d\.\d ms")
        )
        expect(page.locator(".v-SSS")).to_contain_text("0.8 s / 0.4 s / 0.05 s")
        page.screenshot(path=str(ART / "3-entry-switched.png"))
        approve_first(page, "vm_migration", "alice", lab)
        expect(row(page, "alice").locator(".host")).to_have_text("dc2", timeout=WAIT_MS)
        expect(row(page, "alice").locator(".entry")).to_have_text("dc2")
        expect(row(page, "alice").locator(".sla")).to_have_text("met", timeout=WAIT_MS)
        done = page.locator("#plans-done li")
        expect(done.filter(has_text="vm_migration")).to_have_count(1)
        expect(done.filter(has_text="VmMigration vm1: dc1 -> dc2: succeeded")).to_have_count(1)
        expect(page.locator('#dc-table tr[data-dc="dc2"] .n-host')).to_have_text("1")
        expect(page.locator('#dc-table tr[data-dc="dc1"] .n-host')).to_have_text("0")
        page.screenshot(path=str(ART / "4-migrated.png"), full_page=True)
        # What the page showed is what the controller holds.
        assert lab.ctl.state["alice"].host == "dc2"
        assert lab.ctl.hypervisor.vms["vm1"].dc == "dc2"
        page.close()


def test_unauthenticated_browser_sees_nothing(tmp_path: Path, browser: Browser) -> None:
    with Lab(tmp_path) as lab:
        page: Page = browser.new_page(viewport={"width": 1400, "height": 950})
        page.goto(f"{lab.base}/ui/")
        expect(page.locator("#login")).to_be_visible()
        expect(page.locator("#app")).to_be_hidden()
        page.fill("#token", "not-the-token")
        page.click("#login-button")
        expect(page.locator("#login-error")).to_have_text("wrong token")
        text = page.locator("body").inner_text()
        for secret in ("alice", "bob", "dc1", "vm1", RLOC["dc1"]):
            assert secret not in text
        assert page.locator("#users tbody tr").count() == 0
        page.screenshot(path=str(ART / "0-login-refused.png"))
        page.close()
        for path in ("/ui/api/snapshot", "/ui/api/events", "/ui/api/users/alice"):
            r = httpx.get(f"{lab.base}{path}")
            assert r.status_code == 401, path
            r = httpx.get(f"{lab.base}{path}", headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401, path
        # The page and its assets are the same for everyone and carry no data.
        for path in ("/ui/", "/ui/static/app.js", "/ui/static/app.css"):
            body = httpx.get(f"{lab.base}{path}").text
            assert "alice" not in body and RLOC["dc1"] not in body
        assert httpx.get(f"{lab.base}/ui/static/../api.py").status_code == 404
        csp = httpx.get(f"{lab.base}/ui/").headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "connect-src 'self'" in csp
