"""What an HTTP client does with the daemon's token answer, whichever client it is (``BrokerAuth``, the
stdio proxy): the headers to send, and whether a 401 asks for a DPoP nonce (RFC 9449 §9).

A Bearer token goes as ``Authorization: Bearer <token>``; a DPoP-bound one as ``Authorization: DPoP
<token>`` with ``DPoP: <proof>``, a proof the daemon made for that one request (method and URL): the key
that signs it never leaves the daemon. Standard library only.
"""

from __future__ import annotations

from typing import Any

from ncp_client._errors import ProtocolError

__all__ = ["Credential", "nonce_demanded", "request_fields"]


class Credential:
    """A token answer of the daemon: the token, its type (``Bearer`` or ``DPoP``) and the proof.

    Raises (on construction):
        ProtocolError: the answer has no token, or a DPoP token comes without its proof.
    """

    __slots__ = ("dpop", "token", "token_type")

    def __init__(self, result: Any) -> None:
        if not isinstance(result, dict) or not isinstance(result.get("token"), str):
            raise ProtocolError("protocol_error", "the daemon's answer has no token")
        self.token: str = result["token"]
        self.token_type = str(result.get("token_type") or "Bearer")
        proof = result.get("dpop")
        self.dpop: str | None = proof if isinstance(proof, str) else None
        if self.bound and self.dpop is None:
            raise ProtocolError("protocol_error", "the daemon answered a DPoP token without a proof")

    @property
    def bound(self) -> bool:
        """A DPoP-bound token: it needs its proof (a fresh one for each request)."""
        return self.token_type.lower() == "dpop"

    def headers(self) -> dict[str, str]:
        """The request headers that carry it: ``Authorization``, and ``DPoP`` for a bound token."""
        if self.bound:
            assert self.dpop is not None
            return {"Authorization": f"DPoP {self.token}", "DPoP": self.dpop}
        return {"Authorization": f"Bearer {self.token}"}


def nonce_demanded(status: int, dpop_nonce: str | None, challenge: str | None) -> str | None:
    """The resource server's new DPoP nonce when its answer demands one (a 401 whose ``WWW-Authenticate``
    is a DPoP ``use_dpop_nonce`` challenge, with a ``DPoP-Nonce`` header), else None."""
    if status != 401 or not dpop_nonce or challenge is None:
        return None
    if "use_dpop_nonce" not in challenge or "dpop" not in challenge.lower():
        return None
    return dpop_nonce.strip() or None


def request_fields(method: str, url: str, nonce: str | None = None) -> dict[str, Any]:
    """The fields of a ``get_token``/``token_rejected`` that name the request a token is for (a DPoP proof
    is bound to them)."""
    fields: dict[str, Any] = {"method": method, "url": url}
    if nonce is not None:
        fields["dpop_nonce"] = nonce
    return fields
