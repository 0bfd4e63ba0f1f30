"""Mirage REST API v2: delay policies, the tracker and resets (the HTTP edge only).

Delay policies live in the Host header's namespace, as scenarios do: ``name`` is this
host's policy, ``host:name`` another host's. Errors use the v2 envelope of ``api_v2``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulacra import __version__
from simulacra.errors import Invalid, NotFound, shown
from simulacra.models import (
    DelayPolicyDocument,
    DelayPolicyReply,
    DelayPolicyView,
    Message,
    ResetDone,
    TrackerPage,
    TrackerQuery,
    TrackerRecord,
    plain,
)
from simulacra.openapi import Reply
from simulacra.virtual.api_v2 import VERSION_HEADER, endpoint, envelope, service
from simulacra.virtual.delays import DelayPolicy, parse_policy, split_name
from simulacra.virtual.tracker import paging, parse_paging, parse_query
from simulacra.virtual.tracking import Tracker
from simulacra.web import json_response, operation, request_host

POLICY_OBJECTS = "/api/v2/delay-policy/objects/"


def display_name(policy: DelayPolicy, host: str) -> str:
    """The name that finds the policy again from this host: bare here, ``host:name`` else."""
    return policy.name if policy.host == host else f"{policy.host}:{policy.name}"


def policy_view(policy: DelayPolicy, host: str) -> dict[str, object]:
    name = display_name(policy, host)
    return {**policy.document(), "name": name, "delayPolicyRef": POLICY_OBJECTS + name}


def path_policy(request: Request) -> tuple[str, str]:
    """(host, name) from the path; a name no policy can have is simply not found."""
    raw = request.path_params["name"]
    try:
        return split_name(raw, request_host(request))
    except Invalid:
        raise NotFound(f"Delay policy {shown(raw)} not found") from None


def tracker(request: Request) -> Tracker:
    return request.app.state.tracker


# delay policies --------------------------------------------------------------


_POLICY_LINKS = {
    target: {"name": "$response.body#/data/name"}
    for target in ("get_delay_policy", "delete_delay_policy")
}


@endpoint()
@operation(
    body=DelayPolicyDocument,
    replies={
        201: Reply(DelayPolicyReply, "Created", links=_POLICY_LINKS),
        200: Reply(DelayPolicyReply, "Replaced", links=_POLICY_LINKS),
    },
)
async def put_delay_policy(request: Request, body: DelayPolicyDocument) -> Response:
    """Create or replace a delay policy (201 new, 200 updated; 409 wrong options)."""
    host = request_host(request)
    policy = parse_policy(plain(body), host)
    created = await service(request).put_delay_policy(policy)
    status = 201 if created else 200
    name = display_name(policy, host)
    data = {
        "status": "new" if created else "updated",
        "message": "Put Delay Policy Finished",
        "name": name,
        "delay_type": policy.delay_type,
        "delayPolicyRef": POLICY_OBJECTS + name,
    }
    answer = {"version": __version__, "status_code": status, "data": data}
    return json_response(answer, status, VERSION_HEADER)


@endpoint()
@operation(replies={200: Reply(list[DelayPolicyView], enveloped=True)})
async def list_delay_policies(request: Request) -> Response:
    """List this host's delay policies with their delayPolicyRef."""
    host = request_host(request)
    return envelope([policy_view(p, host) for p in service(request).delay_policies(host)])


@endpoint()
@operation(replies={200: Reply(list[DelayPolicyView], enveloped=True)})
async def get_delay_policy(request: Request) -> Response:
    """Show one delay policy (404 when missing)."""
    policy = service(request).delay_policy(*path_policy(request))
    return envelope([policy_view(policy, request_host(request))])


@endpoint()
@operation(replies={200: Reply(Message, enveloped=True)})
async def delete_delay_policy(request: Request) -> Response:
    """Delete a delay policy (404 when missing); stubs naming it then play without delay."""
    host, name = path_policy(request)
    await service(request).delete_delay_policy(host, name)
    deleted = request.path_params["name"]
    return envelope({"message": f"Deleted 1 delay policies from [{deleted!r}]"})


