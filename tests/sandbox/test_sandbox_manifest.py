"""The sandbox's App-from-manifest flow and installation page, over HTTP.

A second App is registered beside the default one (which stays installed on
lab/charlm and keeps its webhook receiver): the manifest kohai prints, the
confirmation, GitHub's redirect with a one-time code, the conversion (parsed
by githubkit's own model), then the install page. Each App authenticates with
its own key, sees only its own installations and deliveries, and receives
only its own events, signed with its own secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from githubkit import AppAuthStrategy, GitHub
from githubkit.exception import RequestFailed
from sandbox_helpers import REPO, Receiver

from bot.deploy import app_manifest
from sandbox.control import SandboxControl
from sandbox.server import SandboxServer

CALLBACK = "http://127.0.0.1:9/setup/callback"


@pytest.fixture(scope="module")
def lab_hook() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def web(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, follow_redirects=False) as client:
        yield client


def manifest_for(hook: str, name: str = "kohai lab") -> dict[str, Any]:
    manifest = app_manifest("http://127.0.0.1:9", name)
    manifest["hook_attributes"]["url"] = hook
    manifest["redirect_url"] = CALLBACK
    return manifest


def register(
    web: httpx.Client, manifest: dict[str, Any], *, org: str | None = None, login: str = "alice"
) -> httpx.Response:
    """What a browser does: post the manifest, then confirm on the sandbox's page."""
    path = f"/organizations/{org}/settings/apps/new" if org else "/settings/apps/new"
    shown = web.post(f"{path}?state=s1", data={"manifest": json.dumps(manifest)})
    assert shown.status_code == 200, shown.text
    assert 'id="create"' in shown.text
    return web.post(
        path,
        data={
            "manifest": json.dumps(manifest),
            "state": "s1",
            "confirm": "1",
            "name": manifest["name"],
            "login": login,
        },
    )


def code_of(answer: httpx.Response) -> str:
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["s1"]
    return query["code"][0]


def gh_permission(url: str, app: GitHub[Any], installation_id: int, repo: str, login: str) -> str:
    """A user's permission on a repo, asked with an installation token of `app`."""
    token = app.rest.apps.create_installation_access_token(installation_id).parsed_data.token
    client = GitHub(token, base_url=url)
    owner, name = repo.split("/")
    answer = client.rest.repos.get_collaborator_permission_level(owner, name, login)
    return str(answer.parsed_data.permission)


def convert(sandbox: SandboxServer, code: str) -> Any:
    """The conversion as a client makes it: no credentials, githubkit's model."""
    anonymous = GitHub(base_url=sandbox.url)
    return anonymous.rest.apps.create_from_manifest(code).parsed_data


@pytest.fixture(scope="module")
def lab_app(sandbox: SandboxServer, web: httpx.Client, lab_hook: Receiver) -> Any:
    """The App registered from kohai's manifest, as githubkit parses the conversion."""
    code = code_of(register(web, manifest_for(lab_hook.url)))
    converted = convert(sandbox, code)
    # One use: the same code again is GitHub's 404.
    assert web.post(f"/app-manifests/{code}/conversions").status_code == 404
    return converted


def test_the_conversion_answers_every_credential(lab_app: Any, sandbox: SandboxServer) -> None:
    assert lab_app.slug == "kohai-lab" and lab_app.name == "kohai lab"
    assert lab_app.id != sandbox.app_id
    assert lab_app.client_id.startswith("Iv1.") and lab_app.client_secret
    assert lab_app.webhook_secret and "BEGIN RSA PRIVATE KEY" in lab_app.pem
    assert lab_app.owner.login == "alice"  # type: ignore[union-attr]
    assert lab_app.permissions.issues == "write"
    assert "issue_comment" in lab_app.events and "installation" not in lab_app.events


