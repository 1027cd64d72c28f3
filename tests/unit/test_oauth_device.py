"""Device authorization grant (A8, RFC 8628): polling, interval, slow_down, expiry."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from brokerd.oauth import (
    AuthorizationDeniedError,
    Discovery,
    Fetch,
    GrantEndedError,
    PolicyError,
    Registration,
    ShowDeviceCode,
    Sleep,
    TokenSet,
    TransportFailure,
    UrlPolicy,
    device_flow,
    run_sync,
)
from brokerd.oauth.testing import Answer, FakeDriver, json_response

AS = "https://auth.example.com"
DEVICE = f"{AS}/device"
TOKEN = f"{AS}/token"
MCP = "https://mcp.example.com/mcp"
POLICY = UrlPolicy()
REG = Registration(issuer=AS, client_id="pub")
DISCOVERY = Discovery(
    server_url=MCP,
    resource=MCP,
    issuer=AS,
    authorization_endpoint=f"{AS}/authorize",
    token_endpoint=TOKEN,
    device_authorization_endpoint=DEVICE,
)


def device_answer(**changes: Any) -> Answer:
    doc = {
        "device_code": "dev-code-secret",
        "user_code": "WDJB-MJHT",
        "verification_uri": f"{AS}/device-login",
        "verification_uri_complete": f"{AS}/device-login?user_code=WDJB-MJHT",
        "expires_in": 600,
        "interval": 5,
        **changes,
    }
    return json_response(200, {k: v for k, v in doc.items() if v is not None})


def pending(error: str = "authorization_pending") -> Answer:
    return json_response(400, {"error": error})


GRANTED = json_response(200, {"access_token": "at", "token_type": "Bearer", "expires_in": 60})


def run(
    device: Answer, polls: list[Answer], scopes: tuple[str, ...] | None = ("read",)
) -> tuple[TokenSet, FakeDriver]:
    driver = FakeDriver({f"POST {DEVICE}": device, f"POST {TOKEN}": polls}, now=1000.0)
    return run_sync(device_flow(DISCOVERY, REG, policy=POLICY, scopes=scopes), driver), driver


def test_device_flow_by_hand() -> None:
    """A8: device authorization, ShowDeviceCode, then Sleep(interval) and a poll, until tokens arrive."""
    flow = device_flow(DISCOVERY, REG, policy=POLICY, scopes=("read",))
    effect = next(flow)
    assert isinstance(effect, Fetch)
    assert effect.request.url == DEVICE
    assert effect.request.form() == {"client_id": "pub", "scope": "read", "resource": MCP}
    show = flow.send(_stamped(device_answer(), 1000.0))
    assert show == ShowDeviceCode(
        f"{AS}/device-login", f"{AS}/device-login?user_code=WDJB-MJHT", "WDJB-MJHT", 1600.0
    )
    assert flow.send(None) == Sleep(5.0)
    poll = flow.send(1005.0)
    assert isinstance(poll, Fetch)
    assert poll.request.form() == {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": "dev-code-secret",
        "resource": MCP,
        "client_id": "pub",
    }
    assert flow.send(_stamped(pending(), 1005.0)) == Sleep(5.0)
    assert isinstance(flow.send(1010.0), Fetch)
    with pytest.raises(StopIteration) as stop:
        flow.send(_stamped(GRANTED, 1010.0))
    assert stop.value.value.expires_at == 1070.0
    assert stop.value.value.scopes == ("read",)


def _stamped(answer: Answer, at: float) -> Answer:
    return dataclasses.replace(answer, received_at=at) if not isinstance(answer, TransportFailure) else answer


def test_interval_defaults_to_five_seconds() -> None:
    """A8: without interval, polling waits 5 s."""
    _, driver = run(device_answer(interval=None), [pending(), GRANTED])
    assert [e.seconds for e in driver.effects if isinstance(e, Sleep)] == [5.0, 5.0]


def test_slow_down_adds_five_seconds_each_time() -> None:
    """A8: each slow_down adds 5 s to the interval, for good."""
    polls = [pending("slow_down"), pending(), pending("slow_down"), pending(), GRANTED]
    _, driver = run(device_answer(interval=2), polls)
    assert [e.seconds for e in driver.effects if isinstance(e, Sleep)] == [2.0, 7.0, 7.0, 12.0, 12.0]


def test_transient_poll_failures_keep_polling() -> None:
    """A8, T5: a network error or 5xx during polling is retried at the next interval."""
    tokens, driver = run(device_answer(), [TransportFailure("reset"), json_response(503, b""), GRANTED])
    assert tokens.access_token.reveal() == "at"
    assert len(driver.requests) == 4


@pytest.mark.parametrize("error", ["access_denied", "expired_token"])
def test_denied_or_expired_stops(error: str) -> None:
    """A8: access_denied and expired_token end the login with a clear error."""
    with pytest.raises(AuthorizationDeniedError) as info:
        run(device_answer(), [pending(), pending(error)])
    assert info.value.error == error
    assert info.value.hint is not None


def test_expiry_measured_by_the_sleep_clock() -> None:
    """A8: when the time returned by Sleep passes the code's expiry, polling stops without another request."""
    with pytest.raises(AuthorizationDeniedError, match="expired") as info:
        run(device_answer(expires_in=12, interval=5), [pending()])
    assert info.value.error == "expired_token"


def test_other_poll_errors_are_classified() -> None:
    """A8, T5: other token errors during polling are raised as classified."""
    with pytest.raises(GrantEndedError):
        run(device_answer(), [pending("invalid_client")])


@pytest.mark.parametrize(
    "changes",
    [{"verification_uri": "javascript:alert(1)"}, {"verification_uri_complete": "http://evil.example/x"}],
)
def test_verification_uris_pass_the_policy(changes: dict[str, str]) -> None:
    """A7: the URIs shown to the user pass the URL policy."""
    with pytest.raises(PolicyError):
        run(device_answer(**changes), [])


def test_legacy_verification_url_spelling() -> None:
    """A8: the draft spelling verification_url is accepted."""
    _, driver = run(device_answer(verification_uri=None, verification_url=f"{AS}/d"), [GRANTED])
    shown = [e for e in driver.effects if isinstance(e, ShowDeviceCode)]
    assert shown[0].verification_uri == f"{AS}/d"


def test_requires_device_endpoint() -> None:
    """A8: the device flow needs a device_authorization_endpoint."""
    with pytest.raises(ValueError, match="device_authorization_endpoint"):
        next(
            device_flow(
                msgspec.structs.replace(DISCOVERY, device_authorization_endpoint=None),
                REG,
                policy=POLICY,
                scopes=None,
            )
        )
