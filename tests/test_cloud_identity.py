"""Identity v2.0 over a real socket, with keystoneauth1 (the real client) and requests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from keystoneauth1 import discover, session
from keystoneauth1.identity import generic

from tests.server import RunningServer

V2 = "/identity/v2.0"
BEHAVIORS = "/mimic/v1.1/IdentityControlAPI/behaviors/auth"


@pytest.fixture(scope="module")
def isolated() -> Iterator[RunningServer]:
    """A server of our own: other regions, and a clock no other test ticks."""
    running = RunningServer(store="memory://", extra_args=["--regions", "SYD,HKG"]).start()
    yield running
    running.stop()


def login(http, base_url, username, tenant=None, kind="password", expect=200):
    credentials = {
        "password": {"passwordCredentials": {"username": username, "password": "secret"}},
        "apikey": {"RAX-KSKEY:apiKeyCredentials": {"username": username, "apiKey": "k"}},
    }[kind]
    body = {"auth": {**credentials, **({"tenantName": tenant} if tenant else {})}}
    response = http.post(base_url + V2 + "/tokens", json=body)
    assert response.status_code == expect, response.text
    return response.json()


def now(http, base_url) -> float:
    """The server's clock (a tick of 0 seconds reads it)."""
    stamp = http.post(base_url + "/mimic/v1.1/tick", json={"amount": 0}).json()["now"]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def parse_expires(value: str) -> float:
    assert value.endswith("Z") and len(value) == len("1970-01-02T00:00:00.000Z"), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def keystone(base_url, username, tenant=None, path=V2) -> tuple[generic.Password, session.Session]:
    auth = generic.Password(
        auth_url=base_url + path, username=username, password="secret", tenant_name=tenant
    )
    return auth, session.Session(auth=auth)


def add_external_api(http, base_url, name, tenant=None, enabled=False):
    """An OS-KSADM service with one endpoint template in region EXT; returns the template."""
    headers = {"X-Auth-Token": "any"}
    service_type = f"rax:{name}"
    created = http.post(
        base_url + V2 + "/services", json={"name": name, "type": service_type}, headers=headers
    )
    assert created.status_code == 201, created.text
    template = {
        "id": f"tmpl-{name}",
        "region": "EXT",
        "type": service_type,
        "name": name,
        "enabled": enabled,
        "publicURL": f"https://{name}.example.com/v1/%tenant_id%",
        "internalURL": f"https://snet-{name}.example.com/v1/%tenant_id%",
    }
    added = http.post(
        base_url + V2 + "/OS-KSCATALOG/endpointTemplates", json=template, headers=headers
    )
    assert added.status_code == 201, added.text
    if tenant is not None:
        enabled_for = http.post(
            f"{base_url}{V2}/tenants/{tenant}/OS-KSCATALOG/endpoints",
            json={"OS-KSCATALOG:endpointTemplate": {"id": template["id"]}},
            headers=headers,
        )
        assert enabled_for.status_code == 201, enabled_for.text
    return template


# Discovery and keystoneauth -----------------------------------------------------------


def test_version_document_and_discovery_urls(http, base_url):
    for path in (V2, V2 + "/"):
        response = http.get(base_url + path)
        assert response.status_code == 200
        version = response.json()["version"]
        assert version["id"] == "v2.0" and version["status"] == "stable"
        assert {"href": base_url + V2, "rel": "self"} in version["links"]
    for path in ("/identity", "/identity/"):
        listing = http.get(base_url + path)
        assert listing.status_code == 300
        # v3 is listed beside v2.0 (tests/test_cloud_identity_v3.py covers it).
        assert [v["id"] for v in listing.json()["versions"]["values"]] == ["v3.14", "v2.0"]


def test_keystoneauth_discovery_reads_both_documents(base_url):
    sess = session.Session()
    data = discover.Discover(sess, base_url + V2).version_data()
    assert [d["version"] for d in data] == [(2, 0)]
    assert data[0]["url"] == base_url + V2
    # The unversioned root lists v3 too; a v2.0 client still finds v2.0 there.
    data = discover.Discover(sess, base_url + "/identity").version_data()
    assert [d["version"] for d in data] == [(2, 0), (3, 14)]
    assert data[0]["url"] == base_url + V2


def test_keystoneauth_v2_password_login_through_discovery(base_url, name):
    tenant = f"ks{name}"
    auth, sess = keystone(base_url, name, tenant)
    token = sess.get_token()
    assert token.startswith("token_")
    uuid.UUID(token.removeprefix("token_"), version=4)
    access = auth.get_access(sess)
    assert access.version == "v2.0"
    assert access.username == name and access.tenant_id == tenant
    assert access.role_names == ["identity:user-admin"]
    # Endpoint URLs of a hosted service, as a client looks them up.
    entry = next(e for e in access.service_catalog.catalog if e["endpoints"])
    endpoint = entry["endpoints"][-1]
    lookup = {"service_type": entry["type"], "service_name": entry["name"]}
    url = access.service_catalog.url_for(region_name=endpoint["region"], **lookup)
    assert url == endpoint["publicURL"]
    assert url.startswith(base_url + "/mimicking/") and url.endswith("/" + tenant)
    assert sess.get_endpoint(region_name=endpoint["region"], **lookup) == url


