"""The Fastly mock over a real socket, driven by the fastly SDK (v15) and by requests.

The SDK is pointed at the mock with ``Configuration(host=<base>/fastly)`` and sends its
token as ``Fastly-Key``; it validates every response against Fastly's models, so a test
passing here means the shapes are Fastly's. requests checks the raw bodies and the form
and query styles of Mimic's clients (OpenStack Poppy). Each test uses its own token, so it
has its own customer.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import fastly
import pytest
from fastly.api import (
    backend_api,
    cache_settings_api,
    condition_api,
    customer_api,
    domain_api,
    response_object_api,
    service_api,
    settings_api,
    version_api,
)
from fastly.exceptions import NotFoundException
from fastly.model.create_response_object_request import CreateResponseObjectRequest


@pytest.fixture
def token(name: str) -> str:
    return "token-" + name


@pytest.fixture
def client(base_url: str, token: str) -> Iterator[fastly.ApiClient]:
    configuration = fastly.Configuration(host=base_url + "/fastly")
    configuration.api_token = token
    with fastly.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
def services(client):
    return service_api.ServiceApi(client)


@pytest.fixture
def versions(client):
    return version_api.VersionApi(client)


@pytest.fixture
def fastly_url(base_url: str) -> str:
    return base_url + "/fastly"


def tick(http, base_url: str, seconds: float) -> datetime:
    stamp = http.post(base_url + "/mimic/v1.1/tick", json={"amount": seconds}).json()["now"]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


# Mimic's twelve calls, as the SDK makes them ---------------------------------------------------


def test_readme_calls_with_the_sdk(http, fastly_url, client, services, versions, token):
    # 12. GET / (health check): the SDK has no call for it.
    health = http.get(fastly_url + "/")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    # 1. current_customer
    customer = customer_api.CustomerApi(client).get_logged_in_customer()
    assert customer.name == "Poppy - Test" and len(customer.id) == 22
    # 2. create service
    service = services.create_service(name="cdn-1", comment="made by a test")
    sid = service.id
    assert (service.name, service.customer_id, service.type) == ("cdn-1", customer.id, "vcl")
    assert [int(v.number) for v in service.versions] == [1]
    assert service.versions[0].active is False
    # 3. create version: numbers really increment
    assert versions.create_service_version(service_id=sid).number == 2
    # 4. search by name
    assert services.search_service(name="cdn-1").id == sid
    # 5. domain, 6. check_all
    domains = domain_api.DomainApi(client)
    domain = domains.create_domain(service_id=sid, version_id=1, name="www.example.com")
    assert (domain.name, int(domain.version), domain.service_id) == ("www.example.com", 1, sid)
    checks = domains.check_domains(service_id=sid, version_id=1)
    [[checked, cname, ok]] = [c.value for c in checks.value]
    assert (checked["name"], cname, ok) == ("www.example.com", None, False)
    # 7. backend
    origin = backend_api.BackendApi(client).create_backend(
        service_id=sid, version_id=1, name="origin", address="203.0.113.7", port=443, use_ssl=True
    )
    assert (origin.address, int(origin.port), origin.use_ssl, origin.ipv4) == (
        "203.0.113.7",
        443,
        True,
        "203.0.113.7",
    )
    # 8. list versions
    assert [int(v.number) for v in versions.list_service_versions(service_id=sid)] == [1, 2]
    # 9. activate
    active = versions.activate_service_version(service_id=sid, version_id=1)
    assert (active.active, active.locked) == (True, True)
    # 11. details
    detail = services.get_service_detail(service_id=sid)
    assert int(detail.active_version.number) == 1
    assert [d.name for d in detail.active_version.domains] == ["www.example.com"]
    assert [b.name for b in detail.active_version.backends] == ["origin"]
    assert int(detail.version.number) == 1
    # 10. delete, then a real 404
    assert services.delete_service(service_id=sid).status == "ok"
    with pytest.raises(fastly.ApiException) as caught:
        services.get_service_detail(service_id=sid)
    assert caught.value.status == 404


def test_versions_clone_activate_and_deactivate(client, services, versions):
    sid = services.create_service(name="cdn").id
    domain_api.DomainApi(client).create_domain(service_id=sid, version_id=1, name="a.example.com")
    versions.activate_service_version(service_id=sid, version_id=1)
    clone = versions.clone_service_version(service_id=sid, version_id=1)
    assert int(clone.number) == 2 and clone.active is False and clone.locked is False
    cloned = domain_api.DomainApi(client).list_domains(service_id=sid, version_id=2)
    assert [d.name for d in cloned.value] == ["a.example.com"]
    versions.activate_service_version(service_id=sid, version_id=2)
    listed = versions.list_service_versions(service_id=sid)
    assert [(int(v.number), v.active) for v in listed] == [(1, False), (2, True)]
    assert versions.get_service_version(service_id=sid, version_id=2).active is True
    detail = services.get_service_detail(service_id=sid)
    assert int(detail.active_version.number) == 2
    off = versions.deactivate_service_version(service_id=sid, version_id=2)
    assert off.active is False
    assert services.get_service_detail(service_id=sid).active_version is None
    entry = next(s for s in services.list_services() if s.id == sid)
    assert int(entry.version) == 2


def test_conditions_cache_settings_response_objects_and_settings(client, services):
    sid = services.create_service(name="cdn").id
    conditions = condition_api.ConditionApi(client)
    condition = conditions.create_condition(
        service_id=sid, version_id=1, name="is-api", statement='req.url ~ "^/api"', priority="10"
    )
    assert (condition.type, condition.priority, condition.version) == ("REQUEST", "10", "1")
    updated = conditions.update_condition(
        service_id=sid, version_id=1, condition_name="is-api", priority="5"
    )
    assert updated.priority == "5"
    listed = conditions.list_conditions(service_id=sid, version_id=1)
    assert [c.name for c in listed.value] == ["is-api"]

    cache = cache_settings_api.CacheSettingsApi(client)
    setting = cache.create_cache_settings(
        service_id=sid, version_id=1, name="short", ttl="60", stale_ttl="5", action="cache"
    )
    assert (setting.ttl, setting.stale_ttl, setting.action) == ("60", "5", "cache")
    plain = cache.create_cache_settings(service_id=sid, version_id=1, name="plain")
    assert plain.action is None
    assert cache.get_cache_settings(service_id=sid, version_id=1, cache_settings_name="short")
    assert len(cache.list_cache_settings(service_id=sid, version_id=1)) == 2
    deleted = cache.delete_cache_settings(service_id=sid, version_id=1, cache_settings_name="plain")
    assert deleted.status == "ok"

    objects = response_object_api.ResponseObjectApi(client)
    request = CreateResponseObjectRequest(
        name="teapot", status="418", response="I'm a teapot", content="short and stout"
    )
    created = objects.create_response_object(
        service_id=sid, version_id=1, create_response_object_request=request
    )
    assert (created.status, created.response, created.content) == (
        "418",
        "I'm a teapot",
        "short and stout",
    )
    shown = objects.get_response_object(service_id=sid, version_id=1, response_object_name="teapot")
    assert shown.name == "teapot"

    settings = settings_api.SettingsApi(client)
    changed = settings.update_service_settings(
        service_id=sid, version_id=1, general_default_ttl=600, general_default_host="origin.test"
    )
    assert (changed.general_default_ttl, changed.general_default_host) == (600, "origin.test")
    assert settings.get_service_settings(service_id=sid, version_id=1).general_default_ttl == 600

    detail = services.get_service_detail(service_id=sid, version=1)
    assert [c.name for c in detail.version.conditions] == ["is-api"]
    assert [c.name for c in detail.version.cache_settings] == ["short"]
    assert [r.name for r in detail.version.response_objects] == ["teapot"]
    assert detail.version.settings.general_default_ttl == 600


def test_domain_and_backend_crud(client, services):
    sid = services.create_service(name="cdn").id
    domains = domain_api.DomainApi(client)
    domains.create_domain(service_id=sid, version_id=1, name="a.example.com", comment="first")
    renamed = domains.update_domain(
        service_id=sid, version_id=1, domain_name="a.example.com", name="b.example.com"
    )
    assert (renamed.name, renamed.comment) == ("b.example.com", "first")
    check = domains.check_domain(service_id=sid, version_id=1, domain_name="b.example.com")
    checked, _cname, _ok = check.value
    assert checked["name"] == "b.example.com"
    gone = domains.delete_domain(service_id=sid, version_id=1, domain_name="b.example.com")
    assert gone.status == "ok"
    assert domains.list_domains(service_id=sid, version_id=1).value == []

    backends = backend_api.BackendApi(client)
    backends.create_backend(service_id=sid, version_id=1, name="o", address="origin.example")
    shown = backends.get_backend(service_id=sid, version_id=1, backend_name="o")
    assert (shown.hostname, shown.ipv4, int(shown.port)) == ("origin.example", None, 80)
    backends.update_backend(service_id=sid, version_id=1, backend_name="o", weight=50)
    assert int(backends.list_backends(service_id=sid, version_id=1)[0].weight) == 50


def test_each_token_is_its_own_customer(base_url, client, services):
    sid = services.create_service(name="mine").id
    other = fastly.Configuration(host=base_url + "/fastly")
    other.api_token = "someone-else-" + sid
    with fastly.ApiClient(other) as other_client:
        theirs = service_api.ServiceApi(other_client)
        with pytest.raises(NotFoundException):
            theirs.get_service(service_id=sid)
        assert all(s.id != sid for s in theirs.list_services())
        mine = customer_api.CustomerApi(client).get_logged_in_customer().id
        assert customer_api.CustomerApi(other_client).get_logged_in_customer().id != mine


def test_timestamps_follow_the_virtual_clock(http, base_url, services):
    now = tick(http, base_url, 0)
    service = services.create_service(name="timed")
    assert service.created_at == now.replace(microsecond=0)
    later = tick(http, base_url, 3600)
    renamed = services.update_service(service_id=service.id, name="timed-2")
    assert renamed.updated_at == later.replace(microsecond=0)
    assert renamed.created_at == service.created_at


# Raw bodies, Mimic's clients, errors ---------------------------------------------------------


def test_form_and_query_parameters_as_mimics_clients_sent_them(http, fastly_url, token):
    headers = {"Fastly-Key": token}
    customer = http.get(fastly_url + "/current_customer", headers=headers).json()
    created = http.post(
        fastly_url + "/service",
        params={"name": "poppy", "customer_id": customer["id"]},
        headers=headers,
    )
    assert created.status_code == 200, created.text
    sid = created.json()["id"]
    domain = http.post(
        f"{fastly_url}/service/{sid}/version/1/domain",
        data={"name": "www.poppy.test"},
        headers=headers,
    )
    assert domain.json()["version"] == 1
    settings = http.put(
        f"{fastly_url}/service/{sid}/version/1/settings",
        data={"general.default_ttl": "120", "general.default_host": "poppy.test"},
        headers=headers,
    )
    assert settings.json()["general.default_ttl"] == 120
    as_json = http.post(
        f"{fastly_url}/service/{sid}/version/1/backend",
        json={"name": "o", "address": "198.51.100.1", "port": 8080, "use_ssl": False},
        headers=headers,
    )
    assert as_json.json()["port"] == 8080
    searched = http.get(fastly_url + "/service/search", params={"name": "poppy"}, headers=headers)
    assert searched.json()["id"] == sid
    assert "service_details" not in searched.json()  # Fastly's shape, not Mimic's


def test_requests_without_a_token_share_one_customer(http, fastly_url, name):
    first = http.get(fastly_url + "/current_customer").json()
    assert http.get(fastly_url + "/current_customer").json()["id"] == first["id"]
    created = http.post(fastly_url + "/service", data={"name": "anon-" + name}).json()
    found = http.get(fastly_url + "/service/search", params={"name": "anon-" + name})
    assert found.json()["id"] == created["id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/service/nope/details"),
        ("GET", "/service/nope"),
        ("PUT", "/service/nope"),
        ("DELETE", "/service/nope"),
        ("POST", "/service/nope/version"),
        ("GET", "/service/nope/version"),
        ("PUT", "/service/nope/version/1/activate"),
        ("PUT", "/service/nope/version/1/deactivate"),
        ("POST", "/service/nope/version/1/domain"),
        ("GET", "/service/nope/version/1/domain/check_all"),
        ("POST", "/service/nope/version/1/backend"),
        ("POST", "/service/nope/version/1/condition"),
        ("POST", "/service/nope/version/1/cache_settings"),
        ("POST", "/service/nope/version/1/response_object"),
        ("PUT", "/service/nope/version/1/settings"),
        ("GET", "/service/search?name=nope"),
    ],
)
def test_unknown_services_are_404_json_never_500(http, fastly_url, token, method, path):
    response = http.request(method, fastly_url + path, headers={"Fastly-Key": token})
    assert response.status_code == 404, response.text
    assert response.json()["msg"] == "Record not found"
    assert response.json()["detail"]


def test_unknown_versions_and_items_are_404(http, fastly_url, token):
    headers = {"Fastly-Key": token}
    sid = http.post(fastly_url + "/service", data={"name": "s"}, headers=headers).json()["id"]
    for path in (
        f"/service/{sid}/version/7",
        f"/service/{sid}/version/x/domain",
        f"/service/{sid}/version/1/domain/missing.example.com",
        f"/service/{sid}/version/1/backend/missing",
        f"/service/{sid}/details?version=9",
    ):
        response = http.get(fastly_url + path, headers=headers)
        assert response.status_code == 404, path
        assert response.json()["msg"] == "Record not found"


@pytest.mark.parametrize(
    ("method", "path", "data", "status"),
    [
        ("POST", "/service", {}, 400),
        ("POST", "/service", {"name": ""}, 400),
        ("POST", "/service", {"name": "x", "type": "flash"}, 400),
        ("GET", "/service/search", None, 400),
        ("POST", "{v}/domain", {}, 400),
        ("POST", "{v}/backend", {"name": "o"}, 400),
        ("POST", "{v}/backend", {"name": "o", "address": "a", "port": "http"}, 400),
        ("POST", "{v}/backend", {"name": "o", "address": "a", "use_ssl": "perhaps"}, 400),
        ("POST", "{v}/condition", {"name": "c"}, 400),
        ("POST", "{v}/cache_settings", {"name": "c", "ttl": "long"}, 400),
        ("POST", "{v}/response_object", {"name": "r", "status": "fine"}, 400),
        ("PUT", "{v}/settings", {"general.stale_if_error": "sometimes"}, 400),
        ("POST", "{v}/domain", {"name": "dup.example.com"}, 409),
    ],
)
def test_bad_input_is_4xx_never_500(http, fastly_url, token, method, path, data, status):
    headers = {"Fastly-Key": token}
    sid = http.post(fastly_url + "/service", data={"name": "s"}, headers=headers).json()["id"]
    v = f"/service/{sid}/version/1"
    http.post(fastly_url + v + "/domain", data={"name": "dup.example.com"}, headers=headers)
    response = http.request(method, fastly_url + path.format(v=v), data=data, headers=headers)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"msg", "detail"}


def test_bad_bodies_are_400(http, fastly_url, token):
    headers = {"Fastly-Key": token, "Content-Type": "application/json"}
    for body in ("{", "[1]"):
        response = http.post(fastly_url + "/service", data=body, headers=headers)
        assert response.status_code == 400
        assert response.json()["msg"] == "Bad request"


# Mimic's customer_id, and paths no route answers (issue 16) ------------------------------------


def test_any_customer_id_is_accepted_and_shown_on_the_service(base_url, client, services):
    # Mimic's clients (OpenStack Poppy) pass a customer_id of their own; Mimic took any.
    service = services.create_service(name="poppy-cdn", customer_id="poppy-customer-1")
    assert service.customer_id == "poppy-customer-1"
    assert services.get_service(service_id=service.id).customer_id == "poppy-customer-1"
    listed = next(s for s in services.list_services() if s.id == service.id)
    assert listed.customer_id == "poppy-customer-1"
    detail = services.get_service_detail(service_id=service.id)
    assert detail.customer_id == "poppy-customer-1"
    # Still the token's service: another token neither sees it nor becomes that customer.
    other = fastly.Configuration(host=base_url + "/fastly")
    other.api_token = "someone-else-" + service.id
    with fastly.ApiClient(other) as other_client, pytest.raises(NotFoundException):
        service_api.ServiceApi(other_client).get_service(service_id=service.id)
    # Without one (or a blank one), the token's customer, as before.
    own = customer_api.CustomerApi(client).get_logged_in_customer().id
    assert services.create_service(name="plain").customer_id == own


def test_customer_id_in_mimics_form_and_query_styles(http, fastly_url, token):
    headers = {"Fastly-Key": token}
    own = http.get(fastly_url + "/current_customer", headers=headers).json()["id"]
    as_query = http.post(
        fastly_url + "/service", params={"name": "q", "customer_id": "12345"}, headers=headers
    )
    assert (as_query.status_code, as_query.json()["customer_id"]) == (200, "12345")
    as_form = http.post(
        fastly_url + "/service", data={"name": "f", "customer_id": ""}, headers=headers
    )
    assert (as_form.status_code, as_form.json()["customer_id"]) == (200, own)
    as_json = http.post(
        fastly_url + "/service", json={"name": "j", "customer_id": 42}, headers=headers
    )
    assert (as_json.status_code, as_json.json()["customer_id"]) == (200, "42")
    refused = http.post(
        fastly_url + "/service", json={"name": "j", "customer_id": ["a"]}, headers=headers
    )
    assert refused.status_code == 400
    assert refused.json() == {"msg": "Bad request", "detail": "'customer_id' must be a string"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/service/search/more/segments"),
        ("POST", "/services"),
        ("DELETE", "/service/x/version/1/gzip/g"),
        ("GET", "/v1/stats"),
    ],
)
def test_unknown_paths_are_fastly_json_404s(http, fastly_url, method, path):
    response = http.request(method, fastly_url + path, allow_redirects=False)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "msg": "Record not found",
        "detail": f"No route for {method} '/fastly{path}'",
    }


def test_unknown_paths_raise_the_sdks_not_found(base_url, client):
    # The SDK reads the JSON error as it reads Fastly's: a NotFoundException with the body.
    with pytest.raises(NotFoundException) as caught:
        client.call_api("/no/such/thing", "GET", response_type=None, _check_type=False)
    assert caught.value.body and '"msg":"Record not found"' in caught.value.body


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/service", "GET, HEAD, POST"),
        ("POST", "/service/some-id/details", "GET, HEAD"),
        ("PATCH", "/service/some-id/version/1/domain/a.example.com", "DELETE, GET, HEAD, PUT"),
        ("POST", "", "GET, HEAD"),
    ],
)
def test_wrong_methods_are_fastly_json_405s(http, fastly_url, method, path, allowed):
    response = http.request(method, fastly_url + path, allow_redirects=False)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed
    assert response.json()["msg"] == "Method not allowed"
    assert f"allowed: {allowed}" in response.json()["detail"]


def test_a_trailing_slash_still_redirects(http, fastly_url, token):
    headers = {"Fastly-Key": token}
    response = http.get(fastly_url + "/current_customer/", headers=headers, allow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"].endswith("/fastly/current_customer")
    followed = http.get(fastly_url + "/current_customer/", headers=headers)
    assert followed.status_code == 200 and followed.json()["name"] == "Poppy - Test"
