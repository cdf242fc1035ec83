"""Endpoints about the App itself: installations, tokens, the delivery log, repos."""

from __future__ import annotations

from typing import Any

from sandbox import delivery
from sandbox.auth import Principal
from sandbox.errors import ApiError, not_found
from sandbox.paging import Page, page
from sandbox.state import installation_app
from sandbox.world import World


def require_app(p: Principal) -> None:
    """App endpoints take only the App's JWT, as on GitHub."""
    if p.kind != "app":
        raise ApiError(
            401,
            "A JSON web token could not be decoded",
        )


def get_app(world: World, p: Principal) -> dict[str, Any]:
    if p.kind == "user":
        raise ApiError(401, "A JSON web token could not be decoded")
    with world.state.lock:
        return world.render.app(world.app(p.app_id))


def _own_installation(world: World, p: Principal, installation_id: int) -> dict[str, Any]:
    """An installation of the calling App; another App's is not found, as on GitHub."""
    inst = world.installation(installation_id)
    if installation_app(world.data, inst) is not world.app(p.app_id):
        raise not_found()
    return inst


def list_installations(world: World, p: Principal, query: dict[str, str]) -> list[Any]:
    require_app(p)
    with world.state.lock:
        app = world.app(p.app_id)
        shapes = [
            world.render.installation(i)
            for i in world.data["installations"].values()
            if installation_app(world.data, i) is app
        ]
        return page(shapes, query)


def get_installation(world: World, p: Principal, installation_id: int) -> dict[str, Any]:
    require_app(p)
    with world.state.lock:
        return world.render.installation(_own_installation(world, p, installation_id))


def create_access_token(
    world: World, p: Principal, installation_id: int, body: dict[str, Any]
) -> dict[str, Any]:
    require_app(p)
    with world.state.lock:
        _own_installation(world, p, installation_id)
    return world.mint_installation_token(installation_id, body or {})


def repo_installation(world: World, p: Principal, full: str) -> dict[str, Any]:
    require_app(p)
    with world.state.lock:
        world.repo(full)
        inst = world.installation_for_repo(full, world.app(p.app_id)["id"])
        if inst is None:
            raise not_found()
        return world.render.installation(inst)


def get_repo(world: World, p: Principal, full: str) -> dict[str, Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "metadata", "read")
        level = None
        if p.kind == "user":
            level = world.role_of(p.login, full)
        elif p.kind == "installation":
            level = "write"
        return world.render.repo(repo, permissions_for=level)


def installation_repositories(world: World, p: Principal, query: dict[str, str]) -> dict[str, Any]:
    if p.kind != "installation":
        raise ApiError(403, "Resource not accessible by integration")
    with world.state.lock:
        inst = world.installation(p.installation_id or 0)
        names = [f for f in inst["repos"] if p.repos is None or f in p.repos]
        shapes = [world.render.repo(world.data["repos"][f]) for f in names]
        return {
            "total_count": len(shapes),
            "repository_selection": "selected",
            "repositories": page(shapes, query),
        }


def authenticated_user(world: World, p: Principal) -> dict[str, Any]:
    """`GET /user`: the account behind a user's token."""
    if p.kind != "user":
        raise ApiError(403, "Resource not accessible by integration")
    with world.state.lock:
        return world.render.private_user(p.login)


def _require_user_token(p: Principal) -> None:
    if p.kind != "user" or not p.via_app:
        raise ApiError(
            403,
            "You must authenticate with an access token authorized to a GitHub App "
            "in order to list installations",
        )


def _user_repos(world: World, login: str, inst: dict[str, Any]) -> list[str]:
    """The repositories of an installation the user has explicit access to."""
    return [f for f in inst["repos"] if world.explicit_role(login, f) is not None]


def user_installations(world: World, p: Principal, query: dict[str, str]) -> dict[str, Any]:
    """`GET /user/installations`: the App's installations the user can reach a repo of."""
    _require_user_token(p)
    with world.state.lock:
        app = world.app(p.app_id)
        found = [
            world.render.installation(inst)
            for inst in world.data["installations"].values()
            if installation_app(world.data, inst) is app and _user_repos(world, p.login, inst)
        ]
        return {"total_count": len(found), "installations": page(found, query)}


def user_installation_repositories(
    world: World, p: Principal, installation_id: int, query: dict[str, str]
) -> dict[str, Any]:
    """`GET /user/installations/{id}/repositories`, each with the user's `permissions`."""
    _require_user_token(p)
    with world.state.lock:
        inst = world.installation(installation_id)
        if installation_app(world.data, inst) is not world.app(p.app_id):
            raise not_found()
        names = _user_repos(world, p.login, inst)
        if not names:
            raise not_found()
        shapes = [
            world.render.repo(world.data["repos"][f], permissions_for=world.role_of(p.login, f))
            for f in names
        ]
        return {
            "total_count": len(shapes),
            "repository_selection": "selected",
            "repositories": page(shapes, query),
        }


def list_deliveries(world: World, p: Principal, query: dict[str, str]) -> list[Any]:
    """Newest first, as GitHub lists them, paged by `cursor` (the last id seen)."""
    require_app(p)
    with world.state.lock:
        app_id = world.app(p.app_id)["id"]
        records = [r for r in reversed(world.data["deliveries"]) if r.get("app_id") == app_id]
        per_page = max(1, min(100, int(query.get("per_page", 30))))
        if query.get("cursor"):
            cursor = int(query["cursor"])
            records = [r for r in records if r["id"] < cursor]
        chosen = records[:per_page]
        more = len(records) > per_page
        next_query = {"per_page": str(per_page), "cursor": str(chosen[-1]["id"])} if more else None
        return Page([delivery.listing(r) for r in chosen], next_query)


def _delivery(world: World, p: Principal, delivery_id: int) -> dict[str, Any]:
    """One delivery of the calling App's hook."""
    app_id = world.app(p.app_id)["id"]
    for record in world.data["deliveries"]:
        if record["id"] == delivery_id and record.get("app_id") == app_id:
            return record
    raise not_found()


def get_delivery(world: World, p: Principal, delivery_id: int) -> dict[str, Any]:
    require_app(p)
    with world.state.lock:
        return delivery.detail(_delivery(world, p, delivery_id))


def redeliver(world: World, p: Principal, delivery_id: int) -> dict[str, Any]:
    """Queue the same payload again, under the same GUID, marked as a redelivery."""
    require_app(p)
    with world.state.lock:
        record = _delivery(world, p, delivery_id)
        world.deliverer.enqueue(
            record["event"],
            record["request"]["payload"],
            guid=record["guid"],
            redelivery=True,
            app_id=record.get("app_id"),
        )
        return {}
