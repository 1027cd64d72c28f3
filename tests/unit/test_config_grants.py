"""Config keys for grants without a browser and DPoP (E1-E4): what each reads as, and every contradiction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from brokerd import config
from brokerd.secret import Secret

URL = "https://mcp.example.com/mcp"
WHERE = '$.mcpServers["s"].auth.oauth21'


def settings(oauth21: dict[str, Any], **auth: Any) -> config.OAuthSettings:
    doc = {"mcpServers": {"s": {"url": URL, "auth": {"type": "oauth", "oauth21": oauth21, **auth}}}}
    server = config.parse(json.dumps(doc).encode()).servers["s"]
    assert server.oauth is not None
    return server.oauth


def refused(oauth21: dict[str, Any], **auth: Any) -> config.ConfigError:
    with pytest.raises(config.ConfigError) as err:
        settings(oauth21, **auth)
    return err.value


def test_defaults_are_todays_behaviour() -> None:
    """oauth21: {} still means: a person logs in (authorization code), DPoP when both sides offer it."""
    s = settings({})
    assert (s.grant, s.dpop, s.token_endpoint_auth_method) == ("authorization_code", "auto", None)
    assert (s.private_key, s.workload_token, s.enterprise) == (None, None, None)


@pytest.mark.parametrize(
    ("oauth21", "expected"),
    [
        (
            {"grant": "client_credentials", "clientId": "ci", "clientSecret": "s"},
            {"grant": "client_credentials", "client_secret": Secret("s")},
        ),
        (
            {"grant": "client_credentials", "clientId": "ci", "privateKey": {"file": "/etc/ci/key.pem"}},
            {"grant": "client_credentials", "private_key": config.KeySource(file=Path("/etc/ci/key.pem"))},
        ),
        (
            {"grant": "client_credentials", "clientId": "ci", "privateKey": {"keyring": "ci-key"}},
            {"private_key": config.KeySource(keyring="ci-key")},
        ),
        (
            {
                "grant": "client_credentials",
                "clientId": "ci",
                "clientSecret": "s",
                "tokenEndpointAuthMethod": "client_secret_post",
            },
            {"token_endpoint_auth_method": "client_secret_post"},
        ),
        (
            {"workloadToken": {"file": "/var/run/secrets/tokens/mcp"}},
            {
                "grant": "jwt_bearer",
                "workload_token": config.TokenSource(file=Path("/var/run/secrets/tokens/mcp")),
            },
        ),
        (
            {"grant": "jwt_bearer", "workloadToken": {"command": ["gcloud", "auth", "print-identity-token"]}},
            {"workload_token": config.TokenSource(command=("gcloud", "auth", "print-identity-token"))},
        ),
        (
            {
                "clientId": "mcp-client",
                "enterprise": {"issuer": "https://acme.okta.com", "clientId": "idp-client"},
            },
            {
                "grant": "jwt_bearer",
                "enterprise": config.EnterpriseSettings(
                    issuer="https://acme.okta.com", client_id="idp-client"
                ),
            },
        ),
        (
            {
                "clientId": "mcp-client",
                "clientSecret": "s",
                "enterprise": {
                    "issuer": "https://acme.okta.com",
                    "clientId": "idp-client",
                    "clientSecret": "idp-secret",
                    "idToken": {"file": "~/.cache/acme/id_token"},
                    "scopes": ["openid", "email"],
                },
            },
            {
                "enterprise": config.EnterpriseSettings(
                    issuer="https://acme.okta.com",
                    client_id="idp-client",
                    client_secret=Secret("idp-secret"),
                    id_token=config.TokenSource(file=Path("~/.cache/acme/id_token")),
                    scopes=("openid", "email"),
                )
            },
        ),
        ({"dpop": "off"}, {"dpop": "off"}),
        ({"dpop": "required", "callbackPort": 9876}, {"dpop": "required", "callback_port": 9876}),
    ],
    ids=[
        "cc-secret",
        "cc-key-file",
        "cc-key-keyring",
        "cc-secret-post",
        "workload-file",
        "workload-command",
        "enterprise-login",
        "enterprise-id-token-file",
        "dpop-off",
        "dpop-required",
    ],
)
def test_each_grant_reads_as_written(oauth21: dict[str, Any], expected: dict[str, Any]) -> None:
    """E1, E2, E4, E3: each documented example becomes the settings it says."""
    s = settings(oauth21)
    for name, value in expected.items():
        assert getattr(s, name) == value, name


@pytest.mark.parametrize(
    ("oauth21", "where", "problem"),
    [
        ({"grant": "client_credentials"}, "", "needs clientId, and clientSecret or privateKey"),
        (
            {"grant": "client_credentials", "clientId": "ci"},
            "",
            "needs clientId, and clientSecret or privateKey",
        ),
        ({"grant": "jwt_bearer"}, ".grant", "needs workloadToken or enterprise"),
        (
            {
                "grant": "client_credentials",
                "clientId": "c",
                "clientSecret": "s",
                "workloadToken": {"file": "/t"},
            },
            ".workloadToken",
            'only with grant "jwt_bearer"',
        ),
        (
            {
                "workloadToken": {"file": "/t"},
                "clientId": "c",
                "enterprise": {"issuer": "https://i.example", "clientId": "x"},
            },
            "",
            "not both",
        ),
        (
            {"grant": "client_credentials", "clientId": "c", "clientSecret": "s", "callbackPort": 9876},
            ".callbackPort",
            "no browser",
        ),
        (
            {"workloadToken": {"file": "/t"}, "clientMetadataUrl": "https://c.example/m.json"},
            ".clientMetadataUrl",
            "no browser",
        ),
        ({"clientId": "c", "clientSecret": "s", "privateKey": {"file": "/k.pem"}}, "", "not both"),
        ({"privateKey": {"file": "/k.pem"}}, "", "privateKey is given without clientId"),
        (
            {"clientId": "c", "tokenEndpointAuthMethod": "private_key_jwt"},
            ".tokenEndpointAuthMethod",
            "needs privateKey",
        ),
        (
            {"clientId": "c", "tokenEndpointAuthMethod": "client_secret_basic"},
            ".tokenEndpointAuthMethod",
            "needs clientSecret",
        ),
        (
            {
                "clientId": "c",
                "tokenEndpointAuthMethod": "client_secret_post",
                "privateKey": {"file": "/k.pem"},
            },
            ".tokenEndpointAuthMethod",
            "privateKey is given",
        ),
        (
            {"clientId": "c", "clientSecret": "s", "tokenEndpointAuthMethod": "none"},
            ".tokenEndpointAuthMethod",
            "clientSecret is given",
        ),
        ({"tokenEndpointAuthMethod": "none"}, ".tokenEndpointAuthMethod", "without clientId"),
        (
            {"tokenEndpointAuthMethod": "tls_client_auth", "clientId": "c"},
            ".tokenEndpointAuthMethod",
            'must be "none", "client_secret_basic", "client_secret_post" or "private_key_jwt"',
        ),
        (
            {"clientId": "c", "privateKey": {"command": ["cat", "/k.pem"]}},
            ".privateKey",
            'exactly one of "file" or "keyring"',
        ),
        ({"clientId": "c", "privateKey": {"file": "/k.pem", "keyring": "k"}}, ".privateKey", "exactly one"),
        ({"clientId": "c", "privateKey": {"file": "keys/k.pem"}}, ".privateKey.file", "absolute path"),
        ({"clientId": "c", "privateKey": {}}, ".privateKey", "exactly one"),
        ({"clientId": "c", "privateKey": {"path": "/k.pem"}}, ".privateKey", ""),  # msgspec's words
        ({"workloadToken": {"keyring": "t"}}, ".workloadToken", 'exactly one of "file" or "command"'),
        ({"workloadToken": {"command": []}}, ".workloadToken.command", "non-empty list"),
        ({"workloadToken": {"command": ["print-token", ""]}}, ".workloadToken.command", "non-empty list"),
        (
            {"workloadToken": {"command": "print-token --aud x"}},
            ".workloadToken.command",
            "",
        ),  # msgspec's words
        ({"enterprise": {"issuer": "https://i.example", "clientId": "x"}}, "", "enterprise needs clientId"),
        (
            {"clientId": "c", "enterprise": {"issuer": "http://idp.example", "clientId": "x"}},
            ".enterprise.issuer",
            "plain http",
        ),
        (
            {"clientId": "c", "enterprise": {"issuer": "https://i.example"}},
            ".enterprise",
            "",  # msgspec's words
        ),
        (
            {
                "clientId": "c",
                "enterprise": {"issuer": "https://i.example", "clientId": "x", "scopes": ["email"]},
            },
            ".enterprise.scopes",
            "openid",
        ),
        ({"dpop": "always"}, ".dpop", 'must be "auto", "required" or "off", not "always"'),
        (
            {"grant": "device_code"},
            ".grant",
            'must be "authorization_code", "client_credentials" or "jwt_bearer"',
        ),
    ],
)
def test_contradictions_are_named(oauth21: dict[str, Any], where: str, problem: str) -> None:
    """Every contradiction or unusable value is a ConfigError at its JSON path, saying what is wrong."""
    err = refused(oauth21)
    assert err.where == WHERE + where
    assert problem in err.problem


def test_enterprise_loopback_issuer_only_with_allow_insecure_loopback() -> None:
    """E2: a test IdP on http://127.0.0.1 needs auth.allowInsecureLoopback, like the server itself."""
    doc = {"clientId": "c", "enterprise": {"issuer": "http://127.0.0.1:9000", "clientId": "x"}}
    assert refused(doc).where == WHERE + ".enterprise.issuer"
    doc_url = {"url": "http://127.0.0.1:8000/mcp"}
    raw = {
        "mcpServers": {
            "s": {**doc_url, "auth": {"type": "oauth", "oauth21": doc, "allowInsecureLoopback": True}}
        }
    }
    server = config.parse(json.dumps(raw).encode()).servers["s"]
    assert server.oauth is not None
    assert server.oauth.enterprise is not None


def test_secrets_of_the_new_keys_do_not_print() -> None:
    """Rule 8: the enterprise client secret is a Secret; the settings' repr does not show it."""
    s = settings(
        {
            "clientId": "c",
            "clientSecret": "mcp-secret-value",
            "enterprise": {
                "issuer": "https://i.example",
                "clientId": "x",
                "clientSecret": "idp-secret-value",
            },
        }
    )
    assert s.enterprise is not None
    assert isinstance(s.enterprise.client_secret, Secret)
    assert "secret-value" not in repr(s)


def test_an_ncp_entry_with_the_new_keys_keeps_ncp_keys() -> None:
    """NCP's own keys beside ours (command, env, transport) are tolerated as before."""
    doc = {
        "mcpServers": {
            "s": {
                "url": URL,
                "transport": "http",
                "env": {},
                "auth": {"type": "oauth", "oauth21": {"workloadToken": {"file": "/t"}}},
            }
        }
    }
    assert config.parse(json.dumps(doc).encode()).servers["s"].kind == "oauth"
