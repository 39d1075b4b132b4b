"""GET /admin/v1/health/deployments: each deployment's active health check and cooldown."""

from __future__ import annotations

from conduit_tornado.routing.health import report

from .base import AdminHandler


class DeploymentHealthHandler(AdminHandler):
    def get(self) -> None:
        ctx = self.ctx
        data = report(ctx.catalog, ctx.router, ctx.settings)
        self.send_json(
            {
                "object": "list",
                "data": data,
                "health_check_interval": ctx.settings.health_check_interval,
            }
        )