def test_keystoneauth_from_the_unversioned_url(base_url, name):
    auth, sess = keystone(base_url, name, path="/identity")
    assert sess.get_token().startswith("token_")
    assert auth.get_access(sess).username == name


def test_keystoneauth_finds_an_external_endpoint_in_the_catalog(http, base_url, name):
    tenant = f"ext{name}"
    login(http, base_url, name, tenant)
    template = add_external_api(http, base_url, name, tenant=tenant)
    auth, sess = keystone(base_url, name, tenant)
    catalog = auth.get_access(sess).service_catalog
    expected = f"https://{name}.example.com/v1/{tenant}"
    assert catalog.url_for(service_type=template["type"], region_name="EXT") == expected
    assert sess.get_endpoint(service_type=template["type"], region_name="EXT") == expected
    internal = sess.get_endpoint(service_type=template["type"], interface="internal")
    assert internal == f"https://snet-{name}.example.com/v1/{tenant}"
    # Another tenant does not get an endpoint enabled for this one only.
    other = login(http, base_url, "other" + name)
    assert template["name"] not in [e["name"] for e in other["access"]["serviceCatalog"]]


# POST /tokens ---------------------------------------------------------------------


def test_access_document_shape(http, base_url, name):
    before = now(http, base_url)
    access = login(http, base_url, name)["access"]
    assert set(access) == {"token", "user", "serviceCatalog"}
    token, user = access["token"], access["user"]
    assert set(token) == {"id", "expires", "tenant", "RAX-AUTH:authenticatedBy"}
    assert token["tenant"]["id"] == token["tenant"]["name"] and token["tenant"]["id"].isdigit()
    assert token["RAX-AUTH:authenticatedBy"] == ["PASSWORD"]
    # The injected clock decides expiry: one day after the (virtual) now.
    assert parse_expires(token["expires"]) == pytest.approx(before + 86400, abs=1)
    assert user == {
        "RAX-AUTH:defaultRegion": "DFW",
        "id": user["id"],
        "name": name,
        "roles": [{"id": "3", "description": "User Admin Role.", "name": "identity:user-admin"}],
    }
    assert user["id"].isdigit()
    for entry in access["serviceCatalog"]:
        assert set(entry) == {"name", "type", "endpoints"}
        for endpoint in entry["endpoints"]:
            assert endpoint["tenantId"] == token["tenant"]["id"]
            assert endpoint["publicURL"].startswith(base_url + "/mimicking/")


def test_the_catalog_lists_what_the_readme_says_and_not_fastly(http, base_url, name):
    # README: "the catalog lists compute, images and load balancers (Fastly, as in Mimic, is
    # not in it)". Mimic served /fastly as a fixed root, outside its catalog; so does this.
    catalog = login(http, base_url, name)["access"]["serviceCatalog"]
    assert not [e for e in catalog if "fastly" in (e["name"] + e["type"]).lower()]
    # Other tests may add external APIs (OS-KSCATALOG): only the hosted entries are pinned.
    hosted = [e for e in catalog if e["endpoints"][0]["publicURL"].startswith(base_url + "/")]
    assert [(e["name"], e["type"]) for e in hosted] == [
        ("cloudServersOpenStack", "compute"),
        ("cloudServersBehavior", "compute"),
        ("cloudImages", "image"),
        ("cloudLoadBalancers", "rax:load-balancer"),
        ("cloudLoadBalancerControl", "rax:load-balancer"),
    ]
    assert http.get(base_url + "/fastly/").json() == {"status": "ok"}


def test_catalog_urls_follow_the_host_header(http, base_url, name):
    response = http.post(
        base_url + V2 + "/tokens",
        json={"auth": {"passwordCredentials": {"username": name, "password": "p"}}},
        headers={"Host": "mimic.example:8900"},
    )
    assert response.status_code == 200
    version = http.get(base_url + V2, headers={"Host": "mimic.example:8900"}).json()["version"]
    assert version["links"][0]["href"] == "http://mimic.example:8900/identity/v2.0"
    for entry in response.json()["access"]["serviceCatalog"]:
        for endpoint in entry["endpoints"]:
            assert endpoint["publicURL"].startswith("http://mimic.example:8900/mimicking/")


def test_api_key_and_password_give_the_same_user_tenant_and_token(http, base_url, name):
    first = login(http, base_url, name)["access"]
    second = login(http, base_url, name, kind="apikey")["access"]
    assert second["user"]["id"] == first["user"]["id"]
    assert second["token"]["tenant"] == first["token"]["tenant"]
    assert second["token"]["id"] == first["token"]["id"]


