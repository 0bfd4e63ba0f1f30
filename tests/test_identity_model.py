"""Unit tests of the identity model, its documents and presets, and the catalog hook."""

from __future__ import annotations

import re
import uuid

import pytest

from simulacra.clock import VirtualClock
from simulacra.cloud.catalog import Catalog, ServiceSpec
from simulacra.cloud.identity import default_region, documents, presets
from simulacra.cloud.identity.model import (
    TOKEN_LIFETIME,
    EndpointTemplate,
    Identity,
    PresetUnauthorized,
    Unauthorized,
)
from simulacra.errors import AlreadyExists, Conflict, Invalid, NotFound


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def identity(clock) -> Identity:
    return Identity(clock)


# Users and tenants -------------------------------------------------------------------


def test_a_username_keeps_its_tenant(identity):
    token = identity.authenticate("alice")
    tenant = identity.user_of(token).tenant_id
    assert re.fullmatch(r"\d{1,15}", tenant)
    assert identity.user_of(identity.authenticate("alice", tenant)).tenant_id == tenant
    assert identity.authenticate("alice", method="APIKEY").id == token.id
    with pytest.raises(Unauthorized) as refused:
        identity.authenticate("alice", "999")
    user_id = identity.user("alice").id
    assert refused.value.message == (
        f"Tenant with Name/Id: '999' is not valid for User 'alice' (id: '{user_id}')"
    )


def test_users_of_one_tenant_are_distinct(identity):
    first = identity.user_of(identity.authenticate("a", "T1"))
    second = identity.user_of(identity.authenticate("b", "T1"))
    assert (first.tenant_id, second.tenant_id) == ("T1", "T1")
    assert first.id != second.id and first.token != second.token
    assert identity.primary_user("T1") is first


def test_user_ids_are_stable_numbers_across_instances(clock):
    one, two = Identity(clock), Identity(clock)
    two.user("someone-else")  # creation order does not matter
    assert one.user("alice").id == two.user("alice").id
    assert one.user("alice").id != one.user("bob").id
    assert re.fullmatch(r"\d{1,15}", one.user("alice").id)


def test_user_id_collisions_are_resolved(identity):
    natural = Identity(VirtualClock()).user("bob").id
    identity._user_ids[natural] = "mallory"  # someone already holds bob's natural id
    bob = identity.user("bob")
    assert bob.id != natural and re.fullmatch(r"\d{1,15}", bob.id)
    assert identity.user_by_id(bob.id) is bob
    assert identity.user("bob").id == bob.id


def test_user_by_id_and_unknown_users(identity):
    alice = identity.user("alice")
    assert identity.user_by_id(alice.id) is alice
    with pytest.raises(NotFound, match="User nope not found"):
        identity.user_by_id("nope")


def test_primary_user_of_an_unknown_tenant_is_generated(identity):
    user = identity.primary_user("42")
    assert user.tenant_id == "42" and user.username.startswith("username_")
    assert identity.primary_user("42") is user


def test_api_keys_are_stable_per_user(identity):
    alice = identity.user("alice")
    assert re.fullmatch(r"[0-9a-f]{32}", alice.api_key)
    assert identity.user("alice").api_key == alice.api_key
    assert identity.user("bob").api_key != alice.api_key


# Tokens ------------------------------------------------------------------------------


def test_tokens_are_uuid4_and_expire_on_the_injected_clock(identity, clock):
    clock.advance(100)
    token = identity.authenticate("alice")
    assert token.id.startswith("token_")
    assert uuid.UUID(token.id.removeprefix("token_")).version == 4
    assert token.expires == 100 + TOKEN_LIFETIME
    clock.advance(TOKEN_LIFETIME - 1)
    assert identity.authenticate("alice").id == token.id
    clock.advance(1)
    renewed = identity.authenticate("alice")
    assert renewed.id != token.id and renewed.expires == clock.seconds() + TOKEN_LIFETIME
    assert identity.validate(token.id) is token  # expiry is never enforced (Mimic)


