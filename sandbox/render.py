"""GitHub's JSON shapes for the sandbox's records.

Each function turns one stored record into the object GitHub would send, in
full, because clients (githubkit among them) validate every field. The same
shapes serve REST responses and webhook payloads, which GitHub also shares.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any
from urllib.parse import quote

from sandbox.auth import client_id_of
from sandbox.state import all_apps, installation_app

EVENTS = ["issues", "issue_comment", "pull_request", "push"]
ASSOCIATION = {"admin": "MEMBER", "write": "COLLABORATOR", "read": "CONTRIBUTOR"}


def node_id(kind: str, number: int) -> str:
    """An opaque, stable GraphQL id, like GitHub's legacy base64 ids."""
    return base64.b64encode(f"0:{kind}{number}".encode()).decode().rstrip("=")


class Renderer:
    """Builds shapes whose URLs point at one sandbox's base URL."""

    def __init__(self, base_url: str, world: dict[str, Any]) -> None:
        self.api = base_url.rstrip("/")
        self.web = self.api
        self.world = world

    # -- accounts -------------------------------------------------------------

    def user(self, login: str) -> dict[str, Any]:
        record = self.world["users"][login]
        api = f"{self.api}/users/{login}"
        return {
            "login": login,
            "id": record["id"],
            "node_id": node_id(record["type"], record["id"]),
            "avatar_url": f"{self.web}/avatars/{record['id']}",
            "gravatar_id": "",
            "url": api,
            "html_url": f"{self.web}/{login}",
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs",
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events",
            "type": record["type"],
            "site_admin": False,
            "user_view_type": "public",
        }

    def private_user(self, login: str) -> dict[str, Any]:
        """`GET /user`: the signed-in user's own, fuller account."""
        record = self.world["users"][login]
        shape = self.user(login)
        shape.update(
            {
                "name": login.capitalize(),
                "company": None,
                "blog": "",
                "location": None,
                "email": record.get("email"),
                "hireable": None,
                "bio": None,
                "twitter_username": None,
                "notification_email": record.get("email"),
                "public_repos": 0,
                "public_gists": 0,
                "followers": 0,
                "following": 0,
                "created_at": record.get("created_at", "2024-01-01T00:00:00Z"),
                "updated_at": record.get("created_at", "2024-01-01T00:00:00Z"),
                "private_gists": 0,
                "total_private_repos": 0,
                "owned_private_repos": 0,
                "disk_usage": 0,
                "collaborators": 0,
                "two_factor_authentication": True,
                "plan": {
                    "collaborators": 0,
                    "name": "free",
                    "space": 976562499,
                    "private_repos": 10000,
                },
            }
        )
        return shape

    def association(self, login: str, repo: dict[str, Any]) -> str:
        if login == repo["owner"]:
            return "OWNER"
        role = repo.get("collaborators", {}).get(login) or self.world["users"][login].get("role")
        return ASSOCIATION.get(role or "", "NONE")

    # -- App and installations ---------------------------------------------------

    def app(self, app: dict[str, Any] | None = None) -> dict[str, Any]:
        """An App's public shape (the default App's unless another is given)."""
        app = self.world["app"] if app is None else app
        installations = [
            i
            for i in self.world["installations"].values()
            if installation_app(self.world, i) is app
        ]
        return {
            "id": app["id"],
            "slug": app["slug"],
            "node_id": node_id("App", app["id"]),
            "client_id": client_id_of(app["id"]),
            "owner": self.user(app["owner"]),
            "name": app.get("name", app["slug"]),
            "description": app.get(
                "description", "An autonomous ML research lab run through pull requests"
            ),
            "external_url": app.get("external_url", self.web),
            "html_url": f"{self.web}/apps/{app['slug']}",
            "created_at": app["created_at"],
            "updated_at": app["created_at"],
            "permissions": dict(app["permissions"]),
            "events": list(app.get("events", EVENTS)),
            "installations_count": len(installations),
        }

    def installation(self, inst: dict[str, Any]) -> dict[str, Any]:
        app = installation_app(self.world, inst)
        account = inst["account"]
        return {
            "id": inst["id"],
            "account": self.user(account),
            "repository_selection": "selected",
            "access_tokens_url": f"{self.api}/app/installations/{inst['id']}/access_tokens",
            "repositories_url": f"{self.api}/installation/repositories",
            "html_url": f"{self.web}/organizations/{account}/settings/installations/{inst['id']}",
            "app_id": app["id"],
            "app_slug": app["slug"],
            "client_id": client_id_of(app["id"]),
            "target_id": self.world["users"][account]["id"],
            "target_type": self.world["users"][account]["type"],
            "permissions": dict(inst["permissions"]),
            "events": list(app.get("events", EVENTS)),
            "created_at": inst["created_at"],
            "updated_at": inst["created_at"],
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": None,
            "suspended_at": None,
        }

    # -- repositories -------------------------------------------------------------

    def repo_minimal(self, repo: dict[str, Any]) -> dict[str, Any]:
        """The repository object shared by every repository shape."""
        full = repo["full_name"]
        api = f"{self.api}/repos/{full}"
        return {
            "id": repo["id"],
            "node_id": node_id("Repository", repo["id"]),
            "name": repo["name"],
            "full_name": full,
            "private": bool(repo.get("private", False)),
            "owner": self.user(repo["owner"]),
            "html_url": f"{self.web}/{full}",
            "description": repo.get("description"),
            "fork": False,
            "url": api,
            "forks_url": f"{api}/forks",
            "keys_url": f"{api}/keys{{/key_id}}",
            "collaborators_url": f"{api}/collaborators{{/collaborator}}",
            "teams_url": f"{api}/teams",
            "hooks_url": f"{api}/hooks",
            "issue_events_url": f"{api}/issues/events{{/number}}",
            "events_url": f"{api}/events",
            "assignees_url": f"{api}/assignees{{/user}}",
            "branches_url": f"{api}/branches{{/branch}}",
            "tags_url": f"{api}/tags",
            "blobs_url": f"{api}/git/blobs{{/sha}}",
            "git_tags_url": f"{api}/git/tags{{/sha}}",
            "git_refs_url": f"{api}/git/refs{{/sha}}",
            "trees_url": f"{api}/git/trees{{/sha}}",
            "statuses_url": f"{api}/statuses/{{sha}}",
            "languages_url": f"{api}/languages",
            "stargazers_url": f"{api}/stargazers",
            "contributors_url": f"{api}/contributors",
            "subscribers_url": f"{api}/subscribers",
            "subscription_url": f"{api}/subscription",
            "commits_url": f"{api}/commits{{/sha}}",
            "git_commits_url": f"{api}/git/commits{{/sha}}",
            "comments_url": f"{api}/comments{{/number}}",
            "issue_comment_url": f"{api}/issues/comments{{/number}}",
            "contents_url": f"{api}/contents/{{+path}}",
            "compare_url": f"{api}/compare/{{base}}...{{head}}",
            "merges_url": f"{api}/merges",
            "archive_url": f"{api}/{{archive_format}}{{/ref}}",
            "downloads_url": f"{api}/downloads",
            "issues_url": f"{api}/issues{{/number}}",
            "pulls_url": f"{api}/pulls{{/number}}",
            "milestones_url": f"{api}/milestones{{/number}}",
            "notifications_url": f"{api}/notifications{{?since,all,participating}}",
            "labels_url": f"{api}/labels{{/name}}",
            "releases_url": f"{api}/releases{{/id}}",
            "deployments_url": f"{api}/deployments",
        }

    def repo(self, repo: dict[str, Any], permissions_for: str | None = None) -> dict[str, Any]:
        """The full repository, as GET /repos/{owner}/{repo} and webhooks send it."""
        full = repo["full_name"]
        shape = self.repo_minimal(repo)
        shape.update(
            {
                "created_at": repo["created_at"],
                "updated_at": repo.get("pushed_at", repo["created_at"]),
                "pushed_at": repo.get("pushed_at", repo["created_at"]),
                "git_url": f"git://{self.web.split('://', 1)[-1]}/{full}.git",
                "ssh_url": f"git@sandbox:{full}.git",
                "clone_url": f"{self.web}/{full}.git",
                "svn_url": f"{self.web}/{full}",
                "mirror_url": None,
                "homepage": None,
                "size": 1,
                "stargazers_count": 0,
                "watchers_count": 0,
                "language": "Python",
                "has_issues": True,
                "has_projects": False,
                "has_downloads": True,
                "has_wiki": False,
                "has_pages": False,
                "has_discussions": False,
                "forks_count": 0,
                "archived": False,
                "disabled": False,
                "open_issues_count": sum(
                    1 for issue in repo["issues"].values() if issue["state"] == "open"
                ),
                "license": None,
                "allow_forking": True,
                "is_template": False,
                "web_commit_signoff_required": False,
                "topics": [],
                "visibility": "private" if repo.get("private") else "public",
                "forks": 0,
                "open_issues": sum(
                    1 for issue in repo["issues"].values() if issue["state"] == "open"
                ),
                "watchers": 0,
                "default_branch": repo["default_branch"],
                "allow_squash_merge": True,
                "allow_merge_commit": True,
                "allow_rebase_merge": False,
                "allow_auto_merge": False,
                "delete_branch_on_merge": False,
                "allow_update_branch": False,
                "use_squash_pr_title_as_default": False,
                "squash_merge_commit_title": "COMMIT_OR_PR_TITLE",
                "squash_merge_commit_message": "COMMIT_MESSAGES",
                "merge_commit_title": "MERGE_MESSAGE",
                "merge_commit_message": "PR_TITLE",
                "network_count": 0,
                "subscribers_count": 0,
            }
        )
        if permissions_for:
            level = permissions_for
            shape["permissions"] = {
                "admin": level == "admin",
                "maintain": level == "admin",
                "push": level in ("admin", "write"),
                "triage": level in ("admin", "write"),
                "pull": level != "none",
            }
        return shape

    # -- issues, labels, comments -------------------------------------------------

    def label(self, repo: dict[str, Any], name: str) -> dict[str, Any]:
        label = repo["labels"][name]
        return {
            "id": label["id"],
            "node_id": node_id("Label", label["id"]),
            "url": f"{self.api}/repos/{repo['full_name']}/labels/{name}",
            "name": name,
            "description": label.get("description"),
            "color": label["color"],
            "default": False,
            "archived_at": None,
            "archived_by": None,
        }

    @staticmethod
    def reactions(url: str, counts: dict[str, int] | None = None) -> dict[str, Any]:
        counts = counts or {}
        keys = ["+1", "-1", "laugh", "confused", "heart", "hooray", "eyes", "rocket"]
        shape: dict[str, Any] = {"url": url, "total_count": sum(counts.values())}
        shape.update({key: counts.get(key, 0) for key in keys})
        return shape

    def app_if_bot(self, login: str) -> dict[str, Any] | None:
        for app in all_apps(self.world):
            if login == app["bot_login"]:
                return self.app(app)
        return None

    def issue(self, repo: dict[str, Any], issue: dict[str, Any]) -> dict[str, Any]:
        full = repo["full_name"]
        number = issue["number"]
        api = f"{self.api}/repos/{full}/issues/{number}"
        comments = [c for c in repo["comments"].values() if c["issue"] == number]
        shape: dict[str, Any] = {
            "id": issue["id"],
            "node_id": node_id("Issue", issue["id"]),
            "url": api,
            "repository_url": f"{self.api}/repos/{full}",
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "html_url": f"{self.web}/{full}/{'pull' if issue.get('pull') else 'issues'}/{number}",
            "number": number,
            "state": issue["state"],
            "state_reason": issue.get("state_reason"),
            "title": issue["title"],
            "body": issue["body"],
            "user": self.user(issue["user"]),
            "labels": [self.label(repo, name) for name in issue["labels"]],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "active_lock_reason": None,
            "comments": len(comments),
            "closed_at": issue.get("closed_at"),
            "created_at": issue["created_at"],
            "updated_at": issue["updated_at"],
            "closed_by": self.user(issue["closed_by"]) if issue.get("closed_by") else None,
            "author_association": self.association(issue["user"], repo),
            "reactions": self.reactions(f"{api}/reactions"),
            "timeline_url": f"{api}/timeline",
            "performed_via_github_app": self.app_if_bot(issue["user"]),
        }
        pull = issue.get("pull")
        if pull:
            pulls = f"{self.api}/repos/{full}/pulls/{number}"
            shape["draft"] = pull["draft"]
            shape["pull_request"] = {
                "url": pulls,
                "html_url": f"{self.web}/{full}/pull/{number}",
                "diff_url": f"{self.web}/{full}/pull/{number}.diff",
                "patch_url": f"{self.web}/{full}/pull/{number}.patch",
                "merged_at": pull.get("merged_at"),
            }
        return shape

    def comment(self, repo: dict[str, Any], comment: dict[str, Any]) -> dict[str, Any]:
        full = repo["full_name"]
        api = f"{self.api}/repos/{full}/issues/comments/{comment['id']}"
        issue = repo["issues"][str(comment["issue"])]
        kind = "pull" if issue.get("pull") else "issues"
        return {
            "id": comment["id"],
            "node_id": node_id("IssueComment", comment["id"]),
            "url": api,
            "html_url": f"{self.web}/{full}/{kind}/{comment['issue']}#issuecomment-{comment['id']}",
            "body": comment["body"],
            "user": self.user(comment["user"]),
            "created_at": comment["created_at"],
            "updated_at": comment["updated_at"],
            "issue_url": f"{self.api}/repos/{full}/issues/{comment['issue']}",
            "author_association": self.association(comment["user"], repo),
            "performed_via_github_app": self.app_if_bot(comment["user"]),
            "reactions": self.reactions(f"{api}/reactions", _count_reactions(comment)),
        }

    def reaction(self, reaction: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": reaction["id"],
            "node_id": node_id("Reaction", reaction["id"]),
            "user": self.user(reaction["user"]),
            "content": reaction["content"],
            "created_at": reaction["created_at"],
        }

    # -- pull requests ---------------------------------------------------------------

    def branch_ref(self, repo: dict[str, Any], ref: str, sha: str) -> dict[str, Any]:
        return {
            "label": f"{repo['owner']}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": self.user(repo["owner"]),
            "repo": self.repo(repo),
        }

    def pull(
        self, repo: dict[str, Any], issue: dict[str, Any], mergeable: bool | None, base_sha: str
    ) -> dict[str, Any]:
        full = repo["full_name"]
        number = issue["number"]
        pull = issue["pull"]
        api = f"{self.api}/repos/{full}/pulls/{number}"
        issue_api = f"{self.api}/repos/{full}/issues/{number}"
        html = f"{self.web}/{full}/pull/{number}"
        merged = bool(pull.get("merged"))
        if merged or issue["state"] == "closed":
            mergeable_state = "unknown"
        elif mergeable is None:
            mergeable_state = "unknown"
        elif not mergeable:
            mergeable_state = "dirty"
        else:
            mergeable_state = "draft" if pull["draft"] else "clean"
        return {
            "url": api,
            "id": pull["id"],
            "node_id": pull["node_id"],
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": issue_api,
            "commits_url": f"{api}/commits",
            "review_comments_url": f"{api}/comments",
            "review_comment_url": f"{self.api}/repos/{full}/pulls/comments{{/number}}",
            "comments_url": f"{issue_api}/comments",
            "statuses_url": f"{self.api}/repos/{full}/statuses/{pull['head_sha']}",
            "number": number,
            "state": issue["state"],
            "locked": False,
            "title": issue["title"],
            "user": self.user(issue["user"]),
            "body": issue["body"],
            "labels": [self.label(repo, name) for name in issue["labels"]],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": issue["created_at"],
            "updated_at": issue["updated_at"],
            "closed_at": issue.get("closed_at"),
            "merged_at": pull.get("merged_at"),
            "merge_commit_sha": pull.get("merge_commit_sha"),
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": self.branch_ref(repo, pull["head"], pull["head_sha"]),
            "base": self.branch_ref(repo, pull["base"], base_sha),
            "_links": {
                "self": {"href": api},
                "html": {"href": html},
                "issue": {"href": issue_api},
                "comments": {"href": f"{issue_api}/comments"},
                "review_comments": {"href": f"{api}/comments"},
                "review_comment": {"href": f"{self.api}/repos/{full}/pulls/comments{{/number}}"},
                "commits": {"href": f"{api}/commits"},
                "statuses": {"href": f"{self.api}/repos/{full}/statuses/{pull['head_sha']}"},
            },
            "author_association": self.association(issue["user"], repo),
            "auto_merge": None,
            "draft": pull["draft"],
            "merged": merged,
            "mergeable": None if merged or issue["state"] == "closed" else mergeable,
            "rebaseable": False,
            "mergeable_state": mergeable_state,
            "merged_by": self.user(pull["merged_by"]) if pull.get("merged_by") else None,
            "comments": sum(1 for c in repo["comments"].values() if c["issue"] == number),
            "review_comments": 0,
            "maintainer_can_modify": False,
            "commits": pull.get("commits", 1),
            "additions": 0,
            "deletions": 0,
            "changed_files": 0,
            "allow_auto_merge": False,
            "allow_update_branch": False,
            "delete_branch_on_merge": False,
            "use_squash_pr_title_as_default": False,
        }

    # -- git data -------------------------------------------------------------------

    def pull_file(self, full: str, head_sha: str, change: Any) -> dict[str, Any]:
        """One entry of `GET /pulls/{n}/files` (githubkit's DiffEntry)."""
        path = quote(change.filename)
        shape: dict[str, Any] = {
            "sha": change.sha,
            "filename": change.filename,
            "status": change.status,
            "additions": change.additions,
            "deletions": change.deletions,
            "changes": change.additions + change.deletions,
            "blob_url": f"{self.web}/{full}/blob/{head_sha}/{path}",
            "raw_url": f"{self.web}/{full}/raw/{head_sha}/{path}",
            "contents_url": f"{self.api}/repos/{full}/contents/{path}?ref={head_sha}",
        }
        if change.previous_filename:
            shape["previous_filename"] = change.previous_filename
        return shape

    def git_commit(self, repo: dict[str, Any], info: Any) -> dict[str, Any]:
        full = repo["full_name"]
        api = f"{self.api}/repos/{full}/git/commits/{info.sha}"

        def person(sig: Any) -> dict[str, str]:
            return {"name": sig.name, "email": sig.email, "date": sig.date}

        return {
            "sha": info.sha,
            "node_id": node_id("Commit", int(info.sha[:12], 16)),
            "url": api,
            "html_url": f"{self.web}/{full}/commit/{info.sha}",
            "author": person(info.author),
            "committer": person(info.committer),
            "message": info.message,
            "tree": {"sha": info.tree, "url": f"{self.api}/repos/{full}/git/trees/{info.tree}"},
            "parents": [
                {
                    "sha": parent,
                    "url": f"{self.api}/repos/{full}/git/commits/{parent}",
                    "html_url": f"{self.web}/{full}/commit/{parent}",
                }
                for parent in info.parents
            ],
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
                "verified_at": None,
            },
        }

    def git_ref(self, repo: dict[str, Any], ref: str, sha: str) -> dict[str, Any]:
        full = repo["full_name"]
        return {
            "ref": ref,
            "node_id": node_id("Ref", zlib.crc32(f"{full}:{ref}".encode())),
            "url": f"{self.api}/repos/{full}/git/{ref}",
            "object": {
                "type": "commit",
                "sha": sha,
                "url": f"{self.api}/repos/{full}/git/commits/{sha}",
            },
        }


def _count_reactions(comment: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reaction in comment.get("reactions", []):
        counts[reaction["content"]] = counts.get(reaction["content"], 0) + 1
    return counts