def test_a_username_keeps_its_tenant_and_another_tenant_is_a_401(http, base_url, name):
    tenant = f"t{name}"
    access = login(http, base_url, name, tenant)["access"]
    assert access["token"]["tenant"]["id"] == tenant
    assert login(http, base_url, name)["access"]["token"]["tenant"]["id"] == tenant
    by_id = http.post(
        base_url + V2 + "/tokens",
        json={
            "auth": {"passwordCredentials": {"username": name, "password": "x"}, "tenantId": tenant}
        },
    )
    assert by_id.status_code == 200
    refused = login(http, base_url, name, "someone-else", expect=401)
    user_id = access["user"]["id"]
    assert refused == {
        "unauthorized": {
            "code": 401,
            "message": f"Tenant with Name/Id: 'someone-else' is not valid for User '{name}'"
            f" (id: '{user_id}')",
        }
    }


def test_a_second_user_of_a_tenant_is_its_own_user(http, base_url, name):
    tenant = f"shared{name}"
    first = login(http, base_url, "a" + name, tenant)["access"]
    second = login(http, base_url, "b" + name, tenant)["access"]
    assert second["token"]["tenant"]["id"] == tenant
    assert second["user"]["name"] == "b" + name  # Mimic answered the first user here
    assert second["user"]["id"] != first["user"]["id"]
    assert second["token"]["id"] != first["token"]["id"]


def test_user_ids_do_not_change_between_processes(http, base_url, isolated, name):
    here = login(http, base_url, name)["access"]["user"]["id"]
    there = login(http, isolated.url, name)["access"]["user"]["id"]
    assert here == there


def test_token_credentials(http, base_url, name):
    tenant = f"tok{name}"
    token = login(http, base_url, name, tenant)["access"]["token"]["id"]

    def by_token(token_id, **tenant_key):
        body = {"auth": {"token": {"id": token_id}, **tenant_key}}
        return http.post(base_url + V2 + "/tokens", json=body)

    again = by_token(token, tenantId=tenant)
    assert again.status_code == 200
    assert again.json()["access"]["token"]["id"] == token
    assert again.json()["access"]["user"]["name"] == name
    assert by_token(token, tenantName=tenant).status_code == 200
    wrong = by_token(token, tenantId="elsewhere")
    assert wrong.status_code == 401
    assert wrong.json() == {
        "unauthorized": {
            "code": 401,
            "message": "Token doesn't belong to Tenant with Id/Name: 'elsewhere'",
        }
    }
    # A token made elsewhere is adopted for the tenant it names.
    foreign = by_token(f"foreign-{name}", tenantId=tenant)
    assert foreign.status_code == 200
    assert foreign.json()["access"]["token"]["id"] == f"foreign-{name}"
    assert foreign.json()["access"]["token"]["tenant"]["id"] == tenant
    assert foreign.json()["access"]["token"]["RAX-AUTH:authenticatedBy"] == ["PASSWORD"]
    assert login(http, base_url, "k" + name, kind="apikey")["access"]["token"][
        "RAX-AUTH:authenticatedBy"
    ] == ["APIKEY"]


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[]",
        "{}",
        '{"auth": "x"}',
        '{"auth": {}}',
        '{"auth": {"passwordCredentials": "x"}}',
        '{"auth": {"passwordCredentials": {"password": "p"}}}',
        '{"auth": {"passwordCredentials": {"username": "u"}}}',
        '{"auth": {"passwordCredentials": {"username": 5, "password": "p"}}}',
        '{"auth": {"passwordCredentials": {"username": "", "password": "p"}}}',
        '{"auth": {"passwordCredentials": {"username": "u", "password": null}}}',
        '{"auth": {"passwordCredentials": {"username": "u", "password": "p"}, "tenantId": 5}}',
        '{"auth": {"passwordCredentials": {"username": "u", "password": "p"}, "tenantName": ""}}',
        '{"auth": {"RAX-KSKEY:apiKeyCredentials": {"username": "u"}}}',
        '{"auth": {"RAX-KSKEY:apiKeyCredentials": []}}',
        '{"auth": {"token": {"id": "t"}}}',
        '{"auth": {"token": {}, "tenantId": "1"}}',
        '{"auth": {"token": "t", "tenantId": "1"}}',
    ],
)
def test_bad_token_requests_are_400_in_identity_envelope(http, base_url, body):
    response = http.post(base_url + V2 + "/tokens", data=body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"badRequest"}
    assert response.json()["badRequest"]["code"] == 400
    assert response.json()["badRequest"]["message"]


# Tokens: expiry on the injected clock ----------------------------------------------


def test_expiry_follows_the_clock_and_a_login_after_expiry_gets_a_new_token(http, isolated, name):
    url = isolated.url
    start = now(http, url)
    first = login(http, url, name)["access"]["token"]
    assert parse_expires(first["expires"]) == start + 86400
    http.post(url + "/mimic/v1.1/tick", json={"amount": 86399})
    assert login(http, url, name)["access"]["token"]["id"] == first["id"]
    http.post(url + "/mimic/v1.1/tick", json={"amount": 1})
    renewed = login(http, url, name)["access"]["token"]
    assert renewed["id"] != first["id"]
    assert parse_expires(renewed["expires"]) == start + 2 * 86400
    # Mimic never refused an expired token, and neither do we.
    assert http.get(f"{url}{V2}/tokens/{first['id']}").status_code == 200


