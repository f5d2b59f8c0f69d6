"""The token endpoint's ordinary requests, answered before Flask (docs/design.md, "The
token endpoint").

Every client calls the refresh grant every few minutes, and machine clients call
``client_credentials`` as often; Flask's request machinery around them (request and response
objects, context locals, form parsing, Authlib's dispatch, the checks of
``client_requests.check_token_request``) cost a third of a refresh: 0.25 ms of 1.1 ms.
:class:`TokenFastPath` sits in the WSGI stack right in front of Flask (inside ``ProxyFix``,
so the client address, scheme and host are already the trusted ones) and takes only what is
plainly well formed: ``POST /oauth/token`` with a form body of unique, short parameters,
``grant_type`` ``refresh_token`` or ``client_credentials``, no query string, no DPoP proof,
no ``Origin`` header (a browser's: the view's answer gets CORS), https (or loopback, or
development). Everything else, and every request refused before
anything is issued or rotated (client authentication, grant type, scope, device id), goes on
to the Flask view with its body intact, which answers it as before: nothing has changed by
then, so the answer is the one the view gives. A database failure is the view's 503, any
other fault its 500. The checks, the rotation and the mapping of outcomes to responses are
the view's own functions (``grants``, ``token``'s error mapping): one grant, two ways in.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Flask
from werkzeug.wrappers import Response
from werkzeug.wsgi import get_host

from .. import http
from ..domain import events
from ..ops.access_log import note_client
from ..services import services
from . import grants, token
from .client_requests import FORM_CONTENT_TYPE, MAX_PARAMETER_LENGTH

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# Bodies and forms larger than an ordinary refresh request go the long way.
MAX_BODY = 16 * 1024
MAX_FIELDS = 32
MAX_KEY_LENGTH = 128
MAX_LENGTH_DIGITS = 9
GRANT_TYPES = ("refresh_token", "client_credentials")
SUCCESS_HEADERS = [("Content-Type", "application/json"), *http.OAUTH_NO_STORE.items()]


class TokenFastPath:
    """WSGI middleware: ordinary refresh requests here, everything else to ``wsgi_app``."""

    def __init__(self, app: Flask, wsgi_app: WSGIApp) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        limit = app.config.get("MAX_CONTENT_LENGTH")
        self.max_body = min(MAX_BODY, limit) if limit else MAX_BODY

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != token.TOKEN_PATH \
                or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        form = self._form(environ)
        answer = None
        if form is not None:
            with self.app.app_context():
                answer = self._answer(environ, form)
        if answer is None:
            return self.wsgi_app(environ, start_response)
        if isinstance(answer, Response):
            return answer(environ, start_response)
        start_response("200 OK", [*SUCCESS_HEADERS, ("Content-Length", str(len(answer)))])
        return [answer]

    def _form(self, environ: dict[str, Any]) -> dict[str, str] | None:
        """The form of an ordinary refresh request, or None. Reads the body and puts it
        back (``wsgi.input``) for the Flask view, which sees the request unchanged."""
        # A browser's request (``Origin``) goes to the view, whose response gets CORS.
        if environ.get("QUERY_STRING") or "HTTP_DPOP" in environ \
                or "HTTP_ORIGIN" in environ or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        content_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        length = environ.get("CONTENT_LENGTH", "")
        if content_type != FORM_CONTENT_TYPE or not (length.isascii()
                                                            and length.isdigit()):
            return None
        if len(length) > MAX_LENGTH_DIGITS:  # werkzeug reads an absurd one as 0
            return None
        size = int(length)
        if size > self.max_body:
            return None
        try:
            body = environ["wsgi.input"].read(size)
        except Exception:  # the client went away mid-body: the view answers the short body
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        if len(body) != size:
            return None
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                              errors="strict", max_num_fields=MAX_FIELDS)
        except ValueError:  # UnicodeDecodeError included: the view says what is wrong
            return None
        form = dict(pairs)
        if len(form) != len(pairs) or form.get("grant_type") not in GRANT_TYPES:
            return None
        for key, value in pairs:
            if len(key) > MAX_KEY_LENGTH or len(value) > MAX_PARAMETER_LENGTH:
                return None
        return form

    def _answer(self, environ: dict[str, Any], form: dict[str, str]
                ) -> bytes | Response | None:
        """The JSON body of a success, an error response, or None when the Flask view must
        answer (it gives the same answer: nothing has changed)."""
        if services().nonces is not None:  # DPoP nonces: the view adds the header
            return None
        scheme = environ.get("wsgi.url_scheme", "http")
        host = get_host(environ)
        if not (http.usable_host(host)
                and http.secure(scheme, environ.get("REMOTE_ADDR"), services().settings, host)):
            return None
        client_id = None  # a database outage during client authentication: none known
        try:
            try:
                client_id, issue, serialise = self._grant(environ, form)
            except OAuth2Error:  # refused before anything was issued: the view says why
                return None
            body = serialise(issue())
            events.emit(events.TOKEN_REQUEST, grant_type=form["grant_type"], outcome="ok",
                        client_id=client_id)
            return body
        except OAuth2Error as error:
            response, outcome = http.error_response(error), error.error
        except Exception as exc:
            response = token.failed(exc)
            outcome = "temporarily_unavailable" if response.status_code == 503 else "server_error"
        events.emit(events.TOKEN_REQUEST, grant_type=form["grant_type"], outcome=outcome,
                    client_id=client_id)
        response.headers.update(http.OAUTH_NO_STORE)
        return response

    def _grant(self, environ: dict[str, Any], form: dict[str, str]
               ) -> tuple[str, Callable[[], dict[str, Any]], Callable[[Any], bytes]]:
        """The grant's checks (OAuth errors here change nothing); then the client's id, what
        issues, and the body's serialisation as the view writes it, byte for byte."""
        oauth = services().oauth
        headers = {"Authorization": environ.get("HTTP_AUTHORIZATION")}
        if form["grant_type"] == "refresh_token":
            client = oauth.authenticate_refresh_client(headers, form)
            note_client(environ, client.client_id)
            presented = grants.check_refresh(client, form.get("refresh_token"))
            context = self._context(environ, form, client)
            return (client.client_id,
                    lambda: grants.rotate(client, presented, form.get("scope"), context),
                    http.json_body)
        client, _ = oauth.authenticate_token_client(headers, form)
        note_client(environ, client.client_id)
        scope = grants.check_client_credentials(client, form.get("scope"))
        context = self._context(environ, form, client)
        # Authlib's grants answer through Flask's JSON provider (sorted keys).
        return (client.client_id,
                lambda: grants.client_credentials_body(client, scope, context),
                lambda body: self.app.json.dumps(body).encode())

    @staticmethod
    def _context(environ: dict[str, Any], form: dict[str, str], client: Any) -> Any:
        return grants.device_context(
            client, signing_in=False, in_form=form.get("device_id"),
            in_header=environ.get("HTTP_X_DEVICE_ID"),
            user_agent=environ.get("HTTP_USER_AGENT", ""),
            remote_addr=environ.get("REMOTE_ADDR"), dpop_jkt=None)