def test_each_app_authenticates_with_its_own_key(lab_app: Any, sandbox: SandboxServer) -> None:
    lab = GitHub(AppAuthStrategy(lab_app.id, lab_app.pem), base_url=sandbox.url)
    assert getattr(lab.rest.apps.get_authenticated().parsed_data, "slug", None) == "kohai-lab"
    default = GitHub(AppAuthStrategy(sandbox.app_id, sandbox.private_key_pem), base_url=sandbox.url)
    assert getattr(default.rest.apps.get_authenticated().parsed_data, "slug", None) == "kohai"
    # A JWT naming the new App but signed with the default App's key is refused.
    # (Made by hand: githubkit caches JWTs by App id, and would send the good one.)
    now = int(time.time())
    claims = {"iat": now - 30, "exp": now + 300, "iss": str(lab_app.id)}
    forged = jwt.encode(claims, sandbox.private_key_pem, algorithm="RS256")
    answer = httpx.get(sandbox.url + "/app", headers={"authorization": f"Bearer {forged}"})
    assert answer.status_code == 401


def test_installing_sends_the_installation_webhook_to_the_new_app_only(
    lab_app: Any,
    sandbox: SandboxServer,
    web: httpx.Client,
    lab_hook: Receiver,
    receiver: Receiver,
    control: SandboxControl,
) -> None:
    control.deliveries()
    # GitHub pings a new App's hook when it is created.
    [ping] = lab_hook.events("ping")
    assert ping["hook"]["app_id"] == lab_app.id
    sandbox.create_repo("lab/other", install=False)
    page = web.get(f"/apps/{lab_app.slug}/installations/new")
    assert page.status_code == 200 and 'value="lab/other"' in page.text
    done = web.post(
        f"/apps/{lab_app.slug}/installations/new",
        data={"login": "alice", "repository": ["lab/other", REPO]},
    )
    assert done.status_code == 302  # to the manifest's setup_url, as GitHub does
    assert "setup_action=install" in done.headers["location"]
    control.deliveries()  # waits until every queued delivery went out
    created = lab_hook.events("installation", "created")
    assert [r["full_name"] for r in created[0]["repositories"]] == ["lab/other", REPO]
    assert created[0]["installation"]["app_slug"] == "kohai-lab"
    item = next(i for i in lab_hook.received if i["headers"]["X-GitHub-Event"] == "installation")
    expected = hmac.new(lab_app.webhook_secret.encode(), item["body"], hashlib.sha256)
    assert item["headers"]["X-Hub-Signature-256"] == "sha256=" + expected.hexdigest()
    # Not to the default App's hook (which got only its own installation, at the start).
    default_seen = receiver.events("installation", "created")
    assert [e["installation"]["app_slug"] for e in default_seen] == ["kohai"]

    lab = GitHub(AppAuthStrategy(lab_app.id, lab_app.pem), base_url=sandbox.url)
    mine = lab.rest.apps.list_installations().parsed_data
    assert [i.app_slug for i in mine] == ["kohai-lab"]
    default = GitHub(AppAuthStrategy(sandbox.app_id, sandbox.private_key_pem), base_url=sandbox.url)
    theirs = default.rest.apps.list_installations().parsed_data
    assert [i.app_slug for i in theirs] == ["kohai"]
    # Another App's installation is not found, and no token is minted for it.
    with pytest.raises(RequestFailed) as refused:
        lab.rest.apps.create_installation_access_token(theirs[0].id)
    assert refused.value.response.status_code == 404
    assert lab.rest.apps.get_repo_installation("lab", "charlm").parsed_data.id == mine[0].id

    # The new App writes as its own bot; an event on a repo both Apps are installed on
    # reaches both, each with its own installation.
    token = lab.rest.apps.create_installation_access_token(mine[0].id).parsed_data.token
    as_installation = GitHub(token, base_url=sandbox.url)
    issue = as_installation.rest.issues.create("lab", "charlm", title="hi")
    assert issue.parsed_data.user.login == "kohai-lab[bot]"  # type: ignore[union-attr]
    control.deliveries()
    [to_lab] = [e for e in lab_hook.events("issues", "opened") if e["issue"]["title"] == "hi"]
    [to_default] = [e for e in receiver.events("issues", "opened") if e["issue"]["title"] == "hi"]
    assert to_lab["installation"]["id"] == mine[0].id
    assert to_default["installation"]["id"] == theirs[0].id
    # Each App's bot has write access where its App is installed, and only there.
    other_bot = gh_permission(sandbox.url, lab, mine[0].id, "lab/other", "kohai[bot]")
    assert other_bot == "none"  # the default App is not installed on lab/other
    assert gh_permission(sandbox.url, lab, mine[0].id, "lab/other", "kohai-lab[bot]") == "write"
    # Each App's delivery log lists its own deliveries only.
    lab_log = lab.rest.apps.list_webhook_deliveries().parsed_data
    assert {(d.event, d.installation_id) for d in lab_log} == {
        ("ping", None),
        ("installation", mine[0].id),
        ("issues", mine[0].id),
    }


