"""Paginated lists, and the `Link: <...>; rel="next"` header GitHub sends with them."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode


class Page(list[Any]):
    """One page of a list; `next_query` holds the query of the next page, if any."""

    def __init__(self, items: list[Any], next_query: dict[str, str] | None = None) -> None:
        super().__init__(items)
        self.next_query = next_query


def page(items: list[Any], query: dict[str, str]) -> Page:
    """GitHub's `per_page` (default 30, at most 100) and 1-based `page`."""
    per_page = max(1, min(100, int(query.get("per_page", 30))))
    number = max(1, int(query.get("page", 1)))
    chosen = items[(number - 1) * per_page : number * per_page]
    more = len(items) > number * per_page
    return Page(
        chosen, {**query, "page": str(number + 1), "per_page": str(per_page)} if more else None
    )


def link_header(base_url: str, path: str, content: Any) -> dict[str, str]:
    """The Link header for `content` when it is a page with a successor."""
    if isinstance(content, Page) and content.next_query:
        return {"link": f'<{base_url}{path}?{urlencode(content.next_query)}>; rel="next"'}
    return {}
