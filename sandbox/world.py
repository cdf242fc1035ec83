"""The sandbox's GitHub: accounts, the App, installations, repos and tokens.

`World` owns the state and the delivery queue; the issue, pull request and git
operations live in their own modules and act on a `World`. Every operation
runs under the state's lock, so webhooks are queued in the order the changes
happened, and saves the state before it returns.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox import auth, events, gitrepo
from sandbox.delivery import Deliverer
from sandbox.errors import ApiError, not_found
from sandbox.limits import Limits
from sandbox.render import Renderer, node_id
from sandbox.state import (
    APP_SLUG,
    BOT_USER_ID,
    USERS,
    State,
    all_apps,
    app_record,
    installation_app,
    now_iso,
)

ADMIN_LOGIN = "alice"


class World:
    """Everything behind the sandbox's API, independent of HTTP."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.state = State(data_dir)
        self.base_url = "http://127.0.0.1"
        self.deliverer = Deliverer(self.state, on_change=self.state.save)
        self.faults: dict[str, Any] = {"count": 0, "kind": "502", "retry_after": 1}
        self.limits = Limits()  # GitHub's rate limits and the record of every API request
        self._bootstrap()

    # -- plumbing ------------------------------------------------------------------

    @property
    def data(self) -> dict[str, Any]:
        return self.state.data

    @property
    def render(self) -> Renderer:
        return Renderer(self.base_url, self.state.data)

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Hold the lock for one operation and save what it changed."""
        with self.state.lock:
            yield
            self.state.save()

    def emit(self, event: str, payload: dict[str, Any], *, app_id: int | None = None) -> None:
        """Deliver one event to every App it concerns, as GitHub does.

        An installation event goes to its installation's App. A repository event goes
        to each App installed on the repository, with that App's installation in the
        payload; `app_id` names the App of an event about no installation (a ping).
        """
        inst = payload.get("installation") or {}
        repo = (payload.get("repository") or {}).get("full_name")
        if repo and "app_id" not in inst:
            targets = [i for i in self.data["installations"].values() if repo in i["repos"]]
            for target in targets or [None]:
                copy = payload
                if target is not None and target["id"] != inst.get("id"):
                    copy = {**payload, "installation": {**inst, "id": target["id"]}}
                    copy["installation"]["node_id"] = node_id("Installation", target["id"])
                app = installation_app(self.data, target) if target else self.data["app"]
                self.deliverer.enqueue(event, copy, app_id=app["id"])
            return
        if "app_id" in inst:
            app_id = inst["app_id"]
        self.deliverer.enqueue(event, payload, app_id=app_id)

    def repos_dir(self) -> Path:
        return self.dir / "repos"

    def repo_path(self, full_name: str) -> Path:
        return self.repos_dir() / f"{full_name}.git"

    @property
    def bot_login(self) -> str:
        return str(self.data["app"]["bot_login"])

    @property
    def private_key_path(self) -> Path:
        return self.dir / "app-private-key.pem"

    # -- first start -------------------------------------------------------------

    def _bootstrap(self) -> None:
        """Create the App, its key, the users and their tokens once; keep them after."""
        with self.changing():
            app = self.data["app"]
            if not app["id"]:
                app.update(
                    {
                        # Unique per sandbox, as on GitHub: clients cache JWTs and
                        # tokens by App and installation id across instances.
                        "id": 100_000 + secrets.randbelow(900_000),
                        "slug": APP_SLUG,
                        "owner": ADMIN_LOGIN,
                        "created_at": now_iso(),
                        "webhook_secret": secrets.token_hex(20),
                        "hook_id": 400_001,
                        "bot_login": f"{APP_SLUG}[bot]",
                        "private_key_pem": auth.generate_private_key_pem(),
                        "permissions": dict(auth.INSTALLATION_PERMISSIONS),
                    }
                )
            # The App's OAuth client (its client id is derived from the App id); a
            # state saved before the sandbox had one gets its secret on the next start.
            app.setdefault("client_secret", secrets.token_hex(20))
            app.setdefault("callback_urls", [])
            self.data.setdefault("oauth_codes", {})
            self.data.setdefault("apps", {})
            self.data.setdefault("refresh_tokens", {})
            for login, user_id, role in USERS:
                if login not in self.data["users"]:
                    self._add_user(login, user_id, role)
            bot = app["bot_login"]
            self.data["users"].setdefault(
                bot,
                {
                    "id": BOT_USER_ID,
                    "type": "Bot",
                    "role": None,
                    "email": f"{BOT_USER_ID}+{bot}@users.noreply.sandbox",
                },
            )
            self.dir.mkdir(parents=True, exist_ok=True)
            if not self.private_key_path.exists():
                self.private_key_path.write_text(app["private_key_pem"])
                self.private_key_path.chmod(0o600)

    def _add_user(self, login: str, user_id: int, role: str | None) -> dict[str, Any]:
        token = auth.new_token("ghp_")
        record = {
            "id": user_id,
            "type": "User",
            "role": role,
            "email": f"{login}@users.noreply.sandbox",
            "token": token,
            "created_at": now_iso(),
        }
        self.data["users"][login] = record
        self.data["tokens"][token] = {"kind": "user", "login": login}
        return record

    def create_user(self, login: str, role: str | None = None) -> dict[str, Any]:
        """A new human account; `role` is its permission on every repository (None: only
        what a repository grants it as a collaborator, and read on public ones)."""
        if not login or not all(c.isalnum() or c == "-" for c in login) or len(login) > 39:
            raise ApiError(422, f"Invalid login: {login!r}")
        if role is not None and role not in auth.LEVELS:
            raise ApiError(422, f"Invalid role: {role!r}")
        with self.changing():
            if login in self.data["users"]:
                raise ApiError(422, f"Login {login} is already taken")
            record = self._add_user(login, self.state.next_id("user", start=2001), role)
            return {"login": login, "id": record["id"], "role": role, "token": record["token"]}

    def set_collaborator(self, full_name: str, login: str, permission: str) -> None:
        """Grant `login` a role on one repository (`none` removes it)."""
        if permission not in auth.LEVELS:
            raise ApiError(422, f"Invalid permission: {permission!r}")
        with self.changing():
            repo = self.repo(full_name)
            user = self.data["users"].get(login)
            if user is None or user["type"] != "User":
                raise not_found()
            collaborators = repo.setdefault("collaborators", {})
            if permission == "none":
                collaborators.pop(login, None)
            else:
                collaborators[login] = permission

    def ensure_account(self, login: str) -> None:
        """An unknown repo owner becomes an organisation account."""
        if login not in self.data["users"]:
            self.data["users"][login] = {
                "id": self.state.next_id("org", start=5001),
                "type": "Organization",
                "role": None,
                "email": None,
            }

    # -- repositories ---------------------------------------------------------------

    def create_repo(
        self,
        full_name: str,
        *,
        from_path: Path | None = None,
        files: dict[str, str] | None = None,
        install: bool = True,
        private: bool = False,
    ) -> dict[str, Any]:
        """Create a repo with one initial commit on `main` (idempotent), install the App."""
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ApiError(422, f"Invalid repository name: {full_name}")
        with self.changing():
            if full_name not in self.data["repos"]:
                self.ensure_account(owner)
                path = self.repo_path(full_name)
                gitrepo.init_bare(path)
                if from_path is not None:
                    tree = gitrepo.write_tree_from_dir(path, from_path)
                else:
                    contents = files or {"README.md": f"# {name}\n"}
                    tree = gitrepo.write_tree_from_files(
                        path, {key: value.encode() for key, value in contents.items()}
                    )
                stamp = now_iso()
                who = gitrepo.Signature(
                    ADMIN_LOGIN, self.data["users"][ADMIN_LOGIN]["email"], stamp
                )
                sha = gitrepo.commit_tree(path, tree, [], "Initial commit\n", who)
                gitrepo.update_ref(path, "refs/heads/main", sha)
                self.data["repos"][full_name] = {
                    "id": self.state.next_id("repo", start=700_001),
                    "name": name,
                    "owner": owner,
                    "full_name": full_name,
                    "default_branch": "main",
                    "private": bool(private),
                    "collaborators": {},
                    "description": None,
                    "created_at": stamp,
                    "pushed_at": stamp,
                    "labels": {},
                    "issues": {},
                    "comments": {},
                }
            if install:
                self.install(full_name)
            return self.render.repo(self.data["repos"][full_name])

    def repo(self, full_name: str) -> dict[str, Any]:
        repo = self.data["repos"].get(full_name)
        if repo is None:
            raise not_found()
        return repo

    # -- the App and its installations ------------------------------------------------

    def app(self, app_id: int | None = None) -> dict[str, Any]:
        """The default App (None) or one registered through the manifest flow."""
        found = app_record(self.data, app_id)
        if found is None:
            raise not_found()
        return found

    def installation_for_repo(
        self, full_name: str, app_id: int | None = None
    ) -> dict[str, Any] | None:
        """The installation covering a repo: of one App when `app_id` is given, else of any
        (events reach every App installed, see `emit`)."""
        for inst in self.data["installations"].values():
            if full_name not in inst["repos"]:
                continue
            if app_id is None or installation_app(self.data, inst)["id"] == int(app_id):
                return inst
        return None

    def installation(self, installation_id: int) -> dict[str, Any]:
        inst = self.data["installations"].get(str(installation_id))
        if inst is None:
            raise not_found()
        return inst

    def install(
        self, full_name: str, app_id: int | None = None, sender: str = ADMIN_LOGIN
    ) -> dict[str, Any]:
        """Install an App (the default one unless named) on a repo as `sender` would,
        emitting GitHub's events."""
        return self.install_repos([full_name], app_id, sender)

    def install_repos(
        self, full_names: list[str], app_id: int | None = None, sender: str = ADMIN_LOGIN
    ) -> dict[str, Any]:
        """Install an App on repos of one account at once: one `installation` event that
        lists them all when it is new there, else one `installation_repositories`."""
        with self.changing():
            repos = [self.repo(name) for name in full_names]
            owner = repos[0]["owner"]
            if any(repo["owner"] != owner for repo in repos):
                raise ApiError(422, "One installation covers the repositories of one account")
            app = self.app(app_id)
            inst = next(
                (
                    i
                    for i in self.data["installations"].values()
                    if i["account"] == owner and installation_app(self.data, i) is app
                ),
                None,
            )
            if inst is None:
                inst_id = self.state.next_id(
                    "installation", start=10_000_000 + secrets.randbelow(80_000_000)
                )
                inst = {
                    "id": inst_id,
                    "account": owner,
                    "repos": list(dict.fromkeys(full_names)),
                    "permissions": dict(app["permissions"]),
                    "created_at": now_iso(),
                }
                if app is not self.data["app"]:
                    inst["app_id"] = app["id"]
                self.data["installations"][str(inst_id)] = inst
                self.emit(
                    "installation",
                    events.installation_created(self.render, inst, repos, sender),
                )
                return inst
            added = [repo for repo in repos if repo["full_name"] not in inst["repos"]]
            if added:
                inst["repos"].extend(repo["full_name"] for repo in added)
                self.emit(
                    "installation_repositories",
                    events.installation_repositories_added(self.render, inst, added, sender),
                )
            return inst

    def installation_id_of(self, full_name: str) -> int | None:
        inst = self.installation_for_repo(full_name)
        return int(inst["id"]) if inst else None

    def mint_installation_token(self, installation_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """POST /app/installations/{id}/access_tokens, narrowed as the body asks."""
        with self.changing():
            inst = self.installation(installation_id)
            permissions = auth.narrow_permissions(inst["permissions"], body.get("permissions"))
            wanted: list[str] | None = None
            names = body.get("repositories")
            ids = body.get("repository_ids")
            if names or ids:
                wanted = []
                by_id = {self.data["repos"][f]["id"]: f for f in inst["repos"]}
                for repo_name in names or []:
                    full = repo_name if "/" in repo_name else f"{inst['account']}/{repo_name}"
                    if full not in inst["repos"]:
                        raise ApiError(
                            422,
                            "There is at least one repository that does not exist or is not accessible to the parent installation.",
                        )
                    wanted.append(full)
                for repo_id in ids or []:
                    if repo_id not in by_id:
                        raise ApiError(
                            422,
                            "There is at least one repository that does not exist or is not accessible to the parent installation.",
                        )
                    wanted.append(by_id[repo_id])
            token = auth.new_token("ghs_")
            expires = time.time() + auth.TOKEN_LIFETIME_S
            self.data["tokens"][token] = {
                "kind": "installation",
                "installation_id": inst["id"],
                "expires_at": expires,
                "repos": wanted,
                "permissions": permissions,
            }
            shape: dict[str, Any] = {
                "token": token,
                "expires_at": _iso(expires),
                "permissions": permissions,
                "repository_selection": "selected",
            }
            if wanted is not None:
                shape["repositories"] = [self.render.repo(self.data["repos"][f]) for f in wanted]
            return shape

    def revoke_token(self, principal: auth.Principal) -> None:
        """DELETE /installation/token: the caller's installation token stops working now."""
        if principal.kind != "installation" or not principal.token:
            raise ApiError(403, "Resource not accessible by integration")
        with self.changing():
            self.data["tokens"].pop(principal.token, None)

    def expire_token(self, token: str) -> None:
        """Age an installation token past its expiry (for tests of expiry handling)."""
        with self.changing():
            self.data["tokens"][token]["expires_at"] = time.time() - 1

    # -- authentication ------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> auth.Principal:
        """The caller behind an Authorization header, or 401 as GitHub answers."""
        if not authorization:
            raise ApiError(401, "Requires authentication")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() not in ("bearer", "token") or not credential:
            raise auth.bad_credentials()
        if credential.count(".") == 2 and not credential.startswith(("ghs_", "ghp_")):
            issuer = auth.jwt_issuer(credential)
            app = app_record(self.data, issuer) if issuer.isdigit() else self.data["app"]
            app = app or self.data["app"]  # an unknown issuer fails the default App's check
            auth.verify_app_jwt(credential, auth.public_key_pem(app["private_key_pem"]), app["id"])
            return auth.Principal(kind="app", login=str(app["bot_login"]), app_id=int(app["id"]))
        return self.principal_for_token(credential)

    def principal_for_token(self, token: str) -> auth.Principal:
        with self.state.lock:
            record = self.data["tokens"].get(token)
            if record is None:
                raise auth.bad_credentials()
            if record["kind"] == "user":
                return self.user_principal(record["login"])
            if record["kind"] == "user_app":
                if record["expires_at"] <= time.time():
                    raise auth.bad_credentials()
                user = self.user_principal(record["login"])
                app_id = record.get("app_id")
                return auth.Principal(
                    kind="user",
                    login=user.login,
                    token=token,
                    via_app=True,
                    app_id=int(app_id) if app_id is not None else None,
                )
            if record["expires_at"] <= time.time():
                raise auth.bad_credentials()
            inst = self.data["installations"].get(str(record["installation_id"]))
            if inst is None:
                raise auth.bad_credentials()
            app = installation_app(self.data, inst)
            return auth.Principal(
                kind="installation",
                login=str(app["bot_login"]),
                app_id=int(app["id"]),
                installation_id=inst["id"],
                repos=frozenset(record["repos"]) if record["repos"] is not None else None,
                permissions=dict(record["permissions"]),
                token=token,
            )

    def user_principal(self, login: str) -> auth.Principal:
        if login not in self.data["users"] or self.data["users"][login]["type"] != "User":
            raise ApiError(404, f"No such user: {login}")
        return auth.Principal(kind="user", login=login)

    def user_token(self, login: str) -> str:
        return str(self.data["users"][login]["token"])

    def role_of(self, login: str, full_name: str) -> str:
        """A user's permission on a repo: admin, write, read or none.

        Anyone may read a public repository; a private one only its collaborators.
        """
        repo = self.repo(full_name)
        user = self.data["users"].get(login)
        if user is None:
            raise not_found()
        if user["type"] == "Bot":  # an App's bot: write where that App is installed
            app = next((a for a in all_apps(self.data) if a["bot_login"] == login), None)
            installed = app is not None and self.installation_for_repo(full_name, app["id"])
            return "write" if installed else "none"
        explicit = self.explicit_role(login, full_name)
        if explicit is not None:
            return explicit
        return "none" if repo.get("private") else "read"

    def explicit_role(self, login: str, full_name: str) -> str | None:
        """The role a repository grants `login` itself (owner, collaborator, or a role on
        every repository), None when it has only what the public has: the access GitHub's
        `GET /user/installations/{id}/repositories` lists."""
        repo = self.repo(full_name)
        if login == repo["owner"]:
            return "admin"
        user = self.data["users"].get(login)
        if user is None or user["type"] != "User":
            return None
        granted = repo.get("collaborators", {}).get(login)
        if granted is not None:
            return str(granted)
        role = user.get("role")
        return str(role) if role else None

    def authorize(
        self,
        principal: auth.Principal,
        full_name: str,
        resource: str,
        level: str,
        *,
        user_level: str | None = None,
        alternatives: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """The repo if `principal` may act on it at `level`; GitHub's 404/403 if not.

        `user_level` is what a human needs (anyone may open an issue on a public
        repo, only collaborators may label it); `alternatives` are other
        permissions GitHub accepts instead of `resource` (pull requests are issues).
        """
        repo = self.repo(full_name)
        if principal.kind == "app":
            raise ApiError(403, "Resource not accessible by integration")
        if principal.kind == "installation":
            inst = self.data["installations"].get(str(principal.installation_id))
            in_scope = principal.repos is None or full_name in principal.repos
            if inst is None or full_name not in inst["repos"] or not in_scope:
                raise not_found()
            if not any(
                auth.allows(principal.permissions, name, level)
                for name in (resource, *alternatives)
            ):
                raise ApiError(403, "Resource not accessible by integration")
            return repo
        role = self.role_of(principal.login, full_name)
        if role == "none" and repo.get("private"):
            raise not_found()  # GitHub does not tell outsiders a private repository exists
        if principal.via_app:
            app = self.app(principal.app_id)
            if self.installation_for_repo(full_name, app["id"]) is None:
                raise not_found()
            granted = app["permissions"]
            if not any(auth.allows(granted, name, level) for name in (resource, *alternatives)):
                raise ApiError(403, "Resource not accessible by integration")
        needed = user_level or level
        if auth.LEVELS[role] < auth.LEVELS[needed]:
            raise ApiError(403, f"Must have {needed} access to repository.")
        return repo

    # -- webhook hook -------------------------------------------------------------------

    def set_webhook_url(self, url: str | None) -> None:
        """Point the App's webhook at `url` and send GitHub's `ping` there."""
        with self.changing():
            self.data["app"]["webhook_url"] = url
            if url:
                app = self.data["app"]
                self.emit("ping", events.ping(self.render, app["hook_id"], url))

    def set_callback_urls(self, urls: list[str]) -> None:
        """The App's OAuth callback URLs; the OAuth pages redirect only to these."""
        for url in urls:
            if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
                raise ApiError(422, f"Invalid callback URL: {url!r}")
        with self.changing():
            self.data["app"]["callback_urls"] = list(urls)

    def apply_fault(self) -> ApiError | None:
        """Consume one armed fault, if any, as the error to answer with."""
        with self.state.lock:
            if self.faults["count"] <= 0:
                return None
            self.faults["count"] -= 1
            if self.faults["kind"] == "secondary_rate_limit":
                return ApiError(
                    403,
                    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.",
                    headers={"retry-after": str(self.faults["retry_after"])},
                )
            return ApiError(502, "Server Error")

    def arm_fault(self, count: int, kind: str, retry_after: int) -> None:
        if kind not in ("502", "secondary_rate_limit"):
            raise ApiError(422, f"unknown fault kind {kind!r}")
        with self.state.lock:
            self.faults = {"count": count, "kind": kind, "retry_after": retry_after}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
