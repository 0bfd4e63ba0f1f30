"""Identity v3 (Keystone) over a real socket, with keystoneauth1's v3 plugins and requests.

v3 shares v2.0's state: the same users, tenants (v3 projects) and tokens, so a token from
either version is valid on both. Every test uses its own user and tenant names.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from keystoneauth1 import discover, session
from keystoneauth1.identity import generic, v3
from novaclient import client as nova_client

from simulacra.cloud.compute import NOVA
from simulacra.cloud.image import GLANCE

V2 = "/identity/v2.0"
V3 = "/identity/v3"
BEHAVIORS = "/mimic/v1.1/IdentityControlAPI/behaviors/auth"
DEFAULT = {"id": "default", "name": "Default"}


def password_body(username=None, *, user_id=None, domain=None, scope=None) -> dict:
    user: dict = {"password": "secret"}
    if user_id is not None:
        user["id"] = user_id
    else:
        user["name"] = username
        user["domain"] = {"name": "Default"} if domain is None else domain
    auth: dict = {"identity": {"methods": ["password"], "password": {"user": user}}}
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


def token_body(token: str, scope=None) -> dict:
    auth: dict = {"identity": {"methods": ["token"], "token": {"id": token}}}
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


def project_scope(name: str, by: str = "name") -> dict:
    if by == "id":
        return {"project": {"id": name}}
    return {"project": {"name": name, "domain": {"id": "default"}}}


def post_token(http, base_url, body, expect=201, query=""):
    response = http.post(base_url + V3 + "/auth/tokens" + query, json=body)
    assert response.status_code == expect, response.text
    return response


def login_v2(http, base_url, username, tenant=None) -> dict:
    auth = {"passwordCredentials": {"username": username, "password": "p"}}
    if tenant:
        auth["tenantName"] = tenant
    response = http.post(base_url + V2 + "/tokens", json={"auth": auth})
    assert response.status_code == 200, response.text
    return response.json()["access"]


def assert_keystone_error(response, status: int, title: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"code", "title", "message"}
    assert (error["code"], error["title"]) == (status, title)
    assert isinstance(error["message"], str) and error["message"]
    return error


def stamp(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


# Discovery ------------------------------------------------------------------------------


def test_v3_version_document_and_the_listing_of_both(http, base_url):
    for path in (V3, V3 + "/"):
        response = http.get(base_url + path)
        assert response.status_code == 200
        version = response.json()["version"]
        assert (version["id"], version["status"]) == ("v3.14", "stable")
        assert version["links"] == [{"href": base_url + V3, "rel": "self"}]
        assert version["media-types"][0]["type"] == "application/vnd.openstack.identity-v3+json"
    listing = http.get(base_url + "/identity")
    assert listing.status_code == 300
    hrefs = {v["id"]: v["links"][0]["href"] for v in listing.json()["versions"]["values"]}
    assert hrefs == {"v3.14": base_url + V3, "v2.0": base_url + V2}
    data = discover.Discover(session.Session(), base_url + V3).version_data()
    assert [(d["version"], d["url"]) for d in data] == [((3, 14), base_url + V3)]


def test_generic_plugin_picks_v3_when_given_a_domain(base_url, name):
    auth = generic.Password(
        auth_url=base_url + "/identity",
        username=name,
        password="secret",
        user_domain_name="Default",
        project_name=f"p{name}",
        project_domain_id="default",
    )
    access = auth.get_access(session.Session(auth=auth))
    assert access.version == "v3"
    assert (access.username, access.project_id) == (name, f"p{name}")


# POST /auth/tokens ----------------------------------------------------------------------


def test_token_document_shape(http, base_url, name):
    tenant = f"t{name}"
    response = post_token(http, base_url, password_body(name, scope=project_scope(tenant)))
    token = response.headers["X-Subject-Token"]
    assert token.startswith("token_")
    body = response.json()["token"]
    assert set(body) == {
        "methods",
        "user",
        "audit_ids",
        "expires_at",
        "issued_at",
        "roles",
        "project",
        "is_domain",
        "catalog",
    }
    assert body["methods"] == ["password"]
    assert body["user"]["name"] == name and body["user"]["domain"] == DEFAULT
    assert body["user"]["id"].isdigit()
    assert body["project"] == {"id": tenant, "name": tenant, "domain": DEFAULT}
    assert body["roles"] == [{"id": "3", "name": "identity:user-admin"}]
    assert stamp(body["expires_at"]) - stamp(body["issued_at"]) == pytest.approx(86400)
    assert len(body["audit_ids"]) == 1 and len(body["audit_ids"][0]) == 22


def test_catalog_has_identity_and_the_v2_services_in_v3_shape(http, base_url, name):
    tenant = f"t{name}"
    body = post_token(http, base_url, password_body(name, scope=project_scope(tenant))).json()
    catalog = {entry["type"] + "/" + entry["name"]: entry for entry in body["token"]["catalog"]}
    assert {"identity/keystone", "compute/cloudServersOpenStack", "image/cloudImages"} <= set(
        catalog
    )
    identity = catalog["identity/keystone"]
    assert {e["url"] for e in identity["endpoints"]} == {base_url + "/identity"}
    assert {(e["region"], e["interface"]) for e in identity["endpoints"]} == {
        (r, i) for r in ("ORD", "DFW", "IAD") for i in ("public", "internal", "admin")
    }
    compute = catalog["compute/cloudServersOpenStack"]
    assert len(compute["id"]) == 32
    for endpoint in compute["endpoints"]:
        assert set(endpoint) == {"id", "interface", "region", "region_id", "url"}
        assert endpoint["region"] == endpoint["region_id"]
        assert endpoint["interface"] in ("public", "internal")
        assert endpoint["url"] == (
            f"{base_url}/mimicking/{NOVA.service_id}/{endpoint['region']}/v2/{tenant}"
        )
    # The same services and URLs as the v2.0 catalog of the same tenant.
    v2 = login_v2(http, base_url, name, tenant)["serviceCatalog"]
    v2_urls = {(e["name"], p["region"], p["publicURL"]) for e in v2 for p in e["endpoints"]}
    v3_urls = {
        (entry["name"], e["region"], e["url"])
        for entry in body["token"]["catalog"]
        for e in entry["endpoints"]
        if e["interface"] == "public" and entry["type"] != "identity"
    }
    assert v3_urls == v2_urls
    # Endpoint ids are stable from one request to the next.
    again = post_token(http, base_url, password_body(name)).json()["token"]["catalog"]
    assert again == body["token"]["catalog"]


def test_nocatalog(http, base_url, name):
    body = post_token(http, base_url, password_body(name), query="?nocatalog").json()
    assert "catalog" not in body["token"]


def test_keystoneauth_v3_password_and_the_catalog(base_url, name):
    tenant = f"t{name}"
    auth = v3.Password(
        auth_url=base_url + V3,
        username=name,
        password="secret",
        user_domain_name="Default",
        project_name=tenant,
        project_domain_name="Default",
    )
    sess = session.Session(auth=auth)
    access = auth.get_access(sess)
    assert access.version == "v3"
    assert (access.username, access.project_id, access.project_name) == (name, tenant, tenant)
    assert access.user_domain_id == "default" and access.project_domain_id == "default"
    assert access.role_names == ["identity:user-admin"]
    compute = f"{base_url}/mimicking/{NOVA.service_id}/DFW/v2/{tenant}"
    assert sess.get_endpoint(service_type="compute", region_name="DFW") == compute
    internal = sess.get_endpoint(service_type="compute", region_name="DFW", interface="internal")
    assert internal == compute
    image = sess.get_endpoint(service_type="image", region_name="IAD")
    assert image == f"{base_url}/mimicking/{GLANCE.service_id}/IAD/v2/{tenant}"
    assert sess.get_endpoint(service_type="identity", region_name="ORD") == base_url + "/identity"


def test_novaclient_through_a_v3_session(base_url, name):
    tenant = f"t{name}"
    auth = v3.Password(
        auth_url=base_url + V3,
        username=name,
        password="secret",
        user_domain_id="default",
        project_id=tenant,
    )
    nova = nova_client.Client("2", session=session.Session(auth=auth), region_name="ORD")
    server = nova.servers.create("v3-server", image="img", flavor="2")
    assert nova.servers.get(server.id).tenant_id == tenant


def test_one_user_one_tenant_one_token_across_versions(http, base_url, name):
    """A user made through v2.0 logs in on v3 (by name or id) and gets the same token."""
    access = login_v2(http, base_url, name, f"t{name}")
    token, user_id = access["token"]["id"], access["user"]["id"]
    by_name = post_token(http, base_url, password_body(name))
    by_id = post_token(http, base_url, password_body(user_id=user_id))
    for response in (by_name, by_id):
        assert response.headers["X-Subject-Token"] == token
        # No scope: the user's default project, its tenant (as Keystone's default_project_id).
        assert response.json()["token"]["project"]["id"] == f"t{name}"
    # The v3 token validates on v2.0 and shows the same user.
    validated = http.get(f"{base_url}{V2}/tokens/{token}")
    assert validated.status_code == 200
    assert validated.json()["access"]["user"]["id"] == user_id


def test_a_v3_user_logs_in_on_v2(http, base_url, name):
    response = post_token(http, base_url, password_body(name, scope=project_scope(f"t{name}")))
    access = login_v2(http, base_url, name)
    assert access["token"]["id"] == response.headers["X-Subject-Token"]
    assert access["token"]["tenant"]["id"] == f"t{name}"


def test_token_method_rescopes_a_v2_token(http, base_url, name):
    token = login_v2(http, base_url, name, f"t{name}")["token"]["id"]
    for scope in (project_scope(f"t{name}", by="id"), project_scope(f"t{name}"), None):
        response = post_token(http, base_url, token_body(token, scope))
        assert response.headers["X-Subject-Token"] == token
        assert response.json()["token"]["project"]["id"] == f"t{name}"
    # keystoneauth's v3 token plugin does the same.
    auth = v3.Token(auth_url=base_url + V3, token=token, project_id=f"t{name}")
    assert auth.get_access(session.Session(auth=auth)).user_id.isdigit()
    # Another tenant is refused, as on v2.0.
    refused = post_token(http, base_url, token_body(token, project_scope("other")), expect=401)
    assert_keystone_error(refused, 401, "Unauthorized")


def test_an_unknown_token_is_adopted_for_the_project(http, base_url, name):
    token = f"made-elsewhere-{name}"
    response = post_token(http, base_url, token_body(token, project_scope(f"t{name}", "id")))
    assert response.headers["X-Subject-Token"] == token
    assert response.json()["token"]["project"]["id"] == f"t{name}"


def test_domain_scope(http, base_url, name):
    tenant = f"t{name}"
    login = password_body(name, scope=project_scope(tenant))
    project_token = post_token(http, base_url, login).headers["X-Subject-Token"]
    for scope in ({"domain": {"id": "default"}}, {"domain": {"name": "Default"}}):
        response = post_token(http, base_url, password_body(name, scope=scope))
        token = response.headers["X-Subject-Token"]
        assert token != project_token
        body = response.json()["token"]
        assert body["domain"] == DEFAULT and "project" not in body
        # Every service URL needs a project, so only identity is left (as Keystone does).
        assert [e["type"] for e in body["catalog"]] == ["identity"]
    # The project-scoped token is still what a plain login answers...
    assert post_token(http, base_url, login).headers["X-Subject-Token"] == project_token
    # ... and what the domain-scoped token gets when rescoped to the project.
    rescoped = post_token(http, base_url, token_body(token, project_scope(tenant, by="id")))
    assert rescoped.headers["X-Subject-Token"] == project_token
    # On v2.0, a domain-scoped token shows its user's tenant.
    validated = http.get(f"{base_url}{V2}/tokens/{token}").json()["access"]
    assert validated["token"]["tenant"]["id"] == tenant


def test_keystoneauth_domain_scoped_token(base_url, name):
    auth = v3.Password(
        auth_url=base_url + V3,
        username=name,
        password="secret",
        user_domain_name="Default",
        domain_name="Default",
    )
    access = auth.get_access(session.Session(auth=auth))
    assert access.domain_scoped and not access.project_scoped
    assert (access.domain_id, access.domain_name) == ("default", "Default")


# Validation and revocation -------------------------------------------------------------


def test_validate_with_x_subject_token(http, base_url, name):
    v2_token = login_v2(http, base_url, name, f"t{name}")["token"]["id"]
    response = http.get(
        base_url + V3 + "/auth/tokens",
        headers={"X-Auth-Token": "anything", "X-Subject-Token": v2_token},
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Subject-Token"] == v2_token
    body = response.json()["token"]
    assert body["user"]["name"] == name and body["project"]["id"] == f"t{name}"
    assert any(e["type"] == "compute" for e in body["catalog"])
    bare = http.get(
        base_url + V3 + "/auth/tokens?nocatalog",
        headers={"X-Auth-Token": "anything", "X-Subject-Token": v2_token},
    )
    assert "catalog" not in bare.json()["token"]


def test_validate_needs_both_headers(http, base_url):
    no_auth = http.get(base_url + V3 + "/auth/tokens", headers={"X-Subject-Token": "x"})
    assert_keystone_error(no_auth, 401, "Unauthorized")
    no_subject = http.get(base_url + V3 + "/auth/tokens", headers={"X-Auth-Token": "x"})
    assert_keystone_error(no_subject, 400, "Bad Request")


def test_fail_to_auth_preset_token(http, base_url):
    response = http.get(
        base_url + V3 + "/auth/tokens",
        headers={"X-Auth-Token": "x", "X-Subject-Token": "never-cache-this-and-fail-to-auth"},
    )
    assert_keystone_error(response, 401, "Unauthorized")


def test_revoke(http, base_url, name):
    token = post_token(http, base_url, password_body(name)).headers["X-Subject-Token"]
    headers = {"X-Auth-Token": token, "X-Subject-Token": token}
    assert http.delete(base_url + V3 + "/auth/tokens", headers=headers).status_code == 204
    gone = http.get(base_url + V3 + "/auth/tokens", headers=headers)
    assert_keystone_error(gone, 404, "Not Found")
    assert_keystone_error(
        http.delete(base_url + V3 + "/auth/tokens", headers=headers), 404, "Not Found"
    )
    # On v2.0 too, and it cannot be used to log in again.
    assert http.get(f"{base_url}{V2}/tokens/{token}").status_code == 404
    refused = post_token(http, base_url, token_body(token), expect=401)
    assert_keystone_error(refused, 401, "Unauthorized")
    # A password login mints a new token.
    fresh = post_token(http, base_url, password_body(name)).headers["X-Subject-Token"]
    assert fresh != token


# Projects, users, domains --------------------------------------------------------------


def test_auth_catalog_projects_and_domains(http, base_url, name):
    response = post_token(http, base_url, password_body(name, scope=project_scope(f"t{name}")))
    headers = {"X-Auth-Token": response.headers["X-Subject-Token"]}
    catalog = http.get(base_url + V3 + "/auth/catalog", headers=headers)
    assert catalog.status_code == 200
    assert catalog.json()["catalog"] == response.json()["token"]["catalog"]
    projects = http.get(base_url + V3 + "/auth/projects", headers=headers).json()["projects"]
    assert [(p["id"], p["name"], p["domain_id"]) for p in projects] == [
        (f"t{name}", f"t{name}", "default")
    ]
    domains = http.get(base_url + V3 + "/auth/domains", headers=headers).json()["domains"]
    assert [(d["id"], d["name"]) for d in domains] == [("default", "Default")]
    for path in ("/auth/catalog", "/auth/projects", "/auth/domains"):
        unknown = http.get(base_url + V3 + path, headers={"X-Auth-Token": "never-issued"})
        assert_keystone_error(unknown, 401, "Unauthorized")
        assert_keystone_error(http.get(base_url + V3 + path), 401, "Unauthorized")


def test_projects_users_and_domains(http, base_url, name):
    body = post_token(http, base_url, password_body(name, scope=project_scope(f"t{name}"))).json()
    user_id = body["token"]["user"]["id"]
    headers = {"X-Auth-Token": "any"}

    def get(path, status=200):
        response = http.get(base_url + V3 + path, headers=headers)
        assert response.status_code == status, response.text
        return response.json()

    project = get(f"/projects/t{name}")["project"]
    assert (project["id"], project["name"], project["enabled"]) == (f"t{name}", f"t{name}", True)
    assert project["links"]["self"] == f"{base_url}{V3}/projects/t{name}"
    assert [p["id"] for p in get(f"/projects?name=t{name}")["projects"]] == [f"t{name}"]
    assert f"t{name}" in [p["id"] for p in get("/projects?domain_id=default")["projects"]]
    assert get("/projects?domain_id=other")["projects"] == []
    assert_keystone_error(
        http.get(base_url + V3 + "/projects/nope", headers=headers), 404, "Not Found"
    )

    user = get(f"/users/{user_id}")["user"]
    assert (user["name"], user["domain_id"], user["default_project_id"]) == (
        name,
        "default",
        f"t{name}",
    )
    assert [u["id"] for u in get(f"/users?name={name}")["users"]] == [user_id]
    assert get("/users?name=nobody-" + name)["users"] == []  # listing creates nobody
    assert [p["id"] for p in get(f"/users/{user_id}/projects")["projects"]] == [f"t{name}"]
    assert_keystone_error(http.get(base_url + V3 + "/users/0", headers=headers), 404, "Not Found")

    assert [d["id"] for d in get("/domains")["domains"]] == ["default"]
    assert [d["id"] for d in get("/domains?name=Default")["domains"]] == ["default"]
    assert get("/domains?name=Other")["domains"] == []
    assert get("/domains/default")["domain"]["name"] == "Default"
    assert_keystone_error(
        http.get(base_url + V3 + "/domains/other", headers=headers), 404, "Not Found"
    )
    assert_keystone_error(http.get(base_url + V3 + "/projects"), 401, "Unauthorized")


# Bad input: Keystone's envelope, 4xx, never a 500 ---------------------------------------


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"auth": []}, 400),
        ({"auth": {}}, 400),
        ({"auth": {"identity": {"methods": "password"}}}, 400),
        ({"auth": {"identity": {"methods": []}}}, 400),
        ({"auth": {"identity": {"methods": [1]}}}, 400),
        ({"auth": {"identity": {"methods": ["password"]}}}, 400),
        ({"auth": {"identity": {"methods": ["password"], "password": {}}}}, 400),
        ({"auth": {"identity": {"methods": ["password"], "password": {"user": {}}}}}, 400),
        ({"auth": {"identity": {"methods": ["token"]}}}, 400),
        ({"auth": {"identity": {"methods": ["token"], "token": {"id": 5}}}}, 400),
        ({"auth": {"identity": {"methods": ["totp"]}}}, 401),
        (password_body("x", domain={"name": "Elsewhere"}), 401),
        (password_body("x", domain={"id": "elsewhere"}), 401),
        (password_body("x", domain={}), 400),
        (password_body(user_id="no-such-user"), 401),
        (password_body("x", scope={"system": {"all": True}}), 400),
        (password_body("x", scope=[]), 400),
        (password_body("x", scope={"project": {"name": "p"}}), 400),
        (password_body("x", scope={"project": {"name": "p", "domain": {"id": "x"}}}), 401),
        (password_body("x", scope={"domain": {"id": "other"}}), 401),
    ],
)
def test_bad_auth_bodies(http, base_url, body, status):
    response = http.post(base_url + V3 + "/auth/tokens", json=body)
    assert_keystone_error(response, status, {400: "Bad Request", 401: "Unauthorized"}[status])


def test_not_json(http, base_url):
    for data in (b"{", b"[]", b""):
        response = http.post(base_url + V3 + "/auth/tokens", data=data)
        assert_keystone_error(response, 400, "Bad Request")


def test_known_user_asking_for_another_project(http, base_url, name):
    post_token(http, base_url, password_body(name, scope=project_scope(f"t{name}")))
    refused = post_token(
        http, base_url, password_body(name, scope=project_scope(f"other{name}")), expect=401
    )
    assert "is not valid for User" in assert_keystone_error(refused, 401, "Unauthorized")["message"]


def test_auth_behaviors_apply_to_v3(http, base_url, name):
    created = http.post(
        base_url + BEHAVIORS,
        json={
            "name": "fail",
            "parameters": {"code": 403, "message": "Go away"},
            "criteria": [{"username": f"^{name}$"}],
        },
    )
    assert created.status_code == 201, created.text
    try:
        refused = post_token(http, base_url, password_body(name), expect=403)
        assert assert_keystone_error(refused, 403, "Forbidden")["message"] == "Go away"
        post_token(http, base_url, password_body("other" + name))  # others are not affected
    finally:
        http.delete(f"{base_url}{BEHAVIORS}/{created.json()['id']}")
    post_token(http, base_url, password_body(name))


# The model alone ----------------------------------------------------------------------


def test_model_domain_tokens_revocation_and_listings():
    from simulacra.clock import VirtualClock
    from simulacra.cloud.identity.model import DEFAULT_DOMAIN, Identity
    from simulacra.errors import NotFound

    identity = Identity(VirtualClock(100))
    token = identity.authenticate("ann", "t1")
    assert token.issued == 100 and not token.domain_scoped
    domain_token = identity.authenticate_domain(identity.user("ann"))
    assert domain_token.domain_scoped and domain_token.id != token.id
    assert identity.authenticate("ann").id == token.id  # still the tenant-scoped one
    assert identity.domain("default") is DEFAULT_DOMAIN
    assert identity.domain(name="Default") is DEFAULT_DOMAIN
    with pytest.raises(NotFound):
        identity.domain("other")
    identity.user("bob", "t2")
    assert identity.tenants() == ["t1", "t2"] and identity.has_tenant("t2")
    assert [u.username for u in identity.users()] == ["ann", "bob"]
    assert [u.username for u in identity.users("t1")] == ["ann"]
    identity.revoke(token.id)
    with pytest.raises(NotFound):
        identity.validate(token.id)
    with pytest.raises(NotFound):
        identity.revoke(token.id)
    assert identity.authenticate("ann").id not in (token.id, domain_token.id)
