"""One error handler for the app: RFC 6749-style JSON for API clients, a short page for people."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from markupsafe import escape
from werkzeug.exceptions import HTTPException, InternalServerError

from .protocol.routes import json_response

log = logging.getLogger(__name__)

_CODES = {400: "invalid_request", 401: "invalid_token", 403: "access_denied",
          404: "not_found", 405: "invalid_request", 413: "invalid_request"}


def _wants_json() -> bool:
    if request.path.startswith(("/oauth/", "/.well-known/")):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _render(status: int, title: str, description: str) -> Response:
    if _wants_json():
        code = _CODES.get(status, "server_error" if status >= 500 else "invalid_request")
        # An error is about this one request: no cache may keep it (RFC 6749 §5.2).
        return json_response({"error": code, "error_description": description}, status,
                             {"Cache-Control": "no-store"})
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{escape(title)}</title><main><h1>{escape(title)}</h1>"
        f"<p>{escape(description)}</p></main></html>"
    )
    return Response(page, status=status, mimetype="text/html")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        response = _render(status, f"{status} {exc.name}", exc.description or exc.name)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _render(500, "500 Internal Server Error", InternalServerError.description)
