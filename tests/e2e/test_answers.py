"""Answers beyond yes and no (issue 27) in `greenlight dev`, as a person meets them in the
sandbox page: Approve opens a modal with the request's fields, a bad number is refused under
its field, a select and a number are filled in, and the answers show on the message and come
back typed over the API. The modal greenlight opened is checked against slack_sdk's Block Kit
models (the official Python SDK), so it is a view Slack would accept."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from slack_sdk.models.blocks import InputBlock, NumberInputElement, StaticSelectElement
from slack_sdk.models.views import View, ViewState

from test_browser import act_as, assert_no_page_errors, click, decided, message, message_showing, open_page, until

APPROVE = "greenlight.approve"


def test_a_person_fills_the_modal_and_sees_the_answers_on_the_message(dev, browser):
    open_page(browser, dev)
    title = "Deploy api v2"
    r = dev.call(
        "POST",
        "/v1/requests",
        {
            "workflow": "deploy",
            "title": title,
            "fields": [
                {"name": "env", "label": "Environment", "type": "select", "options": ["staging", "production"]},
                {"name": "replicas", "label": "Replicas", "type": "number", "min": 1, "max": 10, "default": 2},
            ],
        },
    )
    assert r.status == 201, r.body
    request_id = r.json()["id"]
    ts, _ = message_showing(browser, title)

    act_as(browser, "U0BOB", "bob")
    click(browser, dev, ts, APPROVE)
    dialog = until(browser, "the answers modal", lambda d: d.find_element(By.CSS_SELECTOR, "#modalroot .dialog"))
    assert "Approve request" in dialog.text

    # The view greenlight opened is one slack_sdk's models accept, input by input.
    views = dev.sandbox("GET", "views?open=true").json()
    view = View(**views[-1]["view"])
    view.validate_json()
    inputs = [b for b in view.blocks if isinstance(b, InputBlock)]
    assert [b.block_id for b in inputs] == ["greenlight.field.env", "greenlight.field.replicas"]
    assert isinstance(inputs[0].element, StaticSelectElement)
    assert isinstance(inputs[1].element, NumberInputElement)
    assert inputs[1].element.initial_value == "2"

    # A number out of bounds: the error shows under that field and the modal stays open.
    Select(browser.find_element(By.CSS_SELECTOR, '[data-input="greenlight.field.env"]')).select_by_value("production")
    number = browser.find_element(By.CSS_SELECTOR, '[data-input="greenlight.field.replicas"]')
    number.clear()
    number.send_keys("50")
    browser.find_element(By.ID, "msubmit").click()
    until(browser, "the error under Replicas", lambda d: "from 1 to 10" in d.find_element(By.CSS_SELECTOR, "#modalroot .invalid").text)
    assert dev.call("GET", f"/v1/requests/{request_id}").json()["status"] == "pending"

    # Fixed: the modal closes and the message shows the answers.
    number = browser.find_element(By.CSS_SELECTOR, '[data-input="greenlight.field.replicas"]')
    number.clear()
    number.send_keys("3")
    browser.find_element(By.ID, "msubmit").click()
    until(browser, "the modal to close", lambda d: d.find_elements(By.CSS_SELECTOR, "#modalroot .dialog") == [])
    until(browser, "the answers on the message", lambda d: "Approved by @bob" in message(d, ts).text)
    shown = message(browser, ts).text
    assert "Environment" in shown and "production" in shown
    assert "Replicas" in shown and "3" in shown

    request = decided(dev, request_id)
    assert request["status"] == "approved"
    assert request["response"] == {"env": "production", "replicas": 3}
    assert request["decisions"][0]["response"] == {"env": "production", "replicas": 3}
    assert_no_page_errors(browser)


def test_view_state_values_parse_with_slack_sdk(dev):
    """What the sandbox reports in view.state.values for each element type, read with
    slack_sdk's ViewState (the shape Slack documents: value, selected_option,
    selected_options)."""
    r = dev.call(
        "POST",
        "/v1/requests",
        {
            "workflow": "deploy",
            "title": "State",
            "fields": [
                {"name": "t", "type": "text"},
                {"name": "n", "type": "number"},
                {"name": "s", "type": "select", "options": ["a", "b"]},
                {"name": "c", "type": "boolean"},
            ],
        },
    )
    assert r.status == 201, r.body
    request_id = r.json()["id"]
    from test_browser import posted_ts

    ts = posted_ts(dev, request_id)
    clicked = dev.sandbox("POST", "click", {"channel": "C0DEPLOY", "message_ts": ts, "action_id": APPROVE, "user": "U0ALICE"})
    assert clicked.status == 200, clicked.body
    from conftest import wait_for

    view = wait_for("the modal", lambda: next(iter(dev.sandbox("GET", "views?open=true").json()), None))
    # A required select left empty: refused under it, the rest kept.
    bad = dev.sandbox(
        "POST",
        "views/submit",
        {"view_id": view["id"], "user": "U0ALICE", "values": {"greenlight.field.t": "x", "greenlight.field.n": "1.5"}},
    ).json()
    assert "greenlight.field.s" in bad["view"]["errors"], bad
    ok = dev.sandbox(
        "POST",
        "views/submit",
        {
            "view_id": view["id"],
            "user": "U0ALICE",
            "values": {
                "greenlight.field.t": "x",
                "greenlight.field.n": "1.5",
                "greenlight.field.s": "b",
                "greenlight.field.c": ["true"],
            },
        },
    ).json()
    assert ok["body"] == "", ok
    assert decided(dev, request_id)["response"] == {"t": "x", "n": 1.5, "s": "b", "c": True}
    # The state as a Slack app reads it, through slack_sdk's model.
    state = ViewState(values=_state_of(dev, view["id"]))
    values = state.to_dict()["values"]
    assert values["greenlight.field.s"]["value"]["selected_option"]["value"] == "b"
    assert [o["value"] for o in values["greenlight.field.c"]["value"]["selected_options"]] == ["true"]
    assert values["greenlight.field.n"]["value"]["value"] == "1.5"


def _state_of(dev, view_id: str) -> dict:
    """The state.values the sandbox sent with its last view_submission of `view_id`."""
    deliveries = dev.sandbox("GET", "deliveries").json()
    last = [d for d in deliveries if d["kind"] == "view_submission"][-1]
    return last["payload"]["view"]["state"]["values"]
