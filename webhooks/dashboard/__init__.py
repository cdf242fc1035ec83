"""The dashboard: `routes` (HTTP), `pages` (HTML), `static/` (CSS and the live script)."""

from webhooks.dashboard.routes import ROUTES

__all__ = ["ROUTES"]
