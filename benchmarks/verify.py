"""Local access-token verifications per second per core, with a warm JWKS cache.

What a resource server pays per request when it verifies our RFC 9068 access tokens with
``authserver.resource.TokenVerifier``: header parsing, algorithm pinning, key lookup in
the cached JWKS, the signature, and the claim checks. Tokens are signed by the server's
own signing code (``authserver.crypto``) for each algorithm; the JWKS is served from
memory, fetched once before the clock starts, so no network is measured.

Rates are verifications per second of CPU time of the measuring process (one Python
thread = one core), so they stay meaningful on a busy machine; wall-clock rates are shown
too. For comparison: the same token through plain ``jwt.decode`` (PyJWT, key already
parsed), and the bare signature check in ``cryptography``.

    .venv/bin/python benchmarks/verify.py                  # RS256, ES256, EdDSA, 3 s each
    .venv/bin/python benchmarks/verify.py --duration 1 --algs RS256
    .venv/bin/python benchmarks/verify.py --processes 2    # also: all cores at once
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jwt

from authserver.crypto import jose
from authserver.resource import HttpResponse, TokenVerifier

ISSUER = "https://auth.example.com"
AUDIENCE = "https://api.example.com"
JWKS_URI = ISSUER + "/.well-known/jwks.json"
ALGORITHMS = ("RS256", "ES256", "EdDSA")


class MemoryJWKS:
    """An HttpClient serving one JWKS from memory (counts fetches)."""

    def __init__(self, jwks: dict) -> None:
        self.body = json.dumps(jwks).encode()
        self.fetches = 0

    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        self.fetches += 1
        return HttpResponse(200, self.body, {"cache-control": "public, max-age=86400"})

    def post(self, *args: object, **kwargs: object) -> HttpResponse:
        raise NotImplementedError


@dataclass(frozen=True)
class Case:
    alg: str
    token: str
    jwk: dict
    verifier: TokenVerifier
    http: MemoryJWKS


def make_case(alg: str) -> Case:
    key = jose.generate_private_key(alg)
    kid = jose.thumbprint(key)
    jwk = jose.public_jwk(key, kid, alg)
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "u-42", "aud": AUDIENCE, "client_id": "app-7",
              "scope": "orders:read orders:write", "iat": now, "exp": now + 3600,
              "jti": uuid.uuid4().hex, "sid": uuid.uuid4().hex, "auth_time": now}
    token = jose.sign_jwt(claims, key, kid=kid, alg=alg, typ="at+jwt")
    http = MemoryJWKS({"keys": [jwk]})
    verifier = TokenVerifier(ISSUER, AUDIENCE, jwks_uri=JWKS_URI, http=http)
    verifier.verify(token)  # warm: the one JWKS fetch happens here
    return Case(alg, token, jwk, verifier, http)


def measure(fn: Callable[[], object], duration: float) -> tuple[float, float]:
    """(per CPU-second, per wall-second) rates of ``fn`` over about ``duration`` seconds."""
    for _ in range(50):  # warm-up
        fn()
    count = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    deadline = wall0 + duration
    while True:
        for _ in range(100):
            fn()
        count += 100
        if time.perf_counter() >= deadline:
            break
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return count / cpu, count / wall


def contenders(case: Case) -> dict[str, Callable[[], object]]:
    pyjwk = jwt.PyJWK(case.jwk, algorithm=case.alg)
    header, payload, signature = case.token.split(".")
    signing_input = f"{header}.{payload}".encode()
    raw_signature = jwt.utils.base64url_decode(signature)
    return {
        "authserver.resource": lambda: case.verifier.verify(case.token),
        "jwt.decode": lambda: jwt.decode(case.token, pyjwk, algorithms=[case.alg],
                                         audience=AUDIENCE, issuer=ISSUER),
        "signature only": lambda: pyjwk.Algorithm.verify(signing_input, pyjwk.key,
                                                         raw_signature),
    }


def _worker(alg: str, duration: float, queue: multiprocessing.Queue) -> None:
    case = make_case(alg)
    queue.put(measure(lambda: case.verifier.verify(case.token), duration)[1])


def all_cores(alg: str, processes: int, duration: float) -> float:
    """Total verifications per wall-second with ``processes`` processes verifying at once."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_worker, args=(alg, duration, queue))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    rates = [queue.get(timeout=duration + 60) for _ in workers]
    for worker in workers:
        worker.join()
    return sum(rates)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds per measurement (default 3)")
    parser.add_argument("--algs", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS))
    parser.add_argument("--processes", type=int, default=0,
                        help="also measure N processes verifying at once (default: off)")
    args = parser.parse_args(argv)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# token verification, warm JWKS cache; {platform.python_implementation()} "
          f"{platform.python_version()}, PyJWT {jwt.__version__}, "
          f"{os.cpu_count()} cores, load {load:.1f}")
    print(f"# rates are per CPU-second of one process (= per core); "
          f"wall-clock rate in brackets; {args.duration:g} s each")
    names = ["authserver.resource", "jwt.decode", "signature only"]
    print(f"| alg   | {' | '.join(f'{n:>26}' for n in names)} | µs/verify |")
    print(f"|-------|{'|'.join('-' * 28 for _ in names)}|-----------|")
    for alg in args.algs:
        case = make_case(alg)
        results = {name: measure(fn, args.duration) for name, fn in contenders(case).items()}
        assert case.http.fetches == 1, "the cache must stay warm"
        cells = [f"{cpu:>9,.0f}/s ({wall:>9,.0f}/s)" for cpu, wall in
                 (results[n] for n in names)]
        micros = 1e6 / results["authserver.resource"][0]
        print(f"| {alg:<5} | {' | '.join(f'{c:>26}' for c in cells)} | {micros:>9.0f} |")
    if args.processes:
        print(f"\n# {args.processes} processes verifying at once (wall-clock total)")
        for alg in args.algs:
            total = all_cores(alg, args.processes, args.duration)
            print(f"| {alg:<5} | {total:>10,.0f}/s |")


if __name__ == "__main__":
    main()