def test_keystoneauth_caches_the_token_once_the_clock_is_ticked_to_the_present(http, isolated):
    # At the virtual epoch every token looks expired to keystoneauth: it logs in again
    # for each call (still the same token). Ticked to the present, it caches.
    username = "caching" + uuid.uuid4().hex[:8]
    auth, sess = keystone(isolated.url, username)
    first = auth.get_access(sess)
    assert first.will_expire_soon()
    assert auth.get_access(sess) is not first
    assert auth.get_access(sess).auth_token == first.auth_token
    gap = time.time() - now(http, isolated.url)
    http.post(isolated.url + "/mimic/v1.1/tick", json={"amount": gap})
    auth, sess = keystone(isolated.url, "late" + username)
    cached = auth.get_access(sess)
    assert not cached.will_expire_soon()
    assert auth.get_access(sess) is cached


# Regions ---------------------------------------------------------------------------


def test_regions_flag_sets_the_catalog_regions_and_default_region(http, isolated, name):
    access = login(http, isolated.url, name)["access"]
    assert access["user"]["RAX-AUTH:defaultRegion"] == "SYD"
    regions = [e["region"] for entry in access["serviceCatalog"] for e in entry["endpoints"]]
    assert "SYD" in regions and "HKG" in regions
    assert not {"DFW", "IAD"} & set(regions)
    assert any(
        [e["region"] for e in entry["endpoints"]] == ["SYD", "HKG"]
        for entry in access["serviceCatalog"]
    )


# GET /tokens/{id} ----------------------------------------------------------------


def test_validate_token(http, base_url, name):
    access = login(http, base_url, name, f"v{name}")["access"]
    token = access["token"]["id"]
    response = http.get(f"{base_url}{V2}/tokens/{token}")
    assert response.status_code == 200
    assert response.json() == {"access": {"token": access["token"], "user": access["user"]}}
    belongs = http.get(f"{base_url}{V2}/tokens/{token}", params={"belongsTo": f"v{name}"})
    assert belongs.status_code == 200
    elsewhere = http.get(f"{base_url}{V2}/tokens/{token}", params={"belongsTo": "elsewhere"})
    assert elsewhere.status_code == 404
    assert elsewhere.json()["itemNotFound"]["code"] == 404


def test_validating_an_unknown_token_adopts_it(http, base_url, name):
    response = http.get(f"{base_url}{V2}/tokens/made-elsewhere-{name}")
    assert response.status_code == 200
    access = response.json()["access"]
    assert access["token"]["id"] == f"made-elsewhere-{name}"
    assert access["user"]["name"].startswith("username_")
    tenant = f"adopt{name}"
    owner = login(http, base_url, name, tenant)["access"]["user"]
    scoped = http.get(f"{base_url}{V2}/tokens/second-{name}", params={"belongsTo": tenant})
    assert scoped.json()["access"]["token"]["tenant"]["id"] == tenant
    assert scoped.json()["access"]["user"]["id"] == owner["id"]


def test_fail_to_auth_preset_token(http, base_url):
    response = http.get(f"{base_url}{V2}/tokens/never-cache-this-and-fail-to-auth")
    assert response.status_code == 401
    # Mimic's quirk, kept: a 401 inside an itemNotFound envelope.
    assert response.json() == {"itemNotFound": {"code": 401, "message": "Invalid auth token"}}
    # As in Mimic, only validation refuses it.
    endpoints = http.get(f"{base_url}{V2}/tokens/never-cache-this-and-fail-to-auth/endpoints")
    assert endpoints.status_code == 200


@pytest.mark.parametrize(
    ("tenant", "roles"),
    [("09876", ["observer"]), ("09090", ["creator"]), ("9999", ["admin", "observer"])],
)
def test_role_tenant_presets(http, base_url, tenant, roles):
    validated = http.get(f"{base_url}{V2}/tokens/role-{tenant}", params={"belongsTo": tenant})
    assert [r["name"] for r in validated.json()["access"]["user"]["roles"]] == roles
    body = {"auth": {"token": {"id": f"role-{tenant}"}, "tenantId": tenant}}
    access = http.post(base_url + V2 + "/tokens", json=body).json()["access"]
    assert [r["name"] for r in access["user"]["roles"]] == roles


@pytest.mark.parametrize(
    ("token", "roles"),
    [
        ("this_is_a_racker_token", ["Racker"]),
        ("impersonate_watson", ["monitoring:service-admin", "object-store:admin"]),
    ],
)
def test_impersonator_preset_tokens(http, base_url, token, roles):
    access = http.get(f"{base_url}{V2}/tokens/{token}").json()["access"]
    impersonator = access["RAX-AUTH:impersonator"]
    assert [r["name"] for r in impersonator["roles"]] == roles
    assert impersonator["id"] == access["user"]["id"]


