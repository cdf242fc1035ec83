"""The one error type the sandbox answers with, in GitHub's shape."""

from __future__ import annotations

from typing import Any

DOCS = "https://docs.github.com/rest"


class ApiError(Exception):
    """Raised anywhere in the sandbox; becomes GitHub's error JSON and status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        shape: dict[str, Any] = {"message": self.message, "documentation_url": DOCS}
        if self.errors is not None:
            shape["errors"] = self.errors
        shape["status"] = str(self.status)
        return shape


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


def validation_failed(summary: str = "Validation Failed", **error: Any) -> ApiError:
    """GitHub's 422, with one entry in `errors` (resource, field, code, message)."""
    return ApiError(422, summary, errors=[error] if error else [])
