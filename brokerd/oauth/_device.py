"""The device authorization grant (RFC 8628, A8), for logins where no browser can reach the loopback.

Flow: POST to ``device_authorization_endpoint`` → :class:`ShowDeviceCode` → repeat { :class:`Sleep` for
``interval`` (default 5 s); stop at the code's expiry, measured with the time the driver returns from the
sleep; poll the token endpoint }. ``authorization_pending`` keeps polling, ``slow_down`` adds 5 s to the
interval for good, ``access_denied`` and ``expired_token`` end the login. A transient failure of one poll
(network, 408, 429, 5xx) is not fatal: polling goes on until the code expires.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import msgspec

from brokerd.oauth._discovery import Discovery
from brokerd.oauth._effects import Effect, Flow, HttpResponse, ShowDeviceCode, fetch, show_device_code, sleep
from brokerd.oauth._errors import AuthorizationDeniedError, PeerError, PolicyError
from brokerd.oauth._http import decode, error_fields, is_transient, post_form
from brokerd.oauth._registration import Registration, client_auth
from brokerd.oauth._sender import Sender, token_request
from brokerd.oauth._text import untrusted
from brokerd.oauth._tokens import TokenSet, parse_token_response, token_error
from brokerd.oauth._urls import UrlPolicy
from brokerd.secret import Secret

__all__ = ["device_flow"]

DEFAULT_INTERVAL = 5.0
SLOW_DOWN_STEP = 5.0
_DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_RETRY_HINT = "start the login again"


class _DeviceAuthorization(msgspec.Struct):
    device_code: str
    user_code: str
    expires_in: int | float
    verification_uri: str | None = None
    verification_url: str | None = None  # the draft's spelling, still sent by some servers
    verification_uri_complete: str | None = None
    interval: int | float | None = None


def device_flow(
    discovery: Discovery,
    registration: Registration,
    *,
    policy: UrlPolicy,
    scopes: Sequence[str] | None,
    sender: Sender | None = None,
) -> Flow[TokenSet]:
    """Log in with the device authorization grant (A8). Call only when
    ``discovery.device_authorization_endpoint`` is set (else ValueError). ``sender`` adds a fresh DPoP
    proof to each token poll (E3).

    Yields a :class:`Fetch` (device authorization), one :class:`ShowDeviceCode`, then :class:`Sleep` and
    :class:`Fetch` (token poll) in turn.

    Raises:
        AuthorizationDeniedError: ``access_denied``, or the code expired (``expired_token``, or the time
            returned by a Sleep passed the expiry).
        PolicyError: the registration is for another issuer, an endpoint or verification URI is refused.
        PeerError: the device authorization response is unusable.
        TransientError: the device authorization request failed transiently.
        GrantEndedError, RequestRejectedError: the server refused the client or the request.
    """
    if registration.issuer != discovery.issuer:
        raise PolicyError(
            f"the client registration belongs to {registration.issuer}, not to {discovery.issuer}"
        )
    started = yield from _start(discovery, registration, policy=policy, scopes=scopes)
    device_code, show, interval = started
    yield from show_device_code(show)
    resource = discovery.resource_indicator
    poll = [("grant_type", _DEVICE_GRANT), ("device_code", device_code.reveal())]
    if resource is not None:
        poll.append(("resource", resource))
    while True:
        now = yield from sleep(interval)
        if now >= show.expires_at:
            raise _expired()
        reply = yield from token_request(discovery.token_endpoint, poll, registration, policy, sender)
        result = reply.result
        if is_transient(result):
            continue
        assert isinstance(result, HttpResponse)
        if result.status == 400:
            code, _ = error_fields(result.body)
            if code == "authorization_pending":
                continue
            if code == "slow_down":
                interval += SLOW_DOWN_STEP
                continue
            if code == "access_denied":
                raise AuthorizationDeniedError("the login was denied", error=code, hint=_RETRY_HINT)
            if code == "expired_token":
                raise _expired()
        return parse_token_response(
            reply,
            what="the device token request",
            secrets=(device_code, registration.client_secret),
            registration=registration,
            token_endpoint=discovery.token_endpoint,
            resource=resource,
            revocation_endpoint=discovery.revocation_endpoint,
            requested_scopes=scopes,
            grant_type=_DEVICE_GRANT,
        )


def _expired() -> AuthorizationDeniedError:
    return AuthorizationDeniedError(
        "the device code expired before the login was approved", error="expired_token", hint=_RETRY_HINT
    )


def _start(
    discovery: Discovery, registration: Registration, *, policy: UrlPolicy, scopes: Sequence[str] | None
) -> Generator[Effect, object, tuple[Secret, ShowDeviceCode, float]]:
    """The device authorization request: (device code, what to show, polling interval)."""
    endpoint = discovery.device_authorization_endpoint
    if endpoint is None:
        raise ValueError("the authorization server has no device_authorization_endpoint")
    policy.check(endpoint, what="the device authorization endpoint")
    headers, auth_form = client_auth(registration)
    form = [*auth_form]
    if scopes:
        form.append(("scope", " ".join(scopes)))
    if discovery.resource_indicator is not None:
        form.append(("resource", discovery.resource_indicator))
    result = yield from fetch(post_form(endpoint, form, headers))
    if not isinstance(result, HttpResponse) or result.status != 200:
        raise token_error(
            result,
            what="the device authorization request",
            secrets=(registration.client_secret,),
            endpoint="the device authorization endpoint",
        )
    try:
        answer = decode(result.body, _DeviceAuthorization)
    except (msgspec.MsgspecError, ValueError) as exc:
        raise PeerError(
            "the device authorization endpoint answered with an unusable document"
            f" ({untrusted(str(exc), limit=120)})"
        ) from None
    verification_uri = answer.verification_uri or answer.verification_url
    if not verification_uri:
        raise PeerError("the device authorization response has no verification_uri")
    policy.check(verification_uri, what="the device verification URI")
    if answer.verification_uri_complete is not None:
        policy.check(answer.verification_uri_complete, what="the device verification URI")
    interval = float(answer.interval) if answer.interval and answer.interval > 0 else DEFAULT_INTERVAL
    show = ShowDeviceCode(
        verification_uri=verification_uri,
        verification_uri_complete=answer.verification_uri_complete,
        user_code=untrusted(answer.user_code, limit=64),
        expires_at=result.received_at + float(answer.expires_in),
    )
    return Secret(answer.device_code), show, interval
