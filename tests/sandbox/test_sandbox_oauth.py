"""The sandbox's OAuth web flow for the App's client, and what a user's token may do.

githubkit's own OAuth web flow strategy exchanges the code and refreshes the
token, and its typed models parse `GET /user` and the user's installations and
repositories: a client that works here works against GitHub. The refusals are
GitHub's: a single-use code, the client's secret, the registered callback URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from githubkit import GitHub, OAuthTokenAuthStrategy, OAuthWebAuthStrategy, TokenAuthStrategy
from githubkit.exception import AuthExpiredError, RequestFailed
from githubkit_schemas.latest.models import PrivateUser
from sandbox_helpers import NAME, OWNER, REPO

from sandbox.control import SandboxControl
from sandbox.server import SandboxServer

CALLBACK = "http://127.0.0.1:9/auth/callback"  # never contacted: the redirect is read, not followed
SECRET_REPO = f"{OWNER}/secret"
OUTSIDE_REPO = "elsewhere/notes"  # the App is not installed there


@pytest.fixture(scope="module")
def users(sandbox: SandboxServer, control: SandboxControl) -> dict[str, str]:
    """dana reads the private lab/secret only; erin is a user with no grants at all."""
    control.set_callback_urls([CALLBACK])
    sandbox.create_repo(SECRET_REPO, files={"README.md": "# secret\n"}, private=True)
    sandbox.create_repo(OUTSIDE_REPO, files={"README.md": "# notes\n"}, install=False)
    dana = control.add_user("dana")
    erin = control.add_user("erin")
    control.set_collaborator(SECRET_REPO, "dana", "read")
    control.set_collaborator(OUTSIDE_REPO, "dana", "admin")
    return {"dana": dana["token"], "erin": erin["token"]}


@pytest.fixture
def web(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=30, follow_redirects=False) as client:
        yield client


def _authorize(web: httpx.Client, sandbox: SandboxServer, login: str, state: str = "s1") -> str:
    """Sign in on the sandbox's page as `login`; the code it sends back."""
    query = {"client_id": sandbox.client_id, "redirect_uri": CALLBACK, "state": state}
    page = web.get("/login/oauth/authorize", params=query)
    assert page.status_code == 200 and 'name="login"' in page.text
    answer = web.post(
        "/login/oauth/authorize", data={**query, "login": login, "action": "authorize"}
    )
    assert answer.status_code == 302
    target = urlsplit(answer.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == CALLBACK
    params = parse_qs(target.query)
    assert params["state"] == [state]
    return params["code"][0]


def _exchange(web: httpx.Client, sandbox: SandboxServer, **fields: str) -> dict[str, Any]:
    body = {"client_id": sandbox.client_id, "client_secret": sandbox.client_secret, **fields}
    answer = web.post(
        "/login/oauth/access_token", json=body, headers={"Accept": "application/json"}
    )
    assert answer.status_code == 200  # GitHub answers its OAuth errors with 200 too
    return answer.json()


def test_githubkit_signs_a_user_in_and_reads_what_the_user_can_reach(
    sandbox: SandboxServer, users: dict[str, str], web: httpx.Client
) -> None:
    code = _authorize(web, sandbox, "dana")
    strategy = OAuthWebAuthStrategy(sandbox.client_id, sandbox.client_secret, code, CALLBACK)
    gh = GitHub(strategy, base_url=sandbox.url)
    me = gh.rest.users.get_authenticated().parsed_data
    assert isinstance(me, PrivateUser) and me.login == "dana"
    assert strategy.token.startswith("ghu_") and (strategy.refresh_token or "").startswith("ghr_")
    assert strategy.expire_time is not None

    installations = gh.rest.apps.list_installations_for_authenticated_user().parsed_data
    assert [i.account.login for i in installations.installations] == [OWNER]  # type: ignore[union-attr]
    listed = gh.rest.apps.list_installation_repos_for_authenticated_user(
        installations.installations[0].id
    ).parsed_data
    # Explicit access only: the public lab/charlm is readable by anyone, but not listed.
    assert [(r.full_name, r.private) for r in listed.repositories] == [(SECRET_REPO, True)]
    perms = listed.repositories[0].permissions
    assert perms is not None and (perms.pull, perms.push, perms.admin) == (True, False, False)

    secret = gh.rest.repos.get(OWNER, "secret").parsed_data
    assert secret.visibility == "private"
    # A user access token reaches only repositories the App is installed on.
    with pytest.raises(RequestFailed) as outside:
        gh.rest.repos.get(*OUTSIDE_REPO.split("/"))
    assert outside.value.response.status_code == 404


def test_the_installation_sees_each_users_role_per_repository(
    gh: GitHub[Any], users: dict[str, str]
) -> None:
    """What the bot asks to decide who may read a lab (the collaborator permission API)."""
    expected = {("dana", "secret"): "read", ("erin", "secret"): "none", ("erin", NAME): "read"}
    for (login, name), level in expected.items():
        perm = gh.rest.repos.get_collaborator_permission_level(OWNER, name, login).parsed_data
        assert (perm.permission, perm.user and perm.user.login) == (level, login)


def test_a_refresh_token_renews_the_user_token_once(
    sandbox: SandboxServer, users: dict[str, str], web: httpx.Client
) -> None:
    code = _authorize(web, sandbox, "dana")
    gh = GitHub(base_url=sandbox.url)  # unauthenticated: the OAuth endpoints need no token
    strategy = OAuthWebAuthStrategy(sandbox.client_id, sandbox.client_secret, code, CALLBACK)
    token_auth = strategy.exchange_token(gh)
    first, refresh = token_auth.token, token_auth.refresh_token
    token_auth.refresh(gh)
    assert token_auth.token != first and token_auth.refresh_token != refresh
    renewed = GitHub(TokenAuthStrategy(str(token_auth.token)), base_url=sandbox.url)
    assert renewed.rest.users.get_authenticated().parsed_data.login == "dana"
    used = OAuthTokenAuthStrategy(
        sandbox.client_id, sandbox.client_secret, refresh_token=str(refresh)
    )
    with pytest.raises(AuthExpiredError):
        used.refresh(gh)  # a refresh token works once
    again = _exchange(web, sandbox, grant_type="refresh_token", refresh_token=str(refresh))
    assert again["error"] == "bad_refresh_token"


def test_a_code_is_single_use_bound_to_its_client_and_redirect(
    sandbox: SandboxServer, users: dict[str, str], web: httpx.Client
) -> None:
    code = _authorize(web, sandbox, "erin")
    wrong_secret = _exchange(web, sandbox, code=code, client_secret="not-the-secret")
    assert wrong_secret["error"] == "incorrect_client_credentials"
    code = _authorize(web, sandbox, "erin")
    moved = _exchange(web, sandbox, code=code, redirect_uri="http://127.0.0.1:9/elsewhere")
    assert moved["error"] == "redirect_uri_mismatch"
    code = _authorize(web, sandbox, "erin")
    # Without Accept: application/json GitHub answers form-encoded.
    form = web.post(
        "/login/oauth/access_token",
        data={
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "code": code,
        },
    )
    assert form.headers["content-type"].startswith("application/x-www-form-urlencoded")
    granted = parse_qs(form.text)
    assert granted["access_token"][0].startswith("ghu_") and granted["expires_in"] == ["28800"]
    replay = _exchange(web, sandbox, code=code)
    assert replay["error"] == "bad_verification_code"
    assert _exchange(web, sandbox, code="0" * 20)["error"] == "bad_verification_code"


def test_the_authorize_page_refuses_what_github_refuses(
    sandbox: SandboxServer, users: dict[str, str], web: httpx.Client
) -> None:
    query = {"client_id": sandbox.client_id, "redirect_uri": CALLBACK}
    unknown = web.get("/login/oauth/authorize", params={**query, "client_id": "Iv1.nope"})
    assert unknown.status_code == 404
    # A redirect_uri that is not registered goes back to the registered callback, never there.
    foreign = web.get(
        "/login/oauth/authorize",
        params={**query, "redirect_uri": "https://attacker.example/cb", "state": "x"},
    )
    assert foreign.status_code == 302
    location = foreign.headers["location"]
    assert location.startswith(CALLBACK + "?") and "error=redirect_uri_mismatch" in location
    cancelled = web.post("/login/oauth/authorize", data={**query, "state": "c", "action": "cancel"})
    assert parse_qs(urlsplit(cancelled.headers["location"]).query)["error"] == ["access_denied"]
    stranger = web.post(
        "/login/oauth/authorize", data={**query, "login": "nobody", "action": "authorize"}
    )
    assert stranger.status_code == 401
    # Hostile state: echoed into the form's hidden field, so it must come back escaped.
    hostile = web.get("/login/oauth/authorize", params={**query, "state": '"><script>x</script>'})
    assert "<script>x</script>" not in hostile.text and "&lt;script&gt;" in hostile.text


def test_user_tokens_expire_and_personal_tokens_cannot_list_installations(
    sandbox: SandboxServer, users: dict[str, str], control: SandboxControl, web: httpx.Client
) -> None:
    token = _exchange(web, sandbox, code=_authorize(web, sandbox, "erin"))["access_token"]
    user = GitHub(TokenAuthStrategy(token), base_url=sandbox.url)
    assert user.rest.users.get_authenticated().parsed_data.login == "erin"
    personal = GitHub(TokenAuthStrategy(users["erin"]), base_url=sandbox.url)
    with pytest.raises(RequestFailed) as refused:
        personal.rest.apps.list_installations_for_authenticated_user()
    assert refused.value.response.status_code == 403
    # erin has no explicit access anywhere: no installation lists her.
    assert user.rest.apps.list_installations_for_authenticated_user().parsed_data.total_count == 0
    with pytest.raises(RequestFailed) as private:
        user.rest.repos.get(OWNER, "secret")
    assert private.value.response.status_code == 404  # a private repo does not exist for her
    control.expire_token(token)
    with pytest.raises(RequestFailed) as expired:
        user.rest.users.get_authenticated()
    assert expired.value.response.status_code == 401


def test_an_installation_token_is_not_a_user(gh: GitHub[Any]) -> None:
    with pytest.raises(RequestFailed) as refused:
        gh.rest.users.get_authenticated()
    assert refused.value.response.status_code == 403


def test_the_public_repo_stays_readable_by_everyone(
    sandbox: SandboxServer, users: dict[str, str]
) -> None:
    erin = GitHub(TokenAuthStrategy(users["erin"]), base_url=sandbox.url)
    repo = erin.rest.repos.get(OWNER, NAME).parsed_data
    assert repo.full_name == REPO and repo.private is False
    assert repo.permissions is not None and repo.permissions.pull and not repo.permissions.push