def test_token_authentication(identity):
    token = identity.authenticate("alice", "T")
    assert identity.authenticate_token(token.id, "T") is token
    with pytest.raises(Unauthorized, match="Token doesn't belong to Tenant with Id/Name: 'U'"):
        identity.authenticate_token(token.id, "U")
    adopted = identity.authenticate_token("foreign", "T")
    assert adopted.authenticated_by == "PASSWORD"
    assert identity.authenticate("bob", method="APIKEY").authenticated_by == "APIKEY"
    assert identity.user_of(adopted).username == "alice"
    fresh = identity.authenticate_token("foreign2", "NEW")
    assert identity.user_of(fresh).tenant_id == "NEW"


def test_validate(identity):
    token = identity.authenticate("alice", "T")
    assert identity.validate(token.id, "T") is token
    with pytest.raises(NotFound):
        identity.validate(token.id, "U")
    with pytest.raises(PresetUnauthorized) as failed:
        identity.validate("never-cache-this-and-fail-to-auth")
    assert failed.value.envelope == "itemNotFound"
    adopted = identity.validate("made-elsewhere")
    assert identity.user_of(adopted).username.startswith("username_")
    assert identity.validate("made-elsewhere") is adopted
    assert identity.resolve("never-cache-this-and-fail-to-auth").id.startswith("never")


def test_existing_token(identity):
    token = identity.authenticate("alice")
    assert identity.existing_token(token.id) is token
    for unknown in ("nope", None, ""):
        with pytest.raises(Unauthorized):
            identity.existing_token(unknown)


def test_impersonation(identity, clock):
    admin = identity.authenticate("admin")
    own = identity.authenticate("alice")
    token = identity.impersonate("alice", 600, admin.id)
    assert token.id.startswith("impersonated_token_")
    assert token.expires == clock.seconds() + 600
    assert identity.user_of(token).username == "alice"
    assert identity.impersonator_of(token).username == "admin"
    assert identity.authenticate("alice") is own
    anonymous = identity.impersonate("bob", 10)
    assert identity.impersonator_of(anonymous) is None
    with pytest.raises(Invalid):
        identity.impersonate("bob", 0)


def test_reset_forgets_everything(identity):
    token = identity.authenticate("alice")
    identity.add_service("svc", "t")
    identity.behaviors.add({"name": "fail", "criteria": []})
    identity.reset()
    with pytest.raises(Unauthorized):
        identity.existing_token(token.id)
    assert identity.services() == []
    assert identity.behaviors.list() == []


# Behaviors ---------------------------------------------------------------------------


def test_auth_outcome_uses_the_auth_event(identity):
    assert identity.auth_outcome("alice", None) is None
    identity.behaviors.add({"name": "fail", "criteria": [{"username": "ali"}, {"tenant_id": "9"}]})
    assert identity.auth_outcome("alice", None) is None  # every criterion must hold
    outcome = identity.auth_outcome("alice", "99")
    assert outcome.name == "fail"
    assert outcome.parameters == {
        "code": 401,
        "message": "Unable to authenticate user with credentials provided.",
        "type": "unauthorized",
    }
    with pytest.raises(Invalid):
        identity.behaviors.add({"name": "fail", "criteria": [{"token": "x"}]})


# External APIs -----------------------------------------------------------------------


def template(**overrides) -> EndpointTemplate:
    document = {
        "id": "1",
        "region": "R",
        "type": "object-store",
        "name": "files",
        "publicURL": "https://files.example/v1/%tenant_id%",
        **overrides,
    }
    return EndpointTemplate.from_json(document)


def test_template_validation():
    parsed = template(id=7, enabled=True, **{"RAX-AUTH:tenantAlias": "{t}"})
    assert parsed.id == "7" and parsed.enabled and parsed.tenant_alias == "{t}"
    assert parsed.describe()["RAX-AUTH:tenantAlias"] == "{t}"
    with pytest.raises(Invalid, match="region, name"):
        EndpointTemplate.from_json({"id": "1", "type": "t"})
    for bad in (
        {"id": True},
        {"id": ["x"]},
        {"region": 1},
        {"enabled": "true"},
        {"internalURL": 3},
        {"RAX-AUTH:tenantAlias": ""},
    ):
        with pytest.raises(Invalid):
            template(**bad)
    with pytest.raises(Invalid):
        EndpointTemplate.from_json(["not", "an", "object"])


