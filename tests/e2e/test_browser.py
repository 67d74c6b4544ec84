"""`greenlight dev` as a new user meets it: a machine asks over the API, a person watching the
sandbox page in a browser sees the message arrive, picks who they are, clicks a button, and the
machine is told. Headless Chromium; nothing is reloaded, everything arrives live."""

from __future__ import annotations

import os

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import REPO, wait_for

APPROVE = "greenlight.approve"
DENY = "greenlight.deny"
# Far above what it takes (well under a second); only a bound for a hung test.
WAIT = 15


def until(driver, what: str, condition):
    """WebDriverWait that tolerates the page re-rendering the element under us."""
    return WebDriverWait(
        driver, WAIT, poll_frequency=0.05, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    ).until(condition, message=f"waiting for {what}")


def open_page(driver, dev) -> None:
    driver.get(dev.page + "/")
    until(driver, "the live event stream", lambda d: "live" in d.find_element(By.ID, "evstatus").text)
    assert d_text(driver, "channame") == "# deploy"


def d_text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def ask(dev, title: str, **params) -> str:
    r = dev.call("POST", "/v1/requests", {"workflow": "deploy", "title": title, "params": params})
    assert r.status == 201, r.body
    return r.json()["id"]


def message_showing(driver, text: str) -> tuple[str, str]:
    """(ts, shown text) of the message on the page whose text contains `text`. Read inside the
    wait: the page re-renders on every event, so an element found earlier may be gone."""

    def find(d):
        for m in d.find_elements(By.CSS_SELECTOR, "#messages .msg"):
            shown = m.text
            if text in shown:
                return m.get_attribute("data-ts"), shown
        return False

    return until(driver, f"a message showing {text!r}", find)


def message(driver, ts: str):
    return driver.find_element(By.CSS_SELECTOR, f'#messages .msg[data-ts="{ts}"]')


def posted_ts(dev, request_id: str) -> str:
    """The ts greenlight recorded for its Slack message, once the delivery worker has it."""
    return wait_for(
        "greenlight to record its Slack message",
        lambda: (dev.call("GET", f"/v1/requests/{request_id}").json().get("slack") or {}).get("ts"),
    )


def act_as(driver, user_id: str, name: str) -> None:
    picker = Select(driver.find_element(By.ID, "userpick"))
    picker.select_by_value(user_id)
    assert f"(@{name})" in picker.first_selected_option.text


def click(driver, dev, ts: str, action_id: str) -> None:
    """Clicks a button of the message; answers the confirmation dialog when the button has one."""
    stored = next(m for m in dev.sandbox("GET", "messages?channel=C0DEPLOY").json() if m["ts"] == ts)
    button_spec = next(
        e for b in stored["blocks"] if b["type"] == "actions" for e in b["elements"] if e["action_id"] == action_id
    )
    until(
        driver,
        f"clicking {action_id}",
        lambda d: message(d, ts).find_element(By.CSS_SELECTOR, f'button[data-action="{action_id}"]').click() or True,
    )
    if "confirm" in button_spec:
        until(driver, "the confirmation dialog", lambda d: d.find_element(By.CSS_SELECTOR, '.overlay button[data-r="1"]')).click()


def save_screenshot(driver) -> None:
    """docs/sandbox.png for the README: only the part of the page with content, no hover."""
    ActionChains(driver).move_to_element(driver.find_element(By.ID, "chanhead")).perform()
    # The viewport itself (a window size would include headless Chromium's invisible chrome).
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1100, "height": 450, "deviceScaleFactor": 1, "mobile": False}
    )
    driver.save_screenshot(str(REPO / "docs" / "sandbox.png"))


def assert_no_page_errors(driver) -> None:
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], "the page logged errors"


def decided(dev, request_id: str) -> dict:
    r = dev.call("GET", f"/v1/requests/{request_id}?wait=10")
    assert r.status == 200, r.body
    return r.json()


