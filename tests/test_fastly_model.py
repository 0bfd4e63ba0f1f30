"""Unit tests of the pure Fastly model, on a virtual clock."""

from __future__ import annotations

import random

import pytest

from simulacra.clock import VirtualClock
from simulacra.cloud.fastly import views
from simulacra.cloud.fastly.model import (
    BACKEND,
    CACHE_SETTINGS,
    CONDITION,
    DOMAIN,
    ID_LENGTH,
    RESPONSE_OBJECT,
    FastlyBackend,
    FastlyError,
)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=86400.0)


@pytest.fixture
def backend(clock: VirtualClock) -> FastlyBackend:
    return FastlyBackend(clock, random.Random(3))


def status_of(call, *args) -> int:
    with pytest.raises(FastlyError) as caught:
        call(*args)
    return caught.value.status


def test_each_token_is_its_own_customer(backend):
    a, b = backend.customer("a"), backend.customer("b")
    assert a is backend.customer("a") and a.id != b.id
    assert len(a.id) == ID_LENGTH and a.id.isalnum()
    service = backend.create_service("a", {"name": "svc"})
    assert status_of(backend.service, "b", service.id) == 404
    assert backend.list_services("b") == []
    assert status_of(backend.search_service, "b", "svc") == 404


def test_a_new_service_has_an_empty_version_1(backend, clock):
    service = backend.create_service("t", {"name": "svc", "comment": "hello"})
    assert (service.comment, service.type, list(service.versions)) == ("hello", "vcl", [1])
    assert service.customer_id == backend.customer("t").id
    version = service.versions[1]
    assert (version.active, version.locked, version.created) == (False, False, 86400.0)
    view = views.service_view(service)
    assert view["created_at"] == "1970-01-02T00:00:00Z"
    assert view["versions"][0]["number"] == 1 and view["versions"][0]["active"] is False


def test_versions_increment_clone_and_activate(backend, clock):
    service = backend.create_service("t", {"name": "svc"})
    sid = service.id
    backend.create_item("t", sid, "1", DOMAIN, {"name": "www.example.com"})
    assert backend.create_version("t", sid).number == 2
    assert backend.list_items("t", sid, "2", DOMAIN)[1] == []  # a new version is empty
    clock.advance(10)
    clone = backend.clone_version("t", sid, "1")
    assert clone.number == 3 and clone.created == 86410.0
    assert [i.name for i in backend.list_items("t", sid, "3", DOMAIN)[1]] == ["www.example.com"]
    backend.activate("t", sid, "1")
    backend.activate("t", sid, "3")
    assert [(v.number, v.active, v.locked) for v in service.versions.values()] == [
        (1, False, True),
        (2, False, False),
        (3, True, True),
    ]
    assert service.active_version is service.versions[3]
    backend.deactivate("t", sid, "3")
    assert service.active_version is None
    # The clone is a copy: changing it leaves the source alone.
    backend.update_item("t", sid, "3", DOMAIN, "www.example.com", {"comment": "new"})
    assert backend.get_item("t", sid, "1", DOMAIN, "www.example.com")[1].values["comment"] == ""


def test_unknown_service_version_and_item_are_404(backend):
    sid = backend.create_service("t", {"name": "svc"}).id
    assert status_of(backend.service, "t", "nope") == 404
    assert status_of(backend.version, "t", sid, "9") == 404
    assert status_of(backend.version, "t", sid, "one") == 404
    assert status_of(backend.version, "t", sid, "²") == 404
    assert status_of(backend.get_item, "t", sid, "1", BACKEND, "origin") == 404
    assert status_of(backend.delete_service, "t", "nope") == 404


def test_items_have_fastlys_types_and_defaults(backend):
    sid = backend.create_service("t", {"name": "svc"}).id
    version, backend_item = backend.create_item(
        "t", sid, "1", BACKEND, {"name": "o", "address": "1.2.3.4", "port": "443", "use_ssl": "1"}
    )
    view = views.item_view(BACKEND, version, backend_item)
    assert (view["port"], view["use_ssl"], view["hostname"], view["ipv4"]) == (
        443,
        True,
        "1.2.3.4",
        "1.2.3.4",
    )
    assert (view["version"], view["locked"], view["weight"]) == (1, False, 100)
    _, condition = backend.create_item(
        "t", sid, "1", CONDITION, {"name": "c", "statement": "req.url", "priority": 10}
    )
    condition_view = views.item_view(CONDITION, version, condition)
    assert (condition_view["priority"], condition_view["version"]) == ("10", "1")
    _, cache = backend.create_item("t", sid, "1", CACHE_SETTINGS, {"name": "cs"})
    assert (cache.values["action"], cache.values["ttl"]) == (None, "0")
    _, response = backend.create_item("t", sid, "1", RESPONSE_OBJECT, {"name": "r"})
    assert (response.values["status"], response.values["response"]) == ("200", "Ok")


