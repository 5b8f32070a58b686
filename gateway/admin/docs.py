"""``/admin/docs``: an interactive page for the OpenAPI document, served from the package.

FastAPI's own Swagger UI and ReDoc pages load their scripts and styles from a CDN, and no
pinned PyPI package ships those assets; this page is small, plain and local: it reads
``openapi.json``, lists every operation with its parameters and sends a request with the
key typed in (kept in the tab only), showing the JSON that comes back as text.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response

DOCS_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def _asset(name: str) -> Response:
    body = files("gateway.admin").joinpath("static", name).read_bytes()
    headers = {"cache-control": "no-cache"}
    if name.endswith(".html"):
        headers["content-security-policy"] = DOCS_POLICY
    return Response(body, media_type=_TYPES["." + name.rpartition(".")[2]], headers=headers)


def add_docs(app: FastAPI) -> None:
    async def root() -> Response:
        return RedirectResponse("docs", status_code=307)

    async def page() -> Response:
        return _asset("docs.html")

    async def script() -> Response:
        return _asset("docs.js")

    async def style() -> Response:
        return _asset("docs.css")

    app.add_api_route("/", root, include_in_schema=False)
    app.add_api_route("/docs", page, include_in_schema=False)
    app.add_api_route("/docs/docs.js", script, include_in_schema=False)
    app.add_api_route("/docs/docs.css", style, include_in_schema=False)