def test_the_control_api_lists_the_registered_apps(lab_app: Any, control: SandboxControl) -> None:
    [listed] = [a for a in control.info()["apps"] if a["id"] == lab_app.id]
    assert (listed["slug"], listed["bot_login"]) == ("kohai-lab", "kohai-lab[bot]")
    assert "pem" not in listed and "private_key_pem" not in listed


def test_refused_manifests_name_what_is_wrong(web: httpx.Client, lab_hook: Receiver) -> None:
    # Every App receives installation events; GitHub refuses a manifest that asks.
    asking = manifest_for(lab_hook.url, "asks for installation")
    asking["default_events"] = [*asking["default_events"], "installation"]
    answer = web.post("/settings/apps/new", data={"manifest": json.dumps(asking)})
    assert answer.status_code == 422 and "installation" in answer.text
    no_hook = manifest_for(lab_hook.url, "no hook")
    no_hook["hook_attributes"] = {"url": "javascript:alert(1)"}
    answer = web.post("/settings/apps/new", data={"manifest": json.dumps(no_hook)})
    assert answer.status_code == 422 and "hook_attributes.url" in answer.text
    answer = web.post("/settings/apps/new", data={"manifest": "{not json"})
    assert answer.status_code == 422 and "JSON object" in answer.text
    # The names are GitHub's namespace: the default App already holds "kohai".
    taken = register(web, manifest_for(lab_hook.url, "Kohai"))
    assert taken.status_code == 422 and "already in use" in taken.text
    # Markup in a name is shown as text, never run.
    shown = web.post(
        "/settings/apps/new",
        data={"manifest": json.dumps(manifest_for(lab_hook.url, "<script>x</script>"))},
    )
    assert "<script>x</script>" not in shown.text and "&lt;script&gt;" in shown.text


def test_an_organisation_app_and_who_may_create_and_install(
    sandbox: SandboxServer, web: httpx.Client, lab_hook: Receiver
) -> None:
    code = code_of(register(web, manifest_for(lab_hook.url, "lab bot"), org="lab"))
    converted = convert(sandbox, code)
    assert converted.owner.login == "lab"  # type: ignore[union-attr]
    nowhere = register(web, manifest_for(lab_hook.url, "ghost bot"), org="ghost")
    assert nowhere.status_code == 403 and "No organisation named ghost" in nowhere.text
    not_owner = register(web, manifest_for(lab_hook.url, "carol bot"), org="lab", login="carol")
    assert not_owner.status_code == 403
    # carol reads lab/charlm but does not administer it: no install for her.
    refused = web.post(
        "/apps/lab-bot/installations/new", data={"login": "carol", "repository": REPO}
    )
    assert refused.status_code == 403


def test_an_expired_code_converts_to_nothing(
    sandbox: SandboxServer, web: httpx.Client, lab_hook: Receiver
) -> None:
    code = code_of(register(web, manifest_for(lab_hook.url, "late bot")))
    with sandbox.world.changing():
        sandbox.world.data["manifest_codes"][code]["expires_at"] = 0.0
    assert web.post(f"/app-manifests/{code}/conversions").status_code == 404
