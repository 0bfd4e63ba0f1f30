"""The console's cloud section over a real server, in real Chromium and with real clients.

python-novaclient (authenticated by keystoneauth1 on Identity v2.0) builds servers, requests
drives the control plane and the other mocks; the page is read and its forms sent by
Chromium (Playwright), or by requests where no script or focus matters. The server's clock
starts now (keystoneauth refuses tokens that expired in 1970); every test uses tenants of
its own, and asserts times relative to the clock it read.
"""

from __future__ import annotations

import html as markup
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
import requests

from simulacra.cloud.compute import NOVA, NOVA_CONTROL
from simulacra.cloud.loadbalancer import CLB, CLB_CONTROL
from tests.browser import chromium_page
from tests.server import RunningServer
from tests.test_shared_cloud import authenticate, novaclient_on

if TYPE_CHECKING:
    from playwright.sync_api import Page

CLOCK_NOW = ["--clock-start", "now"]
AUTH_BEHAVIORS = "/mimic/v1.1/IdentityControlAPI/behaviors/auth"


@pytest.fixture(scope="module")
def console() -> Iterator[RunningServer]:
    running = RunningServer(store="memory://", extra_args=CLOCK_NOW).start()
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def browser() -> Iterator[Page]:
    with chromium_page() as page:
        yield page


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def tenant_of(url: str, username: str) -> str:
    return authenticate(url, username)["token"]["tenant"]["id"]


def nova_url(url: str, tenant: str, region: str = "ORD") -> str:
    return f"{url}/mimicking/{NOVA.service_id}/{region}/v2/{tenant}"


def tenant_page(url: str, tenant: str, **query: str) -> str:
    response = requests.get(f"{url}/console/cloud/tenants/{tenant}", params=query)
    assert response.status_code == 200, response.text
    return response.text


def server_status(html: str, server_id: str) -> str:
    row = re.search(rf'<tr data-server="{re.escape(server_id)}">(.*?)</tr>', html, re.S)
    assert row is not None, f"server {server_id} is not on the page"
    badge = re.search(r'<span class="badge (\w+)">([^<]+)</span>', row.group(1))
    assert badge is not None
    return badge.group(2)


def clock_of(html: str) -> tuple[float, float]:
    """(now, start) as the page shows them, in seconds."""
    now = re.search(r'id="cloud-now">([^<]+)<', html)
    start = re.search(r'id="cloud-start">([^<]+)<', html)
    assert now is not None and start is not None
    return seconds_of(now.group(1)), seconds_of(start.group(1))


