"""Pure parts of the sandbox: GraphQL call parsing, paging, signatures, JWT rules."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import jwt
import pytest

from sandbox import auth, delivery, graphql, paging
from sandbox.errors import ApiError
from sandbox.world import World


@pytest.mark.parametrize(
    ("query", "variables", "expected"),
    [
        (
            'mutation { markPullRequestReadyForReview(input: {pullRequestId: "PR_1"}) { pullRequest { id } } }',
            {},
            ("markPullRequestReadyForReview", {"pullRequestId": "PR_1"}),
        ),
        (
            "mutation($id: ID!) { convertPullRequestToDraft(input: {pullRequestId: $id}) { clientMutationId } }",
            {"id": "PR_2"},
            ("convertPullRequestToDraft", {"pullRequestId": "PR_2"}),
        ),
        (
            "mutation($input: MarkPullRequestReadyForReviewInput!) { markPullRequestReadyForReview(input: $input) { pullRequest { id } } }",
            {"input": {"pullRequestId": "PR_3", "clientMutationId": "x"}},
            ("markPullRequestReadyForReview", {"pullRequestId": "PR_3", "clientMutationId": "x"}),
        ),
        ("query { viewer { login } }", {}, None),
    ],
)
def test_graphql_calls_are_parsed(query: str, variables: dict, expected: object) -> None:
    assert graphql.parse_call(query, variables) == expected


def test_pages_and_their_successor() -> None:
    items = list(range(7))
    first = paging.page(items, {"per_page": "3"})
    assert first == [0, 1, 2] and first.next_query == {"per_page": "3", "page": "2"}
    last = paging.page(items, {"per_page": "3", "page": "3"})
    assert last == [6] and last.next_query is None
    link = paging.link_header("http://h", "/x", first)
    assert link == {"link": '<http://h/x?per_page=3&page=2>; rel="next"'}
    assert paging.link_header("http://h", "/x", last) == {}


def test_signature_matches_githubs_recipe() -> None:
    # The example from GitHub's documentation on validating webhook deliveries.
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert delivery.sign("It's a Secret to Everybody", b"Hello, World!") == expected


def test_jwt_rules() -> None:
    key = auth.generate_private_key_pem()
    public = auth.public_key_pem(key)
    now = time.time()

    def token(**claims: object) -> str:
        base = {"iss": "7", "iat": int(now) - 60, "exp": int(now) + 540}
        return jwt.encode({**base, **claims}, key, "RS256")

    auth.verify_app_jwt(token(), public, 7, now)
    for bad in (
        token(iss="8"),
        token(exp=int(now) - 1),
        token(iat=int(now), exp=int(now) + 3600),
        "not.a.jwt",
        jwt.encode(
            {"iss": "7", "iat": int(now), "exp": int(now) + 60},
            auth.generate_private_key_pem(),
            "RS256",
        ),
    ):
        with pytest.raises(ApiError) as refused:
            auth.verify_app_jwt(bad, public, 7, now)
        assert refused.value.status == 401


def test_token_permissions_narrow_but_never_widen() -> None:
    granted = {"issues": "write", "contents": "write", "metadata": "read"}
    assert auth.narrow_permissions(granted, {"issues": "read"}) == {
        "issues": "read",
        "metadata": "read",
    }
    assert auth.narrow_permissions(granted, None) == granted
    with pytest.raises(ApiError):
        auth.narrow_permissions(granted, {"administration": "write"})
    with pytest.raises(ApiError):
        auth.narrow_permissions({"issues": "read"}, {"issues": "write"})


def test_a_repo_imported_from_a_directory_leaves_caches_out(tmp_path: Path) -> None:
    source = tmp_path / "problem"
    (source / "__pycache__").mkdir(parents=True)
    (source / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    (source / "data").mkdir()
    (source / "data" / "big.bin").write_bytes(b"\1")
    (source / ".gitignore").write_text("data/\n")
    (source / "train.py").write_text("print(1)\n")
    world = World(tmp_path / "state")
    world.create_repo("lab/imported", from_path=source)
    listing = subprocess.run(
        [
            "git",
            "--git-dir",
            str(world.repo_path("lab/imported")),
            "ls-tree",
            "-r",
            "--name-only",
            "main",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listing == [".gitignore", "train.py"]
    assert world.installation_id_of("lab/imported") is not None
