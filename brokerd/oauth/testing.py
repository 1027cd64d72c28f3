"""A fake driver for tests of code built on the OAuth core: canned answers in, recorded effects out.

    server = FakeDriver({"GET https://mcp.example/.well-known/oauth-protected-resource/mcp": json_response(
        200, {...})}, redirect=lambda effect: {"code": "c", "state": effect.state})
    discovery = run_sync(discover(url, policy=UrlPolicy()), server)
    assert [r.url for r in server.requests] == [...]

Not used by the daemon. Pure like the rest of the package.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

import msgspec

from brokerd.oauth._effects import (
    AwaitRedirect,
    Effect,
    Entropy,
    Fetch,
    HttpRequest,
    HttpResponse,
    ShowDeviceCode,
    Sleep,
    TransportFailure,
)
from brokerd.oauth._jose import JwsSigner

__all__ = [
    "EXAMPLE_EC_JKT",
    "EXAMPLE_EC_JWK",
    "Answer",
    "FakeDriver",
    "counter_entropy",
    "fake_signer",
    "json_response",
]

Answer = HttpResponse | TransportFailure

#: RFC 9449 §4.1's example public key; RFC 9449 §6.1 gives its thumbprint, :data:`EXAMPLE_EC_JKT`.
EXAMPLE_EC_JWK = {
    "kty": "EC",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    "crv": "P-256",
}
EXAMPLE_EC_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


def json_response(status: int, document: object, headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
    """An :class:`HttpResponse` with ``document`` as its JSON body (bytes are used as they are)."""
    body = document if isinstance(document, bytes) else msgspec.json.encode(document)
    return HttpResponse(status, (("content-type", "application/json"), *headers), body)


def counter_entropy(seed: bytes = b"test") -> Entropy:
    """Deterministic "random" bytes: a SHA-256 stream of ``seed`` and a counter. For tests only."""
    counter = 0

    def entropy(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            counter += 1
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        return out[:n]

    return entropy


def fake_signer(alg: str = "ES256", public_jwk: Mapping[str, str] | None = None) -> JwsSigner:
    """A :class:`JwsSigner` whose "signature" is the SHA-256 of the signing input, with
    :data:`EXAMPLE_EC_JWK` as its public key: for tests of how JWTs are composed, not of cryptography."""
    jwk = EXAMPLE_EC_JWK if public_jwk is None else public_jwk
    return JwsSigner(alg, lambda data: hashlib.sha256(data).digest(), jwk)


class FakeDriver:
    """Answers effects. :class:`Fetch`: from ``routes`` ("METHOD URL" → an answer, or a list answered in
    order whose last answer repeats), 404 for unknown routes. :class:`AwaitRedirect`: ``redirect(effect)``.
    :class:`Sleep`: advances ``now``. Every response is stamped ``received_at=now``. Records what it saw."""

    def __init__(
        self,
        routes: Mapping[str, Answer | list[Answer]] | None = None,
        *,
        now: float = 1_000_000.0,
        redirect: Callable[[AwaitRedirect], Mapping[str, str]] | None = None,
    ) -> None:
        self.routes = {k: list(v) if isinstance(v, list) else v for k, v in (routes or {}).items()}
        self.now = now
        self.redirect = redirect
        self.requests: list[HttpRequest] = []
        self.effects: list[Effect] = []

    def __call__(self, effect: Effect) -> object:
        self.effects.append(effect)
        if isinstance(effect, Fetch):
            return self._answer(effect.request)
        if isinstance(effect, AwaitRedirect):
            if self.redirect is None:
                raise AssertionError(f"unexpected AwaitRedirect to {effect.authorization_url}")
            return self.redirect(effect)
        if isinstance(effect, ShowDeviceCode):
            return None
        assert isinstance(effect, Sleep)
        self.now += effect.seconds
        return self.now

    @property
    def urls(self) -> list[str]:
        """``METHOD URL`` of every request, in order."""
        return [f"{r.method} {r.url}" for r in self.requests]

    def _answer(self, request: HttpRequest) -> Answer:
        self.requests.append(request)
        key = f"{request.method} {request.url}"
        route = self.routes.get(key)
        if isinstance(route, list):
            if not route:
                raise AssertionError(f"no more canned answers for {key}")
            route = route.pop(0) if len(route) > 1 else route[0]
        if route is None:
            route = HttpResponse(404, (), b"not found")
        if isinstance(route, HttpResponse):
            return replace(route, received_at=self.now)
        return route