def seconds_of(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def post_form(url: str, path: str, **fields: str) -> requests.Response:
    """A console form sent as a browser sends it; the page it redirects to."""
    response = requests.post(url + path, data=fields)
    assert response.history and response.history[0].status_code == 303, response.text
    assert response.status_code == 200
    return response


# The check: novaclient builds, the page ticks, the server is ACTIVE ---------------


def test_a_server_novaclient_builds_goes_active_when_the_page_ticks(console, browser):
    user = unique("builder")
    tenant = tenant_of(console.url, user)
    nova = novaclient_on(console.url, user, tenant)
    server = nova.servers.create("web", image="img", flavor="2", meta={"server_building": "120"})
    assert nova.servers.get(server.id).status == "BUILD"

    browser.goto(console.url + "/console/cloud")
    browser.get_by_role("link", name=tenant, exact=True).click()
    row = browser.locator(f'tr[data-server="{server.id}"]')
    assert row.locator(".badge").inner_text() == "BUILD"
    assert "web" in row.inner_text()

    browser.goto(console.url + "/console/cloud")
    browser.get_by_label("Seconds to advance").fill("120")
    browser.get_by_role("button", name="Tick").click()
    assert "advanced 120 s" in browser.get_by_role("status").inner_text()

    browser.goto(f"{console.url}/console/cloud/tenants/{tenant}")
    assert row.locator(".badge").inner_text() == "ACTIVE"
    assert nova.servers.get(server.id).status == "ACTIVE"


def test_the_tick_form_works_by_keyboard_alone(console, browser):
    browser.goto(console.url + "/console/cloud")
    before, _ = clock_of(browser.content())
    for _ in range(40):  # Tab through the page until the amount field has the focus
        browser.keyboard.press("Tab")
        if browser.evaluate("document.activeElement.id") == "tick-amount":
            break
    else:
        pytest.fail("the tick form's field cannot be reached with Tab")
    browser.keyboard.type("7")
    browser.keyboard.press("Enter")
    browser.get_by_role("status").wait_for()
    after, _ = clock_of(browser.content())
    assert after - before == pytest.approx(7, abs=1e-3)


def test_a_bad_tick_shows_why_and_leaves_the_clock(console, browser):
    browser.goto(console.url + "/console/cloud")
    before, _ = clock_of(browser.content())
    browser.get_by_label("Seconds to advance").fill("abc")
    browser.get_by_role("button", name="Tick").click()
    alert = browser.get_by_role("alert").inner_text()
    assert "did not move" in alert and "'abc'" in alert
    assert clock_of(browser.content())[0] == before
    for amount in ("-5", "", "1e999", "nan", "x" * 5000):
        page = post_form(console.url, "/console/cloud/tick", amount=amount)
        assert "The clock did not move" in page.text, amount
        assert clock_of(page.text)[0] == before
    # The tick API answers the same rule (one function for both).
    api = requests.post(console.url + "/mimic/v1.1/tick", json={"amount": "abc"})
    assert api.status_code == 400 and "non-negative number" in api.json()["message"]


def test_a_reset_shows_the_clock_at_its_start_again(console):
    page = post_form(console.url, "/console/cloud/tick", amount="10")
    now, start = clock_of(page.text)
    assert now >= start + 10
    assert requests.post(console.url + "/api/v2/reset/cloud").status_code == 200
    now, start_again = clock_of(requests.get(console.url + "/console/cloud").text)
    assert now == start_again == start


# What a tenant holds ------------------------------------------------------------------


def test_load_balancers_and_their_nodes_are_shown_with_their_states(console):
    tenant = tenant_of(console.url, unique("lbs"))
    clb = f"{console.url}/mimicking/{CLB.service_id}/ORD/v2/{tenant}/loadbalancers"
    body = {
        "name": "front",
        "protocol": "HTTP",
        "port": 80,
        "virtualIps": [{"type": "PUBLIC"}],
        "nodes": [
            {"address": "10.1.0.1", "port": 8080, "condition": "ENABLED"},
            {"address": "10.1.0.2", "port": 8080, "condition": "DRAINING"},
        ],
        "metadata": [{"key": "lb_building", "value": 30}],
    }
    created = requests.post(clb, json={"loadBalancer": body})
    assert created.status_code == 202, created.text
    lb = created.json()["loadBalancer"]
    html = tenant_page(console.url, tenant)
    card = re.search(
        rf'<article class="card cloud-lb" data-lb="{lb["id"]}".*?</article>', html, re.S
    )
    assert card is not None
    text = card.group(0)
    assert "front" in text and '<span class="badge warn">BUILD</span>' in text
    assert "10.1.0.1:8080" in text and "10.1.0.2:8080" in text
    assert "DRAINING" in text and text.count(">ONLINE<") == 2
    post_form(console.url, "/console/cloud/tick", amount="30")
    assert '<span class="badge ok">ACTIVE</span>' in tenant_page(console.url, tenant)
    # Each region shows its own: the tenant has none in DFW.
    assert "No load balancer in DFW" in tenant_page(console.url, tenant, region="DFW")


def test_a_tenant_pages_its_servers(console):
    tenant = unique("many")  # known to Nova only: never authenticated
    ids = []
    for number in range(55):
        body = {"server": {"name": f"s{number}", "imageRef": "img", "flavorRef": "2"}}
        created = requests.post(nova_url(console.url, tenant) + "/servers", json=body)
        assert created.status_code == 202, created.text
        ids.append(created.json()["server"]["id"])
    listed = requests.get(console.url + "/console/cloud")
    assert f">{tenant}</a>" in listed.text and "known to the services only" in listed.text

    first = tenant_page(console.url, tenant)
    assert "Page 1 of 2 (55 servers)" in first
    on_first = re.findall(r'<tr data-server="([^"]+)">', first)
    assert len(on_first) == 50
    following = re.search(r'<a class="button secondary" href="([^"]+)" rel="next">', first)
    assert following is not None
    second = requests.get(console.url + following.group(1).replace("&amp;", "&")).text
    on_second = re.findall(r'<tr data-server="([^"]+)">', second)
    assert on_first + on_second == ids  # creation order, each once
    assert "Page 2 of 2" in second and 'rel="prev"' in second
    # A page past the last is the last; one that is not a number is refused, as elsewhere.
    assert re.findall(r'<tr data-server="([^"]+)">', tenant_page(console.url, tenant, page="9"))
    bad = requests.get(f"{console.url}/console/cloud/tenants/{tenant}", params={"page": "abc"})
    assert bad.status_code == 400 and "page must be a positive integer" in bad.text


def test_the_catalog_a_token_sees_is_shown(console):
    user = unique("catalog")
    access = authenticate(console.url, user)
    tenant = access["token"]["tenant"]["id"]
    html = tenant_page(console.url, tenant)
    section = html[html.index('id="cloud-catalog-h"') :]
    for entry in access["serviceCatalog"]:
        assert f"<td>{entry['name']}</td>" in section
        for endpoint in entry["endpoints"]:
            assert endpoint["publicURL"] in section
    assert user in html  # its user


def test_fastly_services_are_shown(console):
    created = requests.post(
        console.url + "/fastly/service", data={"name": "cdn-shop"}, headers={"Fastly-Key": "key-1"}
    )
    assert created.status_code == 200, created.text
    html = requests.get(console.url + "/console/cloud").text
    section = html[html.index('id="cloud-fastly-h"') :]
    assert "cdn-shop" in section and created.json()["id"] in section


def test_unknown_tenants_and_regions_are_refused_without_creating_anything(console):
    missing = requests.get(console.url + "/console/cloud/tenants/no-such-tenant")
    assert missing.status_code == 404
    assert "no tenant 'no-such-tenant'" in markup.unescape(missing.text)
    assert "no-such-tenant" not in requests.get(console.url + "/console/cloud").text
    tenant = tenant_of(console.url, unique("region"))
    bad = requests.get(f"{console.url}/console/cloud/tenants/{tenant}", params={"region": "MARS"})
    assert bad.status_code == 400 and "unknown region 'MARS'" in markup.unescape(bad.text)


# Behaviors ----------------------------------------------------------------------------


def register(url: str, body: dict[str, Any]) -> str:
    response = requests.post(url, json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_registered_behaviors_show_and_are_removed_from_the_page(console, browser):
    tenant = tenant_of(console.url, unique("behaviors"))
    nova_behaviors = (
        f"{console.url}/mimicking/{NOVA_CONTROL.service_id}/ORD/v2/{tenant}/behaviors/creation"
    )
    clb_behaviors = (
        f"{console.url}/mimicking/{CLB_CONTROL.service_id}/ORD/v2/{tenant}/behaviors/creation"
    )
    nova_rule = register(
        nova_behaviors,
        {"name": "fail", "parameters": {"code": 503}, "criteria": [{"server_name": "doomed.*"}]},
    )
    clb_rule = register(
        clb_behaviors, {"name": "error", "criteria": [{"loadbalancer_name": "broken"}]}
    )
    auth_rule = register(
        console.url + AUTH_BEHAVIORS,
        {"name": "fail", "criteria": [{"username": unique("nobody")}]},
    )
    browser.goto(console.url + "/console/cloud")
    table = browser.locator("table.cloud-behaviors").inner_text()
    for rule in (nova_rule, clb_rule, auth_rule):
        assert rule in table
    assert '{"server_name":"doomed.*"}' in table and '"code":503' in table

    asked: list[str] = []

    def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    browser.once("dialog", accept)
    browser.get_by_role("button", name=f"Remove behavior {nova_rule}").click()
    assert f"Removed the Nova: server creation behavior {nova_rule}" in (
        browser.get_by_role("status").inner_text()
    )
    assert asked and nova_rule in asked[0]  # data-confirm asked first
    assert nova_rule not in browser.locator("table.cloud-behaviors").inner_text()
    assert requests.get(nova_behaviors).json() == {"behaviors": []}

    # The tenant's page lists its own (not another tenant's), and its form comes back to it.
    other = unique("other")
    other_rule = register(
        nova_behaviors.replace(f"/{tenant}/", f"/{other}/"), {"name": "error", "criteria": []}
    )
    html = tenant_page(console.url, tenant)
    assert clb_rule in html and auth_rule not in html and other_rule not in html
    assert other_rule in tenant_page(console.url, other)
    fields = {"kind": "load_balancer_creation", "tenant": tenant, "region": "ORD", "id": clb_rule}
    back = post_form(console.url, "/console/cloud/behaviors/remove", back="tenant", **fields)
    assert back.url.startswith(f"{console.url}/console/cloud/tenants/{tenant}?notice=")
    assert requests.get(clb_behaviors).json() == {"behaviors": []}
    post_form(console.url, "/console/cloud/behaviors/remove", kind="auth", id=auth_rule)
    assert auth_rule not in requests.get(console.url + AUTH_BEHAVIORS).text

    # Removing it again, or from a registry that does not exist, says why.
    again = post_form(console.url, "/console/cloud/behaviors/remove", **fields)
    assert "Not removed: no creation behavior with id" in again.text
    nowhere = dict(fields, kind="server_creation", tenant=unique("none"))
    assert (
        "has no server_creation behaviors"
        in post_form(console.url, "/console/cloud/behaviors/remove", **nowhere).text
    )
    odd = post_form(console.url, "/console/cloud/behaviors/remove", kind="x<b>", id="1")
    assert "unknown behavior registry" in odd.text
    assert "x<b>" not in odd.text and "x&lt;b&gt;" in odd.text  # escaped, never markup


# --shared-cloud ---------------------------------------------------------------------


def test_the_page_shows_what_another_instance_did(pg_url):
    extra = ["--shared-cloud", *CLOCK_NOW]
    a = RunningServer(store=pg_url, extra_args=extra).start()
    b = RunningServer(store=pg_url, extra_args=extra).start()
    try:
        tenant = tenant_of(b.url, "shared-user")
        nova_b = novaclient_on(b.url, "shared-user", tenant)
        server = nova_b.servers.create("web", image="img", flavor="2", meta={"server_building": 60})
        assert server_status(tenant_page(a.url, tenant), server.id) == "BUILD"
        post_form(a.url, "/console/cloud/tick", amount="60")  # A's page moves the shared clock
        assert nova_b.servers.get(server.id).status == "ACTIVE"
        assert server_status(tenant_page(a.url, tenant), server.id) == "ACTIVE"
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