def test_services(identity):
    service = identity.add_service("files", "object-store", "svc-1", "Files")
    assert service.describe() == {
        "name": "files",
        "type": "object-store",
        "id": "svc-1",
        "description": "Files",
    }
    with pytest.raises(AlreadyExists):
        identity.add_service("other", "t", "svc-1")
    with pytest.raises(AlreadyExists):
        identity.add_service("files", "t")
    generated = identity.add_service("more", "t")
    assert uuid.UUID(generated.id)
    assert generated.description == "External API referenced by Mimic"
    identity.add_template(template())
    with pytest.raises(Conflict):
        identity.remove_service("svc-1")
    identity.remove_template("1")
    identity.remove_service("svc-1")
    with pytest.raises(NotFound):
        identity.remove_service("svc-1")


def test_templates_and_the_tenant_catalog(identity):
    identity.add_service("files", "object-store", "svc")
    assert identity.add_template(template()).id == "1"  # found by the service's name
    with pytest.raises(AlreadyExists):
        identity.add_template(template())
    with pytest.raises(NotFound):
        identity.add_template(template(id="2", name="unknown"))
    with pytest.raises(NotFound):
        identity.add_template(template(id="2"), service_id="no-such-service")
    with pytest.raises(Conflict):
        identity.add_template(template(id="2", type="compute"))
    assert identity.external_entries("T") == []  # disabled until enabled for a tenant
    identity.enable_template("T", "1")
    identity.enable_template("T", "1")  # enabling twice is harmless
    assert identity.external_entries("T") == [
        {
            "name": "files",
            "type": "object-store",
            "endpoints": [
                {
                    "region": "R",
                    "tenantId": "T",
                    "publicURL": "https://files.example/v1/T",
                    "internalURL": "",
                }
            ],
        }
    ]
    assert identity.external_entries("U") == []
    assert [t.describe_for("T")["publicURL"] for t in identity.tenant_templates("T")] == [
        "https://files.example/v1/T"
    ]
    identity.disable_template("T", "1")
    with pytest.raises(NotFound, match="not enabled"):
        identity.disable_template("T", "1")
    with pytest.raises(NotFound):
        identity.enable_template("T", "nope")
    with pytest.raises(NotFound):
        identity.disable_template("T", "nope")
    assert identity.external_entries("T") == []


def test_update_template(identity):
    identity.add_service("files", "object-store", "svc")
    identity.add_template(template())
    identity.enable_template("T", "1")
    with pytest.raises(Conflict, match="does not match"):
        identity.update_template("2", template())
    with pytest.raises(NotFound):
        identity.update_template("9", template(id="9"))
    with pytest.raises(Conflict):
        identity.update_template("1", template(type="compute"))
    with pytest.raises(NotFound):
        identity.update_template("1", template(), service_id="elsewhere")
    identity.add_service("other", "object-store", "svc2")
    with pytest.raises(NotFound):
        identity.update_template("1", template(), service_id="svc2")
    identity.update_template("1", template(region="R2"))
    # Grants to tenants survive an update.
    assert [e["region"] for e in identity.external_entries("T")[0]["endpoints"]] == ["R2"]
    everyone = identity.update_template("1", template(enabled=True))
    assert everyone.serves("anyone")
    with pytest.raises(NotFound):
        identity.remove_template("1", service_id="svc2")
    identity.remove_template("1", service_id="svc")
    with pytest.raises(NotFound):
        identity.remove_template("1")


def test_templates_listing_by_service(identity):
    identity.add_service("files", "object-store", "svc")
    identity.add_service("dns", "rax:dns", "svc2")
    identity.add_template(template())
    identity.add_template(template(id="2", type="rax:dns", name="dns"))
    assert [t.id for t in identity.templates()] == ["1", "2"]
    assert [t.id for t in identity.templates("svc2")] == ["2"]
    with pytest.raises(NotFound):
        identity.templates("nope")


# Catalog hook ------------------------------------------------------------------------


NOVA = ServiceSpec("NovaApi", "cloudServersOpenStack", "compute")


