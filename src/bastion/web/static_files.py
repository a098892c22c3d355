"""Static assets with an explicit cache policy (nosniff comes from the security headers).

Starlette's StaticFiles already refuses path traversal and never lists directories.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from starlette.responses import Response
from starlette.staticfiles import StaticFiles

# Some systems' MIME tables lack these; a wrong type plus nosniff would break the page.
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/css", ".css")
mimetypes.add_type("image/svg+xml", ".svg")


class CachedStaticFiles(StaticFiles):
    bastion_access = "public"

    def __init__(self, *, directory: str, cache_control: str) -> None:
        super().__init__(directory=directory, html=False, follow_symlink=False)
        self.cache_control = cache_control

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = self.cache_control
        return response