def test_approving_in_the_browser_tells_the_machine(dev, browser):
    open_page(browser, dev)
    # The banner tells a new user where to go and which key to use.
    banner = dev.child.log()
    assert f"{dev.page}/" in banner and dev.key in banner and dev.api in banner

    title = "Deploy api v1.2 to production"
    request_id = ask(dev, title, service="api", version="1.2")
    ts, shown = message_showing(browser, title)
    assert ts == posted_ts(dev, request_id)
    assert "Approve" in shown and "Deny" in shown

    act_as(browser, "U0BOB", "bob")
    click(browser, dev, ts, APPROVE)
    until(browser, "the message to show the decision", lambda d: "Approved by @bob" in message(d, ts).text)
    assert message(browser, ts).find_elements(By.CSS_SELECTOR, "button[data-action]") == []
    # The sandbox delivered the click as a signed HTTP request and greenlight acked it.
    outcome = dev.sandbox("GET", "deliveries").json()[-1]["outcome"]
    assert (outcome["transport"], outcome["status"], outcome["timed_out"]) == ("http", 200, False)

    request = decided(dev, request_id)
    assert request["status"] == "approved"
    assert request["decided_by"] == "U0BOB"
    assert [(d["by"], d["verdict"]) for d in request["decisions"]] == [("U0BOB", "approve")]

    # A later request still arrives live beside the decided one.
    pending_title = "Refund order 1042"
    ask(dev, pending_title, amount=120, currency="EUR")
    _, pending = message_showing(browser, pending_title)
    assert "Approve" in pending and "Approved by" not in pending
    assert_no_page_errors(browser)
    if os.environ.get("GREENLIGHT_UPDATE_SCREENSHOT") == "1":
        save_screenshot(browser)


def test_denying_in_the_browser_tells_the_machine(dev, browser):
    open_page(browser, dev)
    title = "Drop table invoices"
    request_id = ask(dev, title, database="billing")
    ts, _ = message_showing(browser, title)
    assert ts == posted_ts(dev, request_id)

    act_as(browser, "U0CAROL", "carol")
    click(browser, dev, ts, DENY)
    until(browser, "the message to show the decision", lambda d: "Denied by @carol" in message(d, ts).text)
    assert message(browser, ts).find_elements(By.CSS_SELECTOR, "button[data-action]") == []

    request = decided(dev, request_id)
    assert request["status"] == "denied"
    assert request["decided_by"] == "U0CAROL"
    assert [(d["by"], d["verdict"]) for d in request["decisions"]] == [("U0CAROL", "deny")]
    assert_no_page_errors(browser)


def test_approving_on_the_home_tab_and_asking_what_is_pending(dev, browser):
    open_page(browser, dev)
    title = "Deploy billing v7"
    request_id = ask(dev, title, service="billing")
    ts, _ = message_showing(browser, title)
    assert ts == posted_ts(dev, request_id)

    # Bob opens greenlight's Home tab: the request waits for him, with the message's buttons.
    act_as(browser, "U0BOB", "bob")
    browser.find_element(By.ID, "hometab").click()
    until(browser, "the Home tab listing the request", lambda d: title in d_text(d, "homebody"))
    assert "Waiting for you" in d_text(browser, "homebody")
    approve = f'#homebody button[data-action="{APPROVE}"][data-value="{request_id}"]'
    until(browser, "clicking Approve on the Home tab", lambda d: d.find_element(By.CSS_SELECTOR, approve).click() or True)
    # The tab is published again: nothing waits, the request is among the recent decisions.
    until(browser, "the refreshed Home tab", lambda d: "Nothing is waiting" in d_text(d, "homebody"))
    assert title in d_text(browser, "homebody") and "Approved" in d_text(browser, "homebody")
    request = decided(dev, request_id)
    assert (request["status"], request["decided_by"]) == ("approved", "U0BOB")

    # Back in #deploy the message shows the decision.
    channel_link(browser, "C0DEPLOY").click()
    until(browser, "#deploy", lambda d: d_text(d, "channame") == "# deploy")
    until(browser, "the message to show the decision", lambda d: "Approved by @bob" in message(d, ts).text)

    # /greenlight pending in the message box: an answer only Bob sees, listing what waits.
    waiting_title = "Rotate the API keys"
    waiting_id = ask(dev, waiting_title)
    message_showing(browser, waiting_title)
    type_into_composer(browser, "/greenlight pending")
    reply = until(browser, "the ephemeral answer", lambda d: next(
        (m for m in d.find_elements(By.CSS_SELECTOR, "#messages .msg.eph") if "waiting for your vote" in m.text), False))
    assert "Only visible to you" in reply.text
    assert waiting_title in reply.text and waiting_id in reply.text
    assert title not in reply.text, "decided requests are not listed"
    # The sandbox sent it as a signed POST to /slack/commands and got the answer in the ack.
    delivery = dev.sandbox("GET", "deliveries").json()[-1]
    assert delivery["kind"] == "slash_command"
    outcome = delivery["outcome"]
    assert (outcome["transport"], outcome["status"], outcome["timed_out"]) == ("http", 200, False)
    assert_no_page_errors(browser)