def test_fixed_identity_preset_tokens(http, base_url):
    access = http.get(f"{base_url}{V2}/tokens/HybridOneTwoRacker").json()["access"]
    assert access["token"]["tenant"] == {"id": "hybrid:123456", "name": "hybrid:123456"}
    assert access["user"]["name"] == "HybridOneTwo"
    assert access["user"]["RAX-AUTH:contactId"] == "12"
    assert access["RAX-AUTH:impersonator"]["roles"] == [{"id": "1", "name": "Racker"}]
    one_two = http.get(f"{base_url}{V2}/tokens/OneTwo").json()["access"]
    assert one_two["user"]["id"] == "12" and "RAX-AUTH:impersonator" not in one_two


def test_presets_are_listed_under_identity(http, base_url):
    identity = http.get(base_url + "/mimic/v1.0/presets").json()["identity"]
    assert identity["token_fail_to_auth"] == ["never-cache-this-and-fail-to-auth"]
    assert identity["observer_role"] == ["09876"]
    assert identity["admin_role"] == ["9999"]
    assert identity["racker_token"] == ["this_is_a_racker_token"]
    assert "impersonate_watson" in identity["maas_admin_roles"]
    assert identity["dedicated_racker"] == ["HybridOneTwoRacker"]


# Endpoints, impersonation, tenants, users --------------------------------------------


def test_token_endpoints_flatten_the_catalog(http, base_url, name):
    tenant = f"ep{name}"
    token = login(http, base_url, name, tenant)["access"]["token"]["id"]
    add_external_api(http, base_url, name, tenant=tenant)
    response = http.get(f"{base_url}{V2}/tokens/{token}/endpoints")
    assert response.status_code == 200
    endpoints = response.json()["endpoints"]
    mine = [e for e in endpoints if e["name"] == name]
    assert len(mine) == 1
    assert mine[0]["publicURL"] == f"https://{name}.example.com/v1/{tenant}"
    assert mine[0]["type"] == f"rax:{name}" and mine[0]["region"] == "EXT"
    for endpoint in endpoints:
        assert set(endpoint) == {
            "region", "tenantId", "publicURL", "internalURL", "name", "type", "id"
        }  # fmt: skip
    again = http.get(f"{base_url}{V2}/tokens/{token}/endpoints").json()["endpoints"]
    assert [e["id"] for e in again] == [e["id"] for e in endpoints]


def test_impersonation(http, base_url, name):
    admin = login(http, base_url, "admin" + name)["access"]
    target = login(http, base_url, name)["access"]
    start = now(http, base_url)
    response = http.post(
        base_url + V2 + "/RAX-AUTH/impersonation-tokens",
        json={"RAX-AUTH:impersonation": {"user": {"username": name}, "expire-in-seconds": 600}},
        headers={"X-Auth-Token": admin["token"]["id"]},
    )
    assert response.status_code == 200
    token = response.json()["access"]["token"]
    assert set(response.json()["access"]) == {"token"}
    assert token["id"].startswith("impersonated_token_")
    assert parse_expires(token["expires"]) == pytest.approx(start + 600, abs=1)
    validated = http.get(f"{base_url}{V2}/tokens/{token['id']}").json()["access"]
    assert validated["token"]["id"] == token["id"]
    assert validated["user"]["id"] == target["user"]["id"]
    impersonator = validated["RAX-AUTH:impersonator"]
    assert (impersonator["id"], impersonator["name"]) == (admin["user"]["id"], "admin" + name)
    assert "identity:admin" in [r["name"] for r in impersonator["roles"]]
    # The impersonated user's own token is untouched.
    assert login(http, base_url, name)["access"]["token"] == target["token"]


@pytest.mark.parametrize(
    "body",
    [
        "{}",
        "x",
        '{"RAX-AUTH:impersonation": {}}',
        '{"RAX-AUTH:impersonation": {"user": {}}}',
        '{"RAX-AUTH:impersonation": {"user": {"username": 3}}}',
        '{"RAX-AUTH:impersonation": {"user": {"username": "u"}, "expire-in-seconds": "soon"}}',
        '{"RAX-AUTH:impersonation": {"user": {"username": "u"}, "expire-in-seconds": 0}}',
    ],
)
def test_bad_impersonation_requests_are_400(http, base_url, body):
    response = http.post(base_url + V2 + "/RAX-AUTH/impersonation-tokens", data=body)
    assert response.status_code == 400
    assert response.json()["badRequest"]["code"] == 400