# tracker ---------------------------------------------------------------------


@endpoint()
@operation(
    query=TrackerQuery,
    replies={
        200: Reply(TrackerPage, links={"tracker_record": {"id": "$response.body#/data/0/id"}})
    },
)
async def tracker_records(request: Request, query: TrackerQuery) -> Response:
    """List tracked calls newest first, paged; `q` filters (words, sc:, rt:, d:, session:)."""
    skip, page_size = parse_paging(query.skip or None, query.limit or None)
    q = query.q
    all_hosts = query.all_hosts.lower() != "false"
    parsed = parse_query(q, None if all_hosts else request_host(request))
    total, records = await tracker(request).records(parsed, skip, page_size)
    keep = {"q": q} if q else {}
    if not all_hosts:
        keep["all-hosts"] = "false"
    body = {
        "data": [r.summary() for r in records],
        "paging": paging(skip, page_size, total, keep),
    }
    return json_response(body, 200, VERSION_HEADER)


@endpoint()
@operation(replies={200: Reply(TrackerRecord)})
async def tracker_record(request: Request) -> Response:
    """Show one tracked call in full (404 when missing)."""
    raw = request.path_params["id"]
    # Ids are positive 64-bit integers; anything else cannot name a record.
    record = (
        await tracker(request).record(int(raw))
        if raw.isascii() and raw.isdigit() and len(raw) < 19
        else None
    )
    if record is None:
        raise NotFound(f"Tracker record {shown(raw)} not found")
    return json_response({"data": record.full()}, 200, VERSION_HEADER)


# reset -----------------------------------------------------------------------------


async def reset_virtual(request: Request) -> None:
    """Scenarios, stubs, sessions (their ports closed), delay policies, tracker records."""
    await tracker(request).reset()
    await service(request).reset()
    await request.app.state.ports.reconcile([])


async def reset_cloud(request: Request) -> None:
    """Tokens, users, servers, images, load balancers, Fastly services, behaviors, the clock.
    With ``--shared-cloud``, in the shared state's transaction (every instance sees it)."""
    cloud = request.app.state.cloud
    shared = request.app.state.shared

    async def reset() -> None:
        cloud.reset()

    if shared is None:
        await reset()
    else:
        await shared.run(reset)


@endpoint()
@operation(replies={200: Reply(ResetDone, enveloped=True)})
async def reset_everything(request: Request) -> Response:
    """Reset both sides: the virtual services' state and the cloud mocks' (a test's start)."""
    await reset_virtual(request)
    await reset_cloud(request)
    return envelope({"reset": ["virtual", "cloud"]})


@endpoint()
@operation(replies={200: Reply(ResetDone, enveloped=True)})
async def reset_virtual_side(request: Request) -> Response:
    """Reset the virtual services only: scenarios, stubs, sessions, delay policies, tracker."""
    await reset_virtual(request)
    return envelope({"reset": ["virtual"]})


@endpoint()
@operation(replies={200: Reply(ResetDone, enveloped=True)})
async def reset_cloud_side(request: Request) -> Response:
    """Reset the cloud mocks only: identity, compute, images, load balancers, Fastly, the
    behaviors and the virtual clock."""
    await reset_cloud(request)
    return envelope({"reset": ["cloud"]})


ROUTES = [
    Route("/api/v2/reset", reset_everything, methods=["POST"]),
    Route("/api/v2/reset/virtual", reset_virtual_side, methods=["POST"]),
    Route("/api/v2/reset/cloud", reset_cloud_side, methods=["POST"]),
    Route("/api/v2/delay-policy", put_delay_policy, methods=["PUT"]),
    Route("/api/v2/delay-policy/detail", list_delay_policies, methods=["GET"]),
    Route("/api/v2/delay-policy/objects/{name}", get_delay_policy, methods=["GET"]),
    Route("/api/v2/delay-policy/objects/{name}", delete_delay_policy, methods=["DELETE"]),
    Route("/api/v2/tracker/records", tracker_records, methods=["GET"]),
    Route("/api/v2/tracker/records/objects/{id}", tracker_record, methods=["GET"]),
]