# --- the sandbox page on its own, with a Bolt app over Socket Mode -------------------------------


def sandbox_app(sandbox):
    """The Bolt app of test_bolt_home_and_commands (Home tab, /greenlight), plus an Approve button
    handler that rewrites the clicked message without its buttons."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler
    from test_bolt_home_and_commands import bolt_app

    app, seen = bolt_app(sandbox)

    @app.action("approve")
    def approve(ack, body, client):
        ack()
        client.chat_update(
            channel=body["container"]["channel_id"],
            ts=body["container"]["message_ts"],
            text=f"Approved by <@{body['user']['id']}>",
            blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": f"*Approved* by <@{body['user']['id']}>"}}],
        )

    handler = SocketModeHandler(app, sandbox.app_token)
    handler.connect()
    wait_for("a Socket Mode connection", lambda: sandbox.control("GET", "connections").json()["open"] == 1)
    return handler, seen


def page_message(driver, text: str):
    """The first message element on the page whose text contains `text` (or False)."""
    return next((m for m in driver.find_elements(By.CSS_SELECTOR, "#messages .msg") if text in m.text), False)


def channel_link(driver, channel_id: str):
    return driver.find_element(By.CSS_SELECTOR, f'#chanlist a[data-chan="{channel_id}"]')


def type_into_composer(driver, text: str) -> None:
    box = driver.find_element(By.ID, "msgbox")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.CSS_SELECTOR, '#composer button[type="submit"]').click()


def test_the_page_keeps_channel_ack_runs_commands_and_shows_the_home_tab(sandbox, browser):
    from slack_sdk import WebClient

    handler, seen = sandbox_app(sandbox)
    web = WebClient(token=sandbox.bot_token, base_url=sandbox.api_url, timeout=10)
    try:
        # The channel is in the URL: a reload comes back to it.
        browser.get(sandbox.url + "/?channel=ops")
        until(browser, "the live event stream", lambda d: "live" in d.find_element(By.ID, "evstatus").text)
        assert d_text(browser, "channame") == "# ops"
        channel_link(browser, "C0DEPLOY").click()
        until(browser, "#deploy to open", lambda d: d_text(d, "channame") == "# deploy")
        assert "channel=deploy" in browser.current_url
        browser.refresh()
        until(browser, "the reloaded page", lambda d: "live" in d.find_element(By.ID, "evstatus").text)
        assert d_text(browser, "channame") == "# deploy"

        # A click's ack badge stays under the message after the app replaces its buttons.
        act_as(browser, "U0BOB", "bob")
        posted = web.chat_postMessage(
            channel="C0DEPLOY",
            text="Deploy?",
            blocks=[
                {"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy api v1.3*"}},
                {"type": "actions", "elements": [{"type": "button", "action_id": "approve", "value": "req_3",
                                                  "text": {"type": "plain_text", "text": "Approve"}}]},
            ],
        )
        ts = posted["ts"]
        until(browser, "the approval message", lambda d: page_message(d, "Deploy api v1.3"))
        until(browser, "clicking Approve", lambda d: message(d, ts).find_element(By.CSS_SELECTOR, 'button[data-action="approve"]').click() or True)
        until(browser, "the rewritten message", lambda d: "Approved by @bob" in message(d, ts).text)
        badge = until(browser, "the ack badge", lambda d: message(d, ts).find_element(By.CSS_SELECTOR, ".acknote .ack"))
        assert "HTTP 200" in badge.text and "socket" in badge.text
        web.chat_postMessage(channel="C0DEPLOY", text="a later message re-renders the channel")
        until(browser, "the later message", lambda d: page_message(d, "re-renders the channel"))
        assert "HTTP 200" in message(browser, ts).find_element(By.CSS_SELECTOR, ".acknote .ack").text

        # A channel with news is marked until it is opened.
        web.chat_postMessage(channel="C0PAYMENTS", text="refund 1042 waiting")
        until(browser, "#payments marked unread", lambda d: "unread" in channel_link(d, "C0PAYMENTS").get_attribute("class"))
        assert "unread" not in channel_link(browser, "C0DEPLOY").get_attribute("class")
        channel_link(browser, "C0PAYMENTS").click()
        until(browser, "#payments read", lambda d: "unread" not in channel_link(d, "C0PAYMENTS").get_attribute("class"))
        channel_link(browser, "C0DEPLOY").click()
        until(browser, "#deploy again", lambda d: d_text(d, "channame") == "# deploy")

        # The message box runs a slash command as Bob; the answer is only visible to him.
        type_into_composer(browser, "/greenlight pending")
        reply = until(browser, "the command's ephemeral answer", lambda d: next(
            (m for m in d.find_elements(By.CSS_SELECTOR, "#messages .msg.eph") if "pending: 2 pending" in m.text), False))
        assert "Only visible to you" in reply.text
        assert seen["commands"][0]["user_id"] == "U0BOB" and seen["commands"][0]["channel_id"] == "C0DEPLOY"
        until(browser, "the command's ack", lambda d: "HTTP 200" in d_text(d, "composerstatus"))
        # Plain text is Bob's own message.
        type_into_composer(browser, "shipping after lunch")
        mine = until(browser, "Bob's message", lambda d: page_message(d, "shipping after lunch"))
        assert "Bob Baker" in mine.text and "APP" not in mine.text

        # The Home tab: opening it sends app_home_opened; the published view shows up live.
        browser.find_element(By.ID, "hometab").click()
        until(browser, "the Home tab", lambda d: "Pending approvals" in d_text(d, "homebody"))
        assert d_text(browser, "channame") == "greenlight \u00b7 Home"
        assert "visit 1" in d_text(browser, "homebody") and seen["home"][0]["user"] == "U0BOB"
        until(browser, "approving req_1 from Home", lambda d: d.find_element(
            By.CSS_SELECTOR, '#homebody button[data-action="home_approve"][data-value="req_1"]').click() or True)
        until(browser, "the refreshed Home tab", lambda d: "Deploy api v1.2 \u2705 approved" in d_text(d, "homebody"))
        assert seen["clicks"][0]["container"]["type"] == "view"
        until(browser, "the click's ack", lambda d: "click:" in d_text(d, "homeack") and "HTTP 200" in d_text(d, "homeack"))
        # ?home survives a reload and opens the tab again (a second visit).
        assert browser.current_url.endswith("?home")
        browser.refresh()
        until(browser, "the Home tab after a reload", lambda d: "visit 2" in d_text(d, "homebody"))
        assert_no_page_errors(browser)
    finally:
        handler.close()