def test_tenants_of_a_token(http, base_url, name):
    tenant = f"ten{name}"
    token = login(http, base_url, name, tenant)["access"]["token"]["id"]
    response = http.get(base_url + V2 + "/tenants", headers={"X-Auth-Token": token})
    assert response.json() == {"tenants": [{"id": tenant, "name": tenant, "enabled": True}]}
    for headers in ({"X-Auth-Token": "never-issued-" + name}, {}):
        refused = http.get(base_url + V2 + "/tenants", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["unauthorized"]["code"] == 401


def test_users_and_api_key_credentials(http, base_url, name):
    access = login(http, base_url, name, f"u{name}")["access"]
    response = http.get(base_url + V2 + "/users", params={"name": name})
    user = response.json()["user"]
    assert user["id"] == access["user"]["id"]
    assert user["RAX-AUTH:domainId"] == f"u{name}"
    assert user["username"] == name and user["enabled"] is True
    assert user["RAX-AUTH:defaultRegion"] == access["user"]["RAX-AUTH:defaultRegion"]
    assert {"email", "created", "updated"} <= set(user)
    credentials = http.get(f"{base_url}{V2}/users/{user['id']}/OS-KSADM/credentials").json()
    assert credentials["credentials_links"] == []
    key = credentials["credentials"][0]["RAX-KSKEY:apiKeyCredentials"]
    assert key["username"] == name and len(key["apiKey"]) == 32
    single = http.get(
        f"{base_url}{V2}/users/{user['id']}/OS-KSADM/credentials/RAX-KSKEY:apiKeyCredentials"
    )
    assert single.json() == {"RAX-KSKEY:apiKeyCredentials": key}
    for path in ("/OS-KSADM/credentials", "/OS-KSADM/credentials/RAX-KSKEY:apiKeyCredentials"):
        missing = http.get(f"{base_url}{V2}/users/no-such-user{path}")
        assert missing.status_code == 404
        assert missing.json() == {
            "itemNotFound": {"code": 404, "message": "User no-such-user not found"}
        }
    assert http.get(base_url + V2 + "/users").status_code == 400


def test_users_lookup_creates_an_unknown_user(http, base_url, name):
    user = http.get(base_url + V2 + "/users", params={"name": name}).json()["user"]
    access = login(http, base_url, name)["access"]
    assert access["user"]["id"] == user["id"]
    assert access["token"]["tenant"]["id"] == user["RAX-AUTH:domainId"]


def test_mosso_answers_the_tenants_username(http, base_url, name):
    tenant = f"m{name}"
    login(http, base_url, name, tenant)
    response = http.get(f"{base_url}/identity/v1.1/mosso/{tenant}", allow_redirects=False)
    assert response.status_code == 301
    assert response.json() == {"user": {"id": name}}
    fresh = http.get(f"{base_url}/identity/v1.1/mosso/new{name}", allow_redirects=False)
    assert fresh.json()["user"]["id"].startswith("username_")


# OS-KSADM services and OS-KSCATALOG templates (500s in Mimic on Python 3.11) ----------


def test_admin_routes_need_a_token_header(http, base_url):
    for method, path in [
        ("GET", "/services"),
        ("POST", "/services"),
        ("DELETE", "/services/x"),
        ("GET", "/OS-KSCATALOG/endpointTemplates"),
        ("POST", "/OS-KSCATALOG/endpointTemplates"),
        ("PUT", "/OS-KSCATALOG/endpointTemplates/x"),
        ("DELETE", "/OS-KSCATALOG/endpointTemplates/x"),
        ("GET", "/tenants/1/OS-KSCATALOG/endpoints"),
        ("POST", "/tenants/1/OS-KSCATALOG/endpoints"),
        ("DELETE", "/tenants/1/OS-KSCATALOG/endpoints/x"),
    ]:
        response = http.request(method, base_url + V2 + path, json={})
        assert response.status_code == 401, (method, path)
        assert response.json() == {
            "unauthorized": {"code": 401, "message": "Authentication required"}
        }


def test_services_crud(http, base_url, name):
    headers = {"X-Auth-Token": "t"}
    services = base_url + V2 + "/services"
    body = {"name": name, "type": "rax:x", "id": f"id-{name}", "description": "d"}
    created = http.post(services, json=body, headers=headers)
    assert created.status_code == 201
    assert created.json() == {"OS-KSADM:service": body}
    listed = http.get(services, headers=headers).json()["OS-KSADM:services"]
    assert body in listed
    same_id = http.post(services, json={**body, "name": "x" + name}, headers=headers)
    assert same_id.status_code == 409 and same_id.json()["conflict"]["code"] == 409
    same_name = http.post(services, json={**body, "id": "other" + name}, headers=headers)
    assert same_name.status_code == 409
    generated = http.post(services, json={"name": "g" + name, "type": "t"}, headers=headers)
    assert uuid.UUID(generated.json()["OS-KSADM:service"]["id"])
    for bad in ({"name": name}, {"type": "t"}, {"name": 1, "type": "t"}):
        assert http.post(services, json=bad, headers=headers).status_code == 400
    assert http.delete(f"{services}/id-{name}", headers=headers).status_code == 204
    missing = http.delete(f"{services}/id-{name}", headers=headers)
    assert missing.status_code == 404 and missing.json()["itemNotFound"]["code"] == 404


def test_endpoint_templates_crud_and_the_catalog(http, base_url, name):
    headers = {"X-Auth-Token": "t"}
    templates = base_url + V2 + "/OS-KSCATALOG/endpointTemplates"
    template = add_external_api(http, base_url, name)
    tenant = f"cat{name}"
    login(http, base_url, name, tenant)

    def catalog_names():
        entries = login(http, base_url, name)["access"]["serviceCatalog"]
        return [entry["name"] for entry in entries]

    assert name not in catalog_names()  # templates start disabled
    listed = http.get(templates, headers=headers).json()
    assert listed["OS-KSCATALOG:endpointsTemplates_links"] == []
    mine = next(t for t in listed["OS-KSCATALOG"] if t["id"] == template["id"])
    assert mine["RAX-AUTH:tenantAlias"] == "%tenant_id%" and mine["enabled"] is False

    tenant_endpoints = f"{base_url}{V2}/tenants/{tenant}/OS-KSCATALOG/endpoints"
    enabled = http.post(
        tenant_endpoints,
        json={"OS-KSCATALOG:endpointTemplate": {"id": template["id"]}},
        headers=headers,
    )
    assert enabled.status_code == 201
    assert name in catalog_names()
    listing = http.get(tenant_endpoints, headers=headers).json()
    assert listing["endpoints"] == [
        {
            "tenantId": tenant,
            "id": template["id"],
            "region": "EXT",
            "type": template["type"],
            "publicURL": f"https://{name}.example.com/v1/{tenant}",
            "internalURL": f"https://snet-{name}.example.com/v1/{tenant}",
            "adminURL": "",
        }
    ]
    assert http.delete(f"{tenant_endpoints}/{template['id']}", headers=headers).status_code == 204
    assert name not in catalog_names()
    assert http.delete(f"{tenant_endpoints}/{template['id']}", headers=headers).status_code == 404

    # Enabled globally through an update: every tenant's catalog lists it.
    update = {**template, "enabled": True, "region": "EXT2"}
    updated = http.put(f"{templates}/{template['id']}", json=update, headers=headers)
    assert updated.status_code == 201
    assert name in catalog_names()
    entries = login(http, base_url, "other" + name)["access"]["serviceCatalog"]
    ext = next(entry for entry in entries if entry["name"] == name)
    assert [e["region"] for e in ext["endpoints"]] == ["EXT2"]

    mismatched = http.put(f"{templates}/other-id", json=update, headers=headers)
    assert mismatched.status_code == 409
    unknown = http.put(
        f"{templates}/nope{name}", json={**update, "id": f"nope{name}"}, headers=headers
    )
    assert unknown.status_code == 404
    duplicate = http.post(templates, json=template, headers=headers)
    assert duplicate.status_code == 409
    # The service still has a template: it cannot go.
    service_id = next(
        s["id"]
        for s in http.get(base_url + V2 + "/services", headers=headers).json()["OS-KSADM:services"]
        if s["name"] == name
    )
    assert http.delete(f"{base_url}{V2}/services/{service_id}", headers=headers).status_code == 409
    assert http.delete(f"{templates}/{template['id']}", headers=headers).status_code == 204
    assert name not in catalog_names()
    assert http.delete(f"{templates}/{template['id']}", headers=headers).status_code == 404
    assert http.delete(f"{base_url}{V2}/services/{service_id}", headers=headers).status_code == 204


def test_endpoint_template_errors(http, base_url, name):
    headers = {"X-Auth-Token": "t"}
    templates = base_url + V2 + "/OS-KSCATALOG/endpointTemplates"
    base = {"id": f"e-{name}", "region": "R", "type": "rax:e", "name": f"e{name}"}
    for missing in ("id", "region", "type", "name"):
        body = {k: v for k, v in base.items() if k != missing}
        response = http.post(templates, json=body, headers=headers)
        assert response.status_code == 400 and missing in response.json()["badRequest"]["message"]
    for bad in ({"enabled": "yes"}, {"publicURL": 5}, {"id": True}, {"region": None}):
        assert http.post(templates, json={**base, **bad}, headers=headers).status_code == 400
    no_service = http.post(templates, json=base, headers=headers)
    assert no_service.status_code == 404
    http.post(
        base_url + V2 + "/services", json={"name": f"e{name}", "type": "rax:other"}, headers=headers
    )
    wrong_type = http.post(templates, json=base, headers=headers)
    assert wrong_type.status_code == 409
    by_header = http.get(templates, headers={**headers, "serviceid": "no-such-service"})
    assert by_header.status_code == 404
    tenant_endpoints = f"{base_url}{V2}/tenants/1/OS-KSCATALOG/endpoints"
    for body in ({}, {"OS-KSCATALOG:endpointTemplate": {}}, {"OS-KSCATALOG:endpointTemplate": 1}):
        assert http.post(tenant_endpoints, json=body, headers=headers).status_code == 400
    unknown = {"OS-KSCATALOG:endpointTemplate": {"id": "nope" + name}}
    assert http.post(tenant_endpoints, json=unknown, headers=headers).status_code == 404


def test_openstack_wrapped_bodies_are_accepted(http, base_url, name):
    headers = {"X-Auth-Token": "t"}
    service = {"OS-KSADM:service": {"name": f"w{name}", "type": "rax:w", "id": f"w{name}"}}
    assert http.post(base_url + V2 + "/services", json=service, headers=headers).status_code == 201
    template = {"id": 4242, "region": "W", "type": "rax:w", "name": f"w{name}", "enabled": True}
    response = http.post(
        base_url + V2 + "/OS-KSCATALOG/endpointTemplates",
        json={"OS-KSCATALOG:endpointTemplate": template},
        headers={**headers, "serviceid": f"w{name}"},
    )
    assert response.status_code == 201
    assert response.json()["OS-KSCATALOG:endpointTemplate"]["id"] == "4242"
    assert (
        http.delete(
            base_url + V2 + "/OS-KSCATALOG/endpointTemplates/4242", headers=headers
        ).status_code
        == 204
    )


# Behaviors ---------------------------------------------------------------------------


@pytest.fixture
def behaviors(http, base_url) -> Iterator[list[str]]:
    """Ids of behaviors created by a test, removed afterwards so no other test sees them."""
    created: list[str] = []
    yield created
    for behavior_id in created:
        http.delete(f"{base_url}{BEHAVIORS}/{behavior_id}")


def add_behavior(http, base_url, behaviors, document) -> str:
    response = http.post(base_url + BEHAVIORS, json=document)
    assert response.status_code == 201, response.text
    behaviors.append(response.json()["id"])
    return response.json()["id"]


def test_fail_behavior_on_username(http, base_url, name, behaviors):
    behavior_id = add_behavior(
        http, base_url, behaviors, {"name": "fail", "criteria": [{"username": f"{name}-.*"}]}
    )
    refused = login(http, base_url, f"{name}-1", expect=401)
    assert refused == {
        "unauthorized": {
            "message": "Unable to authenticate user with credentials provided.",
            "code": 401,
        }
    }
    login(http, base_url, f"x{name}-1")  # re.match: anchored at the start
    listed = http.get(base_url + BEHAVIORS).json()["behaviors"]
    assert {"id": behavior_id, "name": "fail"}.items() <= next(
        b for b in listed if b["id"] == behavior_id
    ).items()
    assert http.delete(f"{base_url}{BEHAVIORS}/{behavior_id}").status_code == 204
    assert http.delete(f"{base_url}{BEHAVIORS}/{behavior_id}").status_code == 404
    login(http, base_url, f"{name}-1")


def test_fail_behavior_on_tenant_with_a_raw_string_body(http, base_url, name, behaviors):
    add_behavior(
        http,
        base_url,
        behaviors,
        {
            "name": "fail",
            "parameters": {"code": 503, "message": "identity is down", "type": "string"},
            "criteria": [{"tenant_id": f"^down{name}$"}],
        },
    )
    response = http.post(
        base_url + V2 + "/tokens",
        json={
            "auth": {
                "passwordCredentials": {"username": name, "password": "p"},
                "tenantId": f"down{name}",
            }
        },
    )
    assert response.status_code == 503
    assert response.text == "identity is down"
    # No session was made by the failed attempt.
    login(http, base_url, name, f"up{name}")


def test_sequence_behavior_applies_to_tokens_and_impersonation(http, base_url, name, behaviors):
    add_behavior(
        http,
        base_url,
        behaviors,
        {
            "name": "sequence",
            "parameters": {
                "behaviors": [
                    {"name": "fail", "parameters": {"code": 500, "type": "identityFault"}},
                    {"name": "default"},
                ]
            },
            "criteria": [{"username": f"seq{name}"}],
        },
    )
    first = login(http, base_url, f"seq{name}", expect=500)
    assert first["identityFault"]["code"] == 500
    login(http, base_url, f"seq{name}")
    impersonation = http.post(
        base_url + V2 + "/RAX-AUTH/impersonation-tokens",
        json={"RAX-AUTH:impersonation": {"user": {"username": f"seq{name}"}}},
    )
    assert impersonation.status_code == 500


@pytest.mark.parametrize(
    "document",
    [
        {"name": "fail", "criteria": [{"server_name": "x"}]},
        {"name": "explode", "criteria": []},
        {"name": "fail", "criteria": [{"username": "("}]},
        {"name": "fail", "parameters": {"code": 200}},
        {"name": "sequence", "parameters": {}},
    ],
)
def test_bad_behaviors_are_400(http, base_url, document):
    response = http.post(base_url + BEHAVIORS, json=document)
    assert response.status_code == 400
    assert response.json()["code"] == 400


def test_wrong_method_is_not_a_500(http, base_url):
    assert http.put(base_url + V2 + "/tokens", json={}).status_code == 405
    assert http.delete(base_url + V2).status_code == 405


def test_requests_raise_on_nothing_unexpected(base_url):
    # A smoke check with plain requests: the README's curl example.
    response = requests.post(
        base_url + V2 + "/tokens",
        data='{"auth":{"RAX-KSKEY:apiKeyCredentials":{"username":"mimic","apiKey":"12345"}}}',
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["access"]["user"]["name"] == "mimic"
