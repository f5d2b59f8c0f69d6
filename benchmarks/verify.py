"""Local access-token verifications per second per core, with a warm JWKS cache and a
warm status list.

What a resource server pays per request when it verifies our RFC 9068 access tokens with
``authserver.resource.TokenVerifier``: header parsing, algorithm pinning, key lookup in
the cached JWKS, the signature, the claim checks, and the token's Token Status List entry.
Tokens are signed by the server's own signing code (``authserver.crypto``) for each
algorithm and carry a ``status.status_list`` claim as the server's do; the JWKS and a
signed list of 2^17 entries (encoded by the server's codec) are served from memory and
fetched once before the clock starts, so no network is measured.

The second table is the cost of the status check: the same token through a verifier
with status checking on (warm list) and one with it off (``status=False``), measured in
alternating rounds (the best round of each counts, so load from other processes
inflates neither), and the check alone (``status_lists.check``) as a share of one
verification.

Rates are verifications per second of CPU time of the measuring process (one Python
thread = one core), so they stay meaningful on a busy machine; wall-clock rates are shown
too. For comparison: the same token through plain ``jwt.decode`` (PyJWT, key already
parsed), and the bare signature check in ``cryptography``.

    .venv/bin/python benchmarks/verify.py                  # RS256, ES256, EdDSA, 3 s each
    .venv/bin/python benchmarks/verify.py --duration 1 --algs RS256
    .venv/bin/python benchmarks/verify.py --processes 2    # also: all cores at once
    .venv/bin/python benchmarks/verify.py --rounds 7       # status on/off: rounds each
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jwt

from authserver.crypto import jose
from authserver.protocol import status_list_codec
from authserver.resource import HttpResponse, TokenVerifier

ISSUER = "https://auth.example.com"
AUDIENCE = "https://api.example.com"
JWKS_URI = ISSUER + "/.well-known/jwks.json"
STATUS_LIST_URI = ISSUER + "/oauth/status/1"
STATUS_LIST_SIZE = 1 << 17  # the server's default list size
ALGORITHMS = ("RS256", "ES256", "EdDSA")


class MemoryJWKS:
    """An HttpClient serving one JWKS and one status list from memory (counts fetches)."""

    def __init__(self, jwks: dict, status_list: str) -> None:
        self.body = json.dumps(jwks).encode()
        self.status_list = status_list.encode()
        self.fetches = 0
        self.list_fetches = 0

    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        if url == STATUS_LIST_URI:
            self.list_fetches += 1
            return HttpResponse(200, self.status_list,
                                {"content-type": "application/statuslist+jwt"})
        self.fetches += 1
        return HttpResponse(200, self.body, {"cache-control": "public, max-age=86400"})

    def post(self, *args: object, **kwargs: object) -> HttpResponse:
        raise NotImplementedError


@dataclass(frozen=True)
class Case:
    alg: str
    token: str
    status: dict
    jwk: dict
    verifier: TokenVerifier
    unchecked: TokenVerifier  # the same, with status=False
    http: MemoryJWKS


def make_case(alg: str) -> Case:
    key = jose.generate_private_key(alg)
    kid = jose.thumbprint(key)
    jwk = jose.public_jwk(key, kid, alg)
    now = int(time.time())
    rng = random.Random(alg)
    revoked = [(idx, 1) for idx in rng.sample(range(STATUS_LIST_SIZE), 2_000)]
    idx = next(i for i in range(STATUS_LIST_SIZE // 2, STATUS_LIST_SIZE)
               if (i, 1) not in set(revoked))
    status_list = jose.sign_jwt(
        {"iss": ISSUER, "sub": STATUS_LIST_URI, "iat": now, "exp": now + 86_400,
         "ttl": 86_400, "status_list": {"bits": 1, "lst": status_list_codec.encode(
             STATUS_LIST_SIZE, revoked)}}, key, kid=kid, alg=alg, typ="statuslist+jwt")
    status = {"status_list": {"idx": idx, "uri": STATUS_LIST_URI}}
    claims = {"iss": ISSUER, "sub": "u-42", "aud": AUDIENCE, "client_id": "app-7",
              "scope": "orders:read orders:write", "iat": now, "exp": now + 3600,
              "jti": uuid.uuid4().hex, "sid": uuid.uuid4().hex, "auth_time": now,
              "status": status}
    token = jose.sign_jwt(claims, key, kid=kid, alg=alg, typ="at+jwt")
    http = MemoryJWKS({"keys": [jwk]}, status_list)
    verifier = TokenVerifier(ISSUER, AUDIENCE, jwks_uri=JWKS_URI, http=http)
    unchecked = TokenVerifier(ISSUER, AUDIENCE, jwks_uri=JWKS_URI, http=http, status=False)
    verifier.verify(token)  # warm: the JWKS fetch and the list fetch happen here
    unchecked.verify(token)
    return Case(alg, token, status, jwk, verifier, unchecked, http)


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


def status_cost(case: Case, duration: float, rounds: int) -> dict[str, float]:
    """Status on vs off: the best of ``rounds`` alternating rounds of each (per CPU-second),
    and the check alone in microseconds."""
    on: list[float] = []
    off: list[float] = []
    for round_ in range(rounds):
        pair = [(on, case.verifier), (off, case.unchecked)]
        for rates, verifier in (pair if round_ % 2 == 0 else pair[::-1]):
            rates.append(measure(lambda v=verifier: v.verify(case.token), duration)[0])
    status_lists = case.verifier.status_lists
    assert status_lists is not None
    check = max(measure(lambda: status_lists.check(case.status), duration / 2)[0]
                for _ in range(3))
    best_on, best_off = max(on), max(off)
    return {"on": best_on, "off": best_off, "cost": best_off / best_on - 1,
            "check_us": 1e6 / check, "share": best_on / check}


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
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating rounds of status on and off (default 5)")
    args = parser.parse_args(argv)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# token verification, warm JWKS cache and status list; "
          f"{platform.python_implementation()} "
          f"{platform.python_version()}, PyJWT {jwt.__version__}, "
          f"{os.cpu_count()} cores, load {load:.1f}")
    print(f"# rates are per CPU-second of one process (= per core); "
          f"wall-clock rate in brackets; {args.duration:g} s each")
    names = ["authserver.resource", "jwt.decode", "signature only"]
    print(f"| alg   | {' | '.join(f'{n:>26}' for n in names)} | µs/verify |")
    print(f"|-------|{'|'.join('-' * 28 for _ in names)}|-----------|")
    cases = {alg: make_case(alg) for alg in args.algs}
    for alg, case in cases.items():
        results = {name: measure(fn, args.duration) for name, fn in contenders(case).items()}
        cells = [f"{cpu:>9,.0f}/s ({wall:>9,.0f}/s)" for cpu, wall in
                 (results[n] for n in names)]
        micros = 1e6 / results["authserver.resource"][0]
        print(f"| {alg:<5} | {' | '.join(f'{c:>26}' for c in cells)} | {micros:>9.0f} |")

    print(f"\n# the status list check: the same token, status checking on (warm list of "
          f"{STATUS_LIST_SIZE:,} entries) vs off; best of {args.rounds} alternating rounds "
          f"of {args.duration:g} s, per CPU-second")
    print("| alg   | status off | status on | cost of the check | check alone | share |")
    print("|-------|------------|-----------|-------------------|-------------|-------|")
    for alg, case in cases.items():
        cost = status_cost(case, args.duration, args.rounds)
        print(f"| {alg:<5} | {cost['off']:>8,.0f}/s | {cost['on']:>7,.0f}/s | "
              f"{cost['cost']:>+16.1%} | {cost['check_us']:>8.2f} µs | "
              f"{cost['share']:>5.1%} |")
        assert case.http.fetches == 2, "the JWKS cache must stay warm"
        assert case.http.list_fetches == 1, "the status list must stay warm"
    if args.processes:
        print(f"\n# {args.processes} processes verifying at once (wall-clock total)")
        for alg in args.algs:
            total = all_cores(alg, args.processes, args.duration)
            print(f"| {alg:<5} | {total:>10,.0f}/s |")


if __name__ == "__main__":
    main()
