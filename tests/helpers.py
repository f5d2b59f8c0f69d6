"""A test helper that speaks the protocol (flaskr's AuthActions, for OAuth)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authserver.domain import clients, users
from authserver.domain.clients import ClientRecord, ClientSpec
from authserver.extensions import db

PASSWORD = "correct horse battery staple"


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def assert_oauth_error(response: TestResponse, error: str, status: int = 400) -> dict[str, Any]:
    """An RFC 6749 §5.2 error: the status, a JSON body with ``error``, never cached."""
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.mimetype == "application/json"
    body = json.loads(response.get_data())
    assert body["error"] == error, body
    assert set(body) <= {"error", "error_description", "error_uri"}
    if status == 401:
        assert response.headers.get("WWW-Authenticate"), "401 needs WWW-Authenticate"
    return body


class OAuthActions:
    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self.app = app
        self.client = client

    # -- fixtures' data --------------------------------------------------------------
    def create_user(self, username: str = "alice", password: str = PASSWORD) -> int:
        with self.app.app_context():
            user = users.create_user(db.session, username, password)
            db.session.commit()
            return user.id

    def create_client(self, **spec: Any) -> tuple[ClientRecord, str | None]:
        spec.setdefault("name", "Test app")
        with self.app.app_context():
            record, secret = clients.create_client(db.session, ClientSpec(**spec))
            db.session.commit()
        return record, secret

    def first_party_app(self, **spec: Any) -> ClientRecord:
        """A public first-party client (a mobile app) with password + refresh grants."""
        spec.setdefault("scope", "read write")
        record, _ = self.create_client(public=True, first_party=True, **spec)
        return record

    # -- requests ------------------------------------------------------------------
    def token(self, data: dict[str, str], headers: dict[str, str] | None = None,
              client: FlaskClient | None = None) -> TestResponse:
        return (client or self.client).post("/oauth/token", data=data, headers=headers or {})

    def password_login(self, app_client: ClientRecord, username: str = "alice",
                       password: str = PASSWORD, scope: str | None = None,
                       secret: str | None = None) -> TestResponse:
        data = {"grant_type": "password", "username": username, "password": password,
                "client_id": app_client.client_id}
        if scope is not None:
            data["scope"] = scope
        headers = {}
        if secret is not None:
            data.pop("client_id")
            headers["Authorization"] = basic(app_client.client_id, secret)
        return self.token(data, headers)

    def refresh(self, app_client: ClientRecord, refresh_token: str, scope: str | None = None,
                secret: str | None = None, client: FlaskClient | None = None) -> TestResponse:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token,
                "client_id": app_client.client_id}
        if scope is not None:
            data["scope"] = scope
        headers = {}
        if secret is not None:
            data.pop("client_id")
            headers["Authorization"] = basic(app_client.client_id, secret)
        return self.token(data, headers, client)

    def login_pair(self, app_client: ClientRecord, **kwargs: Any) -> dict[str, Any]:
        response = self.password_login(app_client, **kwargs)
        assert response.status_code == 200, response.get_data(True)
        return response.get_json()

    # -- verification ----------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        return self.client.get("/.well-known/jwks.json").get_json()

    def verify_access_token(self, token: str) -> dict[str, Any]:
        """Verify like a resource server: JWKS key by kid, RS256 pinned, iss and aud."""
        header = jwt.get_unverified_header(token)
        jwk = next(k for k in self.jwks()["keys"] if k["kid"] == header["kid"])
        key = jwt.PyJWK(jwk)
        settings = self.app.extensions["authserver"].settings
        return jwt.decode(token, key, algorithms=["RS256"], audience=settings.audience,
                          issuer=settings.issuer)


def form_fields(html: str) -> dict[str, str]:
    """Hidden and named inputs of the first form on a page (enough for our pages)."""
    import html as html_lib
    import re

    fields = {}
    for match in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html):
        fields[html_lib.unescape(match.group(1))] = html_lib.unescape(match.group(2))
    return fields


class BrowserActions:
    """A person in a browser, played by the Flask test client (cookies kept)."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def login(self, username: str = "alice", password: str = PASSWORD,
              next_url: str = "/") -> TestResponse:
        page = self.client.get("/login", query_string={"next": next_url})
        fields = form_fields(page.get_data(as_text=True))
        fields.update(username=username, password=password)
        return self.client.post("/login", data=fields)

    def authorize(self, **params: str) -> TestResponse:
        return self.client.get("/oauth/authorize", query_string=params)

    def decide(self, consent_page: TestResponse, decision: str = "allow") -> TestResponse:
        fields = form_fields(consent_page.get_data(as_text=True))
        fields["decision"] = decision
        return self.client.post("/oauth/authorize", data=fields)


def redirect_params(response: TestResponse) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    assert response.status_code in (302, 303), (response.status_code, response.get_data(True))
    return dict(parse_qsl(urlsplit(response.headers["Location"]).query))


# -- the documentation's code blocks ------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
_FENCE = re.compile(r"^( *)```(\S*)\s*$")
_SECTION = re.compile(r"^\s*<!-- ([\w-]+):(start|end) -->\s*$")
_NOTE = re.compile(r"^\s*<!-- (.*?) -->\s*$")


@dataclass(frozen=True)
class DocBlock:
    """A fenced code block of README.md or docs/*.md."""

    path: Path
    line: int
    language: str
    code: str
    note: str | None  # the HTML comment just before it: "not run: why", ...
    sections: tuple[str, ...]  # the <!-- NAME:start --> ... <!-- NAME:end --> it is in

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_code_blocks(path: Path) -> list[DocBlock]:
    """Every fenced block of ``path`` (indented ones in list items too, dedented)."""
    lines = path.read_text().split("\n")
    blocks: list[DocBlock] = []
    sections: list[str] = []
    previous = ""  # the last non-blank line before the block
    index = 0
    while index < len(lines):
        line = lines[index]
        if marker := _SECTION.match(line):
            name, edge = marker.groups()
            if edge == "start":
                sections.append(name)
            else:
                assert sections and sections[-1] == name, f"{path}:{index + 1}: stray {name} end"
                sections.pop()
        if fence := _FENCE.match(line):
            indent, language = fence.groups()
            start, body = index + 1, []
            index += 1
            while lines[index].rstrip() != indent + "```":
                body.append(lines[index][len(indent):])
                index += 1
            note = _NOTE.match(previous)
            blocks.append(DocBlock(path, start, language, "\n".join(body) + "\n",
                                   note.group(1) if note and not _SECTION.match(previous)
                                   else None, tuple(sections)))
            previous = ""
        elif line.strip():
            previous = line
        index += 1
    assert not sections, f"{path}: {sections} never end"
    return blocks


def doc_blocks(name: str, language: str) -> list[str]:
    """The ``language`` blocks inside ``<!-- name:start -->`` ... ``<!-- name:end -->`` in
    README.md or docs/*.md: the example a test runs verbatim, wherever the docs keep it."""
    blocks = [block.code for path in DOC_FILES for block in doc_code_blocks(path)
              if name in block.sections and block.language == language]
    assert blocks, f"the docs have no {language} block in a section named {name!r}"
    return blocks


def doc_blocks_noted(note: str) -> list[DocBlock]:
    """The blocks of README.md and docs/*.md marked ``<!-- note -->``."""
    return [block for path in DOC_FILES for block in doc_code_blocks(path) if block.note == note]
