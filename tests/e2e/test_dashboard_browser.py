"""The dashboard in a real browser: headless Chromium from Debian's package (scripts/test
installs it), driven by Playwright against a live server with a real phone client on the fake
radio. An owner registers with an invite, signs in, pairs a phone and sees it come online,
sends a message and sees it delivered, sees a self-registered agent pending once its link is
opened and claims it with its code, and creates and revokes a key, all without reloading the
pages that change. Screenshots of the main pages are kept in the test's temp dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from app.db.engine import Database
from app.services import credits
from app.settings import Settings
from tests.support.accounts import PASSWORD, invite_code
from tests.support.live import LiveServer, fast_settings, live_server, start_phone

CHROMIUM = "/usr/bin/chromium"
SCREEN = {"width": 1280, "height": 900}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def server(settings: Settings, db: Database) -> AsyncIterator[LiveServer]:
    async with live_server(fast_settings(settings), db) as running:
        yield running


async def _mark_page(page: Page) -> None:
    """A value that lives only as long as this document: gone if the page reloads."""
    await page.wait_for_load_state()
    await page.evaluate("window.__simwireMark = 'unreloaded'")


async def _still_unreloaded(page: Page) -> None:
    assert await page.evaluate("window.__simwireMark") == "unreloaded"


async def test_an_owner_runs_a_project_from_the_dashboard(
    browser: Browser, server: LiveServer, db: Database, tmp_path: Path
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = await (await browser.new_context(viewport=SCREEN)).new_page()
    page.set_default_timeout(20_000)
    # Assertions wait as long as actions (their own default is 5 s; a phone's first heartbeat
    # comes up to 5 s after it connects, on a loaded machine later).
    expect.set_options(timeout=20_000)
    email = "owner@example.com"

    # Register with an invite (owning a new organization), then create a project.
    await page.goto(f"{server.url}/dashboard")
    await expect(page).to_have_url(f"{server.url}/dashboard/signin?next=/dashboard")
    await page.get_by_role("link", name="Register with an invite code").click()
    await page.get_by_label("Your name").fill("Grace Hopper")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Invite code").fill(await invite_code(db))
    await page.get_by_role("button", name="Create account").click()
    await expect(page).to_have_url(f"{server.url}/dashboard/projects")
    await page.get_by_label("Name").fill("corner shop")
    await page.get_by_role("button", name="Create project").click()
    # Its first key is shown once, then on to the overview.
    await expect(page.locator("#new-key")).to_contain_text("sw_")
    await page.get_by_role("link", name="Go to its overview").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("corner shop")
    project_id = page.url.rsplit("/", 1)[1]
    assert project_id.startswith("prj_")

    # Sign out and back in.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(f"{server.url}/dashboard/signin")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{server.url}/dashboard/p/{project_id}")
    await credits.grant(db, project_id, 5_000_000, note="browser test")

    # Pair a phone: the QR code and the token, once; then it comes online on this page.
    await page.get_by_role("link", name="Phones").click()
    await page.get_by_label("Name of the phone").fill("shop pixel")
    await page.get_by_role("button", name="Pair").click()
    qr = page.locator("#pairing-qr")
    await expect(qr).to_be_visible()
    assert await qr.evaluate("img => img.complete && img.naturalWidth > 100")
    token = (await page.locator("#device-token").inner_text()).strip()
    assert token.startswith("sw_dev_")
    await page.screenshot(path=shots / "pairing.png", full_page=True)
    await _mark_page(page)
    phone = await start_phone(server, token, tmp_path / "phone")
    try:
        await expect(page.locator("#phone-state [data-online='true']")).to_be_visible()
        await _still_unreloaded(page)

        # Send a message and watch it reach `delivered` on its page.
        await page.get_by_role("link", name="Send").click()
        await page.get_by_label("To (one number").fill("+14155550123")
        await page.get_by_label("Message").fill("Your order is ready for pickup")
        await page.get_by_role("button", name="Send").click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text("Message msg_")
        await _mark_page(page)
        await expect(page.locator("#message-status [data-status='delivered']")).to_be_visible()
        await _still_unreloaded(page)
        assert [sent.to for sent in phone.radio.sent] == ["+14155550123"]

        # The overview shows the phone online and the delivered message; the customer's
        # reply appears on it without a reload.
        await page.get_by_role("link", name="Overview").click()
        await expect(page.locator("#live [data-online='true']")).to_be_visible()
        await expect(page.locator("#live [data-status='delivered']")).to_be_visible()
        await _mark_page(page)
        await phone.radio.receive("+14155550123", "Thanks, on my way")
        await expect(page.locator("#live [data-status='received']")).to_be_visible()
        await expect(page.locator("#live")).to_contain_text("Thanks, on my way")
        await _still_unreloaded(page)
        # The phone's heartbeat (battery, charging, signal) reaches the panel too.
        await expect(page.locator("#live table.phones")).to_contain_text("100 % (charging)")
        await expect(page.locator("#live table.phones")).to_contain_text("4/4")

        # Keyboard: the first Tab reaches the skip link; a focused link inside the live panel
        # keeps the focus across the panel's refreshes.
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.className") == "skip"
        message_link = page.locator("#live table.messages a").first
        href = await message_link.get_attribute("href")
        await message_link.focus()
        before = await page.locator("#live").get_attribute("data-refreshed")
        await page.wait_for_function(
            "before => document.querySelector('#live').dataset.refreshed !== before", arg=before
        )
        assert await page.evaluate("document.activeElement.getAttribute('href')") == href
        await page.screenshot(path=shots / "overview.png", full_page=True)
    finally:
        await phone.stop()

    # An agent registers itself; its human claims it with the code.
    async with httpx.AsyncClient(base_url=server.url) as api:
        registered = await api.post(
            "/v1/agents/register",
            json={"name": "order-bot", "description": "Texts customers when orders ship"},
        )
        assert registered.status_code == 201, registered.text
        agent = registered.json()
        await page.goto(agent["claim_url"])
        await expect(page.get_by_role("heading", level=1)).to_contain_text("order-bot")
        # Opened, it is pending on the project's agents page; its link there leads back.
        await page.goto(f"{server.url}/dashboard/p/{project_id}/agents")
        pending = page.locator("table.pending-agents")
        await expect(pending).to_contain_text("order-bot")
        await expect(pending).to_contain_text("5 tries left")
        await page.get_by_role("link", name="Claim agent order-bot").click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text("order-bot")
        assert await page.get_by_label("messages.read").is_checked()
        assert await page.get_by_label("numbers.read").is_checked()
        assert not await page.get_by_label("messages.send").is_checked()
        await page.get_by_label("Verification code").fill(agent["verification_code"])
        await page.get_by_label("messages.send").check()
        await page.screenshot(path=shots / "claim.png", full_page=True)
        await page.get_by_role("button", name="Claim").click()
        await expect(page.locator(".ok")).to_contain_text("is claimed")
        await expect(page.locator("table.agents")).to_contain_text("order-bot")
        await expect(page.locator("table.pending-agents")).to_contain_text("No pending agent.")
        status = await api.get(
            "/v1/agents/status", headers={"Authorization": f"Bearer {agent['api_key']}"}
        )
        assert status.json()["status"] == "claimed"
        project = await api.get(
            "/v1/project", headers={"Authorization": f"Bearer {agent['api_key']}"}
        )
        assert sorted(project.json()["scopes"]) == [
            "messages.read",
            "messages.send",
            "numbers.read",
        ]

        # A key: created (shown once), works, revoked, stops.
        await page.get_by_role("link", name="Keys").click()
        await page.get_by_label("Name", exact=True).fill("reporting")
        await page.get_by_label("messages.read").check()
        await page.get_by_role("button", name="Create key").click()
        raw_key = (await page.locator("#new-key").inner_text()).strip()
        assert raw_key.startswith("sw_")
        await page.screenshot(path=shots / "keys.png", full_page=True)
        headers = {"Authorization": f"Bearer {raw_key}"}
        assert (await api.get("/v1/project", headers=headers)).status_code == 200
        await page.get_by_role("button", name="Revoke key reporting").click()
        await expect(page.locator("table.keys")).to_contain_text("revoked")
        assert (await api.get("/v1/project", headers=headers)).status_code == 401

    for section in ("messages", "agents", "credits", "webhooks"):
        await page.goto(f"{server.url}/dashboard/p/{project_id}/{section}")
        await page.screenshot(path=shots / f"{section}.png", full_page=True)
    assert len(list(shots.glob("*.png"))) == 8
