"""Helpers for the key-lifecycle and resource-server tests: HTTP doubles, token forging."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from flask.testing import FlaskClient

from authserver.resource import HttpResponse

ISSUER = "https://as.example"
AUDIENCE = "https://api.example"


class FakeHttp:
    """An HttpClient answering from ``routes`` (url -> callable returning HttpResponse)."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[Mapping[str, str]], HttpResponse]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.delay = 0.0
        self.posted: list[Mapping[str, str]] = []

    def count(self, url: str) -> int:
        return sum(1 for _, u, _ in self.requests if u == url)

    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        with self.lock:
            self.requests.append(("GET", url, dict(headers)))
        if self.delay:
            time.sleep(self.delay)
        route = self.routes.get(url)
        if route is None:
            return HttpResponse(404, b"not found", {})
        return route(headers)

    def post(self, url: str, form: Mapping[str, str], headers: Mapping[str, str],
             timeout: float) -> HttpResponse:
        with self.lock:
            self.requests.append(("POST", url, dict(headers)))
            self.posted.append(dict(form))
        route = self.routes.get(url)
        if route is None:
            return HttpResponse(404, b"not found", {})
        return route(headers)

    def serve_json(self, url: str, document: Any, headers: Mapping[str, str] | None = None
                   ) -> None:
        body = json.dumps(document).encode()
        self.routes[url] = lambda _h: HttpResponse(200, body, dict(headers or {}))

    def serve_jwks(self, url: str, keys: Callable[[], list[dict]], max_age: int = 300) -> None:
        """A JWKS endpoint with ETag and 304, like ours."""

        def answer(headers: Mapping[str, str]) -> HttpResponse:
            body = json.dumps({"keys": keys()}, sort_keys=True).encode()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            common = {"cache-control": f"public, max-age={max_age}", "etag": etag}
            if headers.get("If-None-Match") == etag:
                return HttpResponse(304, b"", common)
            return HttpResponse(200, body, common)

        self.routes[url] = answer


class FlaskHttp:
    """An HttpClient that sends requests to a Flask app's test client (for the AS)."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.urls: list[str] = []

    def _response(self, response: Any) -> HttpResponse:
        return HttpResponse(response.status_code, response.get_data(),
                            {k.lower(): v for k, v in response.headers.items()})

    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        self.urls.append(url)
        return self._response(self.client.get(urlsplit(url).path, headers=dict(headers)))

    def post(self, url: str, form: Mapping[str, str], headers: Mapping[str, str],
             timeout: float) -> HttpResponse:
        self.urls.append(url)
        return self._response(self.client.post(urlsplit(url).path, data=dict(form),
                                               headers=dict(headers)))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1",
                            "client_id": "app-1", "scope": "read write", "iat": now,
                            "exp": now + 300, "jti": uuid.uuid4().hex, "sid": "fam-1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()),
                     b64(signature)])


class DPoPKey:
    """A client's DPoP key pair: makes proofs (RFC 9449 §4.2)."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key()))

    @property
    def jkt(self) -> str:
        members = {k: self.jwk[k] for k in ("crv", "kty", "x", "y")}
        canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
        return b64(hashlib.sha256(canonical).digest())

    def proof(self, method: str, url: str, access_token: str | None = None,
              **overrides: Any) -> str:
        payload: dict[str, Any] = {"jti": uuid.uuid4().hex, "htm": method, "htu": url,
                                   "iat": int(time.time())}
        if access_token is not None:
            payload["ath"] = b64(hashlib.sha256(access_token.encode()).digest())
        payload.update(overrides)
        return jwt.encode(payload, self.private, algorithm="ES256",
                          headers={"typ": "dpop+jwt", "jwk": self.jwk})


class Signer:
    """A signing key of the authorization server (or of an attacker)."""

    def __init__(self, alg: str, kid: str | None = None) -> None:
        self.alg = alg
        if alg == "RS256":
            self.private: Any = rsa.generate_private_key(65537, 2048)
            algo: Any = jwt.algorithms.RSAAlgorithm
        elif alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            algo = jwt.algorithms.ECAlgorithm
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
            algo = jwt.algorithms.OKPAlgorithm
        self.kid = kid or uuid.uuid4().hex
        self.jwk = {**json.loads(algo.to_jwk(self.private.public_key())), "kid": self.kid,
                    "alg": alg, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, payload: dict[str, Any] | None = None, **header: Any) -> str:
        headers = {"kid": self.kid, "typ": "at+jwt", **header}
        alg = headers.pop("alg", self.alg)
        return jwt.encode(payload if payload is not None else claims(), self.private,
                          algorithm=alg, headers={k: v for k, v in headers.items()
                                                  if v is not None})


class Timer:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