def test_catalog_sources_are_appended_after_registered_services():
    catalog = Catalog(("SYD", "HKG"))
    catalog.register(NOVA)
    plain = catalog.entries("http://h", "T")
    assert [e["region"] for e in plain[0]["endpoints"]] == ["SYD", "HKG"]
    catalog.add_source(lambda base_url, tenant: [{"name": tenant, "type": base_url}])
    assert catalog.entries("http://h", "T") == [*plain, {"name": "T", "type": "http://h"}]


def test_default_region():
    assert default_region(("ORD", "DFW", "IAD")) == "DFW"
    assert default_region(("SYD", "HKG")) == "SYD"


# Documents ---------------------------------------------------------------------------


def test_timestamps_are_utc_with_milliseconds():
    assert documents.timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert documents.timestamp(86400.0255) == "1970-01-02T00:00:00.025Z"


def test_access_document(identity):
    catalog = Catalog(("ORD",))
    catalog.register(NOVA)
    token = identity.authenticate("alice", "T")
    access = documents.access(identity, token, catalog.entries("http://h:1", "T"))["access"]
    assert access["token"] == {
        "id": token.id,
        "expires": "1970-01-02T00:00:00.000Z",
        "tenant": {"id": "T", "name": "T"},
        "RAX-AUTH:authenticatedBy": ["PASSWORD"],
    }
    assert access["user"]["roles"] == presets.DEFAULT_ROLES
    assert access["serviceCatalog"][0]["endpoints"][0]["publicURL"] == (
        f"http://h:1/mimicking/{NOVA.service_id}/ORD/v2/T"
    )
    assert "serviceCatalog" not in documents.access(identity, token)["access"]


def test_role_presets_by_tenant(identity):
    token = identity.authenticate("admin", "9999")
    roles = documents.access(identity, token)["access"]["user"]["roles"]
    assert [r["name"] for r in roles] == ["admin", "observer"]
    roles[0]["name"] = "changed"  # documents never share the preset tables
    assert presets.roles_for_tenant("9999")[0]["name"] == "admin"


def test_validation_document_presets(identity):
    admin = identity.authenticate("admin")
    impersonated = identity.impersonate("alice", 60, admin.id)
    shown = documents.validation(identity, impersonated)["access"]["RAX-AUTH:impersonator"]
    assert shown["id"] == identity.user("admin").id and shown["name"] == "admin"
    assert shown["roles"] == presets.IMPERSONATION_ROLES
    racker = documents.validation(identity, identity.validate("this_is_a_racker_token"))
    assert racker["access"]["RAX-AUTH:impersonator"]["roles"] == [{"id": "9", "name": "Racker"}]
    plain = documents.validation(identity, admin)
    assert "RAX-AUTH:impersonator" not in plain["access"]
    fixed = documents.validation(identity, identity.validate("ThreeFourImpersonator"))["access"]
    assert fixed["token"]["tenant"]["id"] == "135790"
    assert fixed["user"]["name"] == "ThreeFour"
    assert [r["name"] for r in fixed["RAX-AUTH:impersonator"]["roles"]] == [
        "monitoring:service-admin",
        "object-store:admin",
    ]


def test_endpoint_ids_are_stable():
    catalog = [{"name": "n", "type": "t", "endpoints": [{"region": "R", "publicURL": "u"}]}]
    first = documents.endpoints(catalog)["endpoints"][0]
    assert first == {"region": "R", "publicURL": "u", "name": "n", "type": "t", "id": first["id"]}
    assert documents.endpoints(catalog)["endpoints"][0]["id"] == first["id"]


def test_presets_listing_has_mimics_keys():
    assert set(presets.LISTING) == {
        "maas_admin_roles",
        "racker_token",
        "observer_role",
        "creator_role",
        "admin_role",
        "token_fail_to_auth",
        "non_dedicated_observer",
        "non_dedicated_admin",
        "non_dedicated_impersonator",
        "non_dedicated_racker",
        "dedicated_full_device_permission_holder",
        "dedicated_account_permission_holder",
        "dedicated_impersonator",
        "dedicated_racker",
        "dedicated_limited_device_permission_holder",
        "dedicated_non_permission_holder",
        "dedicated_quasi_user_impersonator",
    }
    assert len(presets.LISTING["maas_admin_roles"]) == 6
