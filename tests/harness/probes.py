"""Reading what the servers hand out: a JWT access token's claims, an MCP server's tool names, and a
printable name for a token.

Tokens are never put in a failure message: tests print ``digest(token)`` instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx

from tests.servers.helpers import McpSession

__all__ = ["digest", "jwt_claims", "tool_names"]


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT access token, read without verifying it (the MCP server verifies tokens).

    Raises:
        ValueError: ``token`` is not a JWT with a JSON payload (the message does not include the token).
    """
    try:
        payload = token.split(".")[1]
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise ValueError(f"token {digest(token)} is not a JWT") from None
    return claims


def tool_names(url: str, token: str) -> list[str]:
    """The tool names the MCP server at ``url`` lists for ``token`` (initialize, then ``tools/list``).

    Raises:
        tests.servers.helpers.McpError: the server refused the token or the request.
    """
    with httpx.Client(timeout=10, trust_env=False) as http:
        session = McpSession(http, url, token)
        session.initialize()
        return [tool["name"] for tool in session.request("tools/list")["tools"]]


def digest(token: str) -> str:
    """A name for a token in failure messages (tokens themselves are never printed)."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]