@pytest.mark.parametrize(
    ("kind", "params", "status"),
    [
        (DOMAIN, {}, 400),
        (DOMAIN, {"name": ""}, 400),
        (BACKEND, {"name": "o"}, 400),
        (BACKEND, {"name": "o", "address": "a", "port": "http"}, 400),
        (BACKEND, {"name": "o", "address": "a", "port": "²"}, 400),
        (BACKEND, {"name": "o", "address": "a", "use_ssl": "maybe"}, 400),
        (CONDITION, {"name": "c"}, 400),
        (CONDITION, {"name": "c", "statement": "s", "type": "SOMETIMES"}, 400),
        (CACHE_SETTINGS, {"name": "c", "action": "keep"}, 400),
        (RESPONSE_OBJECT, {"name": "r", "status": "ok"}, 400),
    ],
)
def test_bad_items_are_400(backend, kind, params, status):
    sid = backend.create_service("t", {"name": "svc"}).id
    assert status_of(backend.create_item, "t", sid, "1", kind, params) == status


def test_duplicate_names_are_409(backend):
    sid = backend.create_service("t", {"name": "svc"}).id
    backend.create_item("t", sid, "1", DOMAIN, {"name": "a.example.com"})
    backend.create_item("t", sid, "1", DOMAIN, {"name": "b.example.com"})
    assert status_of(backend.create_item, "t", sid, "1", DOMAIN, {"name": "a.example.com"}) == 409
    rename = {"name": "b.example.com"}
    assert status_of(backend.update_item, "t", sid, "1", DOMAIN, "a.example.com", rename) == 409


def test_settings_update_and_default(backend):
    sid = backend.create_service("t", {"name": "svc"}).id
    assert views.settings_view(backend.settings("t", sid, "1")) == {
        "general.default_host": "",
        "general.default_ttl": 3600,
        "general.stale_if_error": False,
        "general.stale_if_error_ttl": 43200,
        "service_id": sid,
        "version": 1,
    }
    backend.update_settings("t", sid, "1", {"general.default_ttl": "60", "unknown": "x"})
    assert backend.settings("t", sid, "1").settings["general.default_ttl"] == 60
    assert status_of(backend.update_settings, "t", sid, "1", {"general.default_ttl": "x"}) == 400


def test_service_create_rules(backend):
    assert status_of(backend.create_service, "t", {}) == 400
    assert status_of(backend.create_service, "t", {"name": "  "}) == 400
    assert status_of(backend.create_service, "t", {"name": "a", "type": "flash"}) == 400
    # Any customer_id is taken, as Mimic took it (issue 16); the service is still the token's.
    other = backend.create_service("t", {"name": "a", "customer_id": "other"})
    assert other.customer_id == "other" and backend.service("t", other.id) is other
    own = backend.customer("t").id
    assert backend.create_service("t", {"name": "a", "customer_id": own}).customer_id == own


def test_details_show_the_active_and_the_latest_versions(backend):
    service = backend.create_service("t", {"name": "svc"})
    backend.create_item("t", service.id, "1", DOMAIN, {"name": "www.example.com"})
    backend.activate("t", service.id, "1")
    backend.create_version("t", service.id)
    detail = views.service_detail(service, service.latest_version)
    assert detail["active_version"]["number"] == 1
    assert [d["name"] for d in detail["active_version"]["domains"]] == ["www.example.com"]
    assert (detail["version"]["number"], detail["version"]["domains"]) == (2, [])
    listed = views.service_list_entry(service)
    assert listed["version"] == 1 and "publish_key" not in listed


def test_reset_forgets_everything(backend):
    backend.create_service("t", {"name": "svc"})
    backend.reset()
    assert backend.list_services("t") == []
