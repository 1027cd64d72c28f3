"""Discovery (D2-D7, S1, S2): canned metadata in, requests and a Discovery record out."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from brokerd.oauth import (
    Challenge,
    Discovery,
    DiscoveryError,
    Fetch,
    HttpResponse,
    PolicyError,
    TransientError,
    TransportFailure,
    UrlPolicy,
    bearer_challenge,
    discover,
    discover_issuer,
    resource_challenge,
    run_sync,
)
from brokerd.oauth.testing import Answer, FakeDriver, json_response

MCP = "https://mcp.example.com/mcp"
PRM_PATH = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
PRM_ROOT = "https://mcp.example.com/.well-known/oauth-protected-resource"
AS = "https://auth.example.com"
AS_OAUTH = f"{AS}/.well-known/oauth-authorization-server"
AS_OIDC = f"{AS}/.well-known/openid-configuration"
POLICY = UrlPolicy()


def prm(resource: str = MCP, servers: list[str] | None = None, **extra: Any) -> HttpResponse:
    return json_response(200, {"resource": resource, "authorization_servers": servers or [AS], **extra})


def as_meta(issuer: str = AS, **extra: Any) -> HttpResponse:
    doc = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "registration_endpoint": f"{issuer}/register",
        "code_challenge_methods_supported": ["S256"],
        "response_types_supported": ["code"],
        "x-vendor-extension": {"ignored": True},
        **extra,
    }
    return json_response(200, doc)


def run(
    routes: dict[str, Answer | list[Answer]],
    *,
    server: str = MCP,
    challenge: Challenge | None = None,
    policy: UrlPolicy = POLICY,
) -> tuple[Discovery, FakeDriver]:
    driver = FakeDriver(routes)
    return run_sync(discover(server, policy=policy, challenge=challenge), driver), driver


def test_resource_metadata_from_the_401_is_one_get_without_probing() -> None:
    """D2: resource_metadata from the challenge is fetched, and no well-known URL is probed."""
    named = "https://mcp.example.com/custom/prm.json"
    challenge = bearer_challenge(f'Bearer resource_metadata="{named}", scope="read"')
    discovery, driver = run({f"GET {named}": prm(), f"GET {AS_OAUTH}": as_meta()}, challenge=challenge)
    assert driver.urls == [f"GET {named}", f"GET {AS_OAUTH}"]
    assert discovery.resource_metadata_url == named
    assert discovery.challenge_scope == ("read",)


def test_resource_metadata_from_the_401_that_fails_stops_discovery() -> None:
    """D2: when the named metadata is missing, discovery stops instead of probing or falling back."""
    named = "https://mcp.example.com/custom/prm.json"
    driver = FakeDriver({f"GET {PRM_PATH}": prm(), f"GET {AS_OAUTH}": as_meta()})
    with pytest.raises(DiscoveryError, match="named by the server"):
        run_sync(
            discover(MCP, policy=POLICY, challenge=Challenge("Bearer", (("resource_metadata", named),))),
            driver,
        )
    assert driver.urls == [f"GET {named}"]


def test_relative_resource_metadata_is_resolved_against_the_server() -> None:
    """D2: a relative resource_metadata is resolved against the server URL, still one GET."""
    challenge = Challenge("Bearer", (("resource_metadata", "/custom/prm.json"),))
    discovery, driver = run(
        {"GET https://mcp.example.com/custom/prm.json": prm(), f"GET {AS_OAUTH}": as_meta()},
        challenge=challenge,
    )
    assert driver.urls[0] == "GET https://mcp.example.com/custom/prm.json"
    assert discovery.resource_metadata_url == "https://mcp.example.com/custom/prm.json"


def test_path_form_is_tried_before_root_form() -> None:
    """D2: without resource_metadata, /.well-known/oauth-protected-resource/<path> comes first, then root."""
    discovery, driver = run(
        {f"GET {PRM_ROOT}": prm(resource="https://mcp.example.com"), f"GET {AS_OAUTH}": as_meta()}
    )
    assert driver.urls[:2] == [f"GET {PRM_PATH}", f"GET {PRM_ROOT}"]
    assert discovery.resource == "https://mcp.example.com"
    assert discovery.resource_metadata_url == PRM_ROOT


def test_path_form_found_means_root_is_never_asked() -> None:
    """D2: when the path form answers, the root form is not requested."""
    _, driver = run({f"GET {PRM_PATH}": prm(), f"GET {AS_OAUTH}": as_meta()})
    assert f"GET {PRM_ROOT}" not in driver.urls


@pytest.mark.parametrize("server", ["https://mcp.example.com", "https://mcp.example.com/"])
def test_server_at_root_only_tries_root(server: str) -> None:
    """D2: a server at the root is only looked up at the root form."""
    discovery, driver = run(
        {f"GET {PRM_ROOT}": prm(resource=server), f"GET {AS_OAUTH}": as_meta()}, server=server
    )
    assert driver.urls[0] == f"GET {PRM_ROOT}"
    assert discovery.resource == server


def test_trailing_slash_is_stripped_before_inserting() -> None:
    """D2: https://host/mcp/ is looked up at /.well-known/oauth-protected-resource/mcp."""
    discovery, driver = run(
        {f"GET {PRM_PATH}": prm(resource=MCP), f"GET {AS_OAUTH}": as_meta()}, server=MCP + "/"
    )
    assert driver.urls[0] == f"GET {PRM_PATH}"
    assert discovery.resource == MCP


def test_html_page_at_the_path_form_counts_as_missing() -> None:
    """D2: a 200 that is not a metadata document (an app's catch-all page) is skipped, not fatal."""
    html = HttpResponse(200, (("content-type", "text/html"),), b"<html>app</html>")
    discovery, _ = run(
        {
            f"GET {PRM_PATH}": html,
            f"GET {PRM_ROOT}": prm(resource="https://mcp.example.com"),
            f"GET {AS_OAUTH}": as_meta(),
        }
    )
    assert discovery.resource == "https://mcp.example.com"


@pytest.mark.parametrize(
    "resource",
    [
        "https://evil.example.com/mcp",
        "https://mcp.example.com/mcp/",
        "https://MCP.example.com/mcp",
        "https://mcp.example.com/other",
    ],
)
def test_prm_resource_must_match_exactly(resource: str) -> None:
    """D3: a resource that is not exactly the server URL stops discovery before any AS is contacted."""
    driver = FakeDriver({f"GET {PRM_PATH}": prm(resource=resource), f"GET {AS_OAUTH}": as_meta()})
    with pytest.raises(DiscoveryError, match="refusing to authorize") as info:
        run_sync(discover(MCP, policy=POLICY), driver)
    assert driver.urls == [f"GET {PRM_PATH}"]
    assert info.value.hint is not None


def test_prm_from_challenge_must_name_the_server_url() -> None:
    """D3: metadata named in the 401 must carry the server URL itself, not just its origin."""
    challenge = Challenge("Bearer", (("resource_metadata", PRM_ROOT),))
    driver = FakeDriver({f"GET {PRM_ROOT}": prm(resource="https://mcp.example.com")})
    with pytest.raises(DiscoveryError):
        run_sync(discover(MCP, policy=POLICY, challenge=challenge), driver)


def test_root_form_accepts_the_origin_it_was_inserted_into() -> None:
    """D3: the root form's resource may be the origin the suffix was inserted into, used verbatim (A3)."""
    discovery, _ = run(
        {f"GET {PRM_ROOT}": prm(resource="https://mcp.example.com"), f"GET {AS_OAUTH}": as_meta()}
    )
    assert discovery.resource == "https://mcp.example.com"


def test_path_issuer_metadata_order_and_never_root() -> None:
    """D4: for issuer /t1 the three path forms are tried in order; the root forms never."""
    issuer = f"{AS}/t1"
    routes: dict[str, Answer | list[Answer]] = {
        f"GET {PRM_PATH}": prm(servers=[issuer]),
        f"GET {AS}/t1/.well-known/openid-configuration": as_meta(issuer),
        f"GET {AS_OAUTH}": as_meta(AS),
    }
    discovery, driver = run(routes)
    assert driver.urls[1:] == [
        f"GET {AS}/.well-known/oauth-authorization-server/t1",
        f"GET {AS}/.well-known/openid-configuration/t1",
        f"GET {AS}/t1/.well-known/openid-configuration",
    ]
    assert discovery.issuer == issuer
    assert discovery.token_endpoint == f"{issuer}/token"


def test_issuer_without_path_tries_oauth_then_openid() -> None:
    """D4: an issuer without a path uses oauth-authorization-server, then openid-configuration."""
    discovery, driver = run({f"GET {PRM_PATH}": prm(), f"GET {AS_OIDC}": as_meta()})
    assert driver.urls[1:] == [f"GET {AS_OAUTH}", f"GET {AS_OIDC}"]
    assert discovery.issuer == AS


@pytest.mark.parametrize(
    "wrong", [AS + "/", "https://AUTH.example.com", "https://evil.example.com", AS + "/t1"]
)
def test_issuer_must_be_identical(wrong: str) -> None:
    """D5: metadata whose issuer differs in any character from the issuer asked for is not used."""
    driver = FakeDriver(
        {f"GET {PRM_PATH}": prm(), f"GET {AS_OAUTH}": as_meta(wrong), f"GET {AS_OIDC}": as_meta(wrong)}
    )
    with pytest.raises(DiscoveryError, match="not used"):
        run_sync(discover(MCP, policy=POLICY), driver)


def test_issuer_mismatch_at_one_url_falls_through_to_the_next() -> None:
    """D5: a mismatched document is skipped; a correct one at the next well-known URL is used."""
    discovery, _ = run(
        {
            f"GET {PRM_PATH}": prm(),
            f"GET {AS_OAUTH}": as_meta("https://other.example"),
            f"GET {AS_OIDC}": as_meta(),
        }
    )
    assert discovery.issuer == AS


def test_legacy_issuer_is_the_lower_case_origin() -> None:
    """D6: the implied legacy issuer is the server's origin with scheme and host in lower case."""
    origin = "https://mcp.example.com"
    discovery, driver = run(
        {f"GET {origin}/.well-known/oauth-authorization-server": as_meta(origin)},
        server="https://MCP.example.com/mcp/",
    )
    assert driver.urls[-1] == f"GET {origin}/.well-known/oauth-authorization-server"
    assert discovery.issuer == origin
    assert discovery.resource == MCP


def test_legacy_metadata_found() -> None:
    """D6: metadata at the origin gives source legacy_metadata and the canonical server URL as resource."""
    origin = "https://mcp.example.com"
    discovery, driver = run({f"GET {origin}/.well-known/oauth-authorization-server": as_meta(origin)})
    assert driver.urls[-1] == f"GET {origin}/.well-known/oauth-authorization-server"
    assert discovery.source == "legacy_metadata"
    assert discovery.resource == MCP
    assert discovery.issuer == origin


def test_legacy_default_endpoints() -> None:
    """D6: with no metadata anywhere, /authorize, /token and /register at the origin are used."""
    discovery, driver = run({}, server="https://mcp.example.com/api/mcp")
    assert discovery.source == "legacy_defaults"
    assert discovery.issuer == "https://mcp.example.com"
    assert (discovery.authorization_endpoint, discovery.token_endpoint, discovery.registration_endpoint) == (
        "https://mcp.example.com/authorize",
        "https://mcp.example.com/token",
        "https://mcp.example.com/register",
    )
    assert discovery.resource == "https://mcp.example.com/api/mcp"
    assert driver.urls == [
        "GET https://mcp.example.com/.well-known/oauth-protected-resource/api/mcp",
        "GET https://mcp.example.com/.well-known/oauth-protected-resource",
        "GET https://mcp.example.com/.well-known/mcp.json",  # D8, before giving up on RFC 9728
        "GET https://mcp.example.com/.well-known/oauth-authorization-server",
        "GET https://mcp.example.com/.well-known/openid-configuration",
    ]


@pytest.mark.parametrize(
    "failure",
    [
        TransportFailure("connection refused"),
        json_response(503, {}, [("retry-after", "30")]),
        json_response(429, {}),
        json_response(408, {}),
    ],
)
def test_outage_is_transient_not_legacy(failure: Answer) -> None:
    """D6, T5: a network failure or 408/429/5xx while looking for PRM raises TransientError, no fallback."""
    driver = FakeDriver({f"GET {PRM_PATH}": failure})
    with pytest.raises(TransientError) as info:
        run_sync(discover(MCP, policy=POLICY), driver)
    assert not any("oauth-authorization-server" in url for url in driver.urls)
    if isinstance(failure, HttpResponse) and failure.status == 503:
        assert info.value.retry_after == 30.0


def test_several_authorization_servers_first_that_works() -> None:
    """D7: with several authorization_servers, the first whose metadata works is chosen."""
    second = "https://second.example.com"
    routes: dict[str, Answer | list[Answer]] = {
        f"GET {PRM_PATH}": prm(servers=[AS, second]),
        f"GET {second}/.well-known/oauth-authorization-server": as_meta(second),
    }
    discovery, _ = run(routes)
    assert discovery.issuer == second
    assert discovery.authorization_servers == (AS, second)
    assert discovery.token_endpoint == f"{second}/token"


def test_first_authorization_server_is_preferred() -> None:
    """D7: when the first authorization server works, the second is never contacted."""
    second = "https://second.example.com"
    discovery, driver = run({f"GET {PRM_PATH}": prm(servers=[AS, second]), f"GET {AS_OAUTH}": as_meta()})
    assert discovery.issuer == AS
    assert not any(second in url for url in driver.urls)


def test_no_authorization_server_works() -> None:
    """D7: when none works, the error names the problem; a transient failure wins so a retry can help."""
    second = "https://second.example.com"
    driver = FakeDriver(
        {
            f"GET {PRM_PATH}": prm(servers=[AS, second]),
            f"GET {second}/.well-known/oauth-authorization-server": TransportFailure("timeout"),
        }
    )
    with pytest.raises(TransientError):
        run_sync(discover(MCP, policy=POLICY), driver)
    driver = FakeDriver({f"GET {PRM_PATH}": prm(servers=[AS, second])})
    with pytest.raises(DiscoveryError, match="no authorization server metadata"):
        run_sync(discover(MCP, policy=POLICY), driver)


def test_prm_without_authorization_servers() -> None:
    """D3: metadata that names no authorization server is an error, not a legacy fallback."""
    driver = FakeDriver({f"GET {PRM_PATH}": json_response(200, {"resource": MCP})})
    with pytest.raises(DiscoveryError, match="names no authorization server"):
        run_sync(discover(MCP, policy=POLICY), driver)


@pytest.mark.parametrize(
    ("field", "value", "policy", "refused"),
    [
        ("token_endpoint", "http://auth.example.com/token", POLICY, True),
        ("token_endpoint", "https://10.0.0.5/token", POLICY, True),
        ("token_endpoint", "https://10.0.0.5/token", UrlPolicy(allow_private_network=True), False),
        ("authorization_endpoint", "javascript:alert(1)", POLICY, True),
        ("registration_endpoint", "https://169.254.169.254/register", POLICY, True),
        ("revocation_endpoint", "file:///etc/passwd", POLICY, True),
        ("device_authorization_endpoint", "https://[fe80::1]/device", POLICY, True),
    ],
)
def test_endpoints_pass_the_url_policy(field: str, value: str, policy: UrlPolicy, refused: bool) -> None:
    """S1, S2, A7: every endpoint in authorization server metadata passes the URL policy."""
    routes: dict[str, Answer | list[Answer]] = {
        f"GET {PRM_PATH}": prm(),
        f"GET {AS_OAUTH}": as_meta(**{field: value}),
    }
    if refused:
        with pytest.raises(PolicyError):
            run(routes, policy=policy)
    else:
        discovery, _ = run(routes, policy=policy)
        assert getattr(discovery, field) == value


def test_http_authorization_server_on_loopback_only_when_allowed() -> None:
    """S1: an http issuer on loopback is used only with allow_insecure_loopback."""
    mcp = "http://127.0.0.1:8000/mcp"
    issuer = "http://127.0.0.1:9000"
    routes: dict[str, Answer | list[Answer]] = {
        "GET http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp": prm(
            resource=mcp, servers=[issuer]
        ),
        f"GET {issuer}/.well-known/oauth-authorization-server": as_meta(issuer),
    }
    with pytest.raises(PolicyError, match="plain http"):
        run(routes, server=mcp)
    discovery, _ = run(routes, server=mcp, policy=UrlPolicy(allow_insecure_loopback=True))
    assert discovery.issuer == issuer


def test_authorization_server_on_private_address_is_refused() -> None:
    """S2: a PRM naming an authorization server on a private address is refused unless allowed."""
    with pytest.raises(PolicyError, match="private address"):
        run({f"GET {PRM_PATH}": prm(servers=["https://192.168.1.10"])})


@pytest.mark.parametrize(
    ("location", "refused"),
    [("https://169.254.169.254/latest", True), ("http://mcp.example.com/prm", True), ("/moved/prm", False)],
)
def test_metadata_redirects_are_checked(location: str, refused: bool) -> None:
    """S2: a metadata redirect is followed only to a URL the policy allows."""
    routes: dict[str, Answer | list[Answer]] = {
        f"GET {PRM_PATH}": HttpResponse(302, (("location", location),)),
        "GET https://mcp.example.com/moved/prm": prm(),
        f"GET {AS_OAUTH}": as_meta(),
    }
    if refused:
        with pytest.raises(PolicyError, match="redirect"):
            run(routes)
    else:
        discovery, driver = run(routes)
        assert driver.urls[1] == "GET https://mcp.example.com/moved/prm"
        assert discovery.resource == MCP


def test_discovery_record_fields_and_round_trip() -> None:
    """D2-D7: the record carries what later steps need and survives msgspec encoding."""
    routes: dict[str, Answer | list[Answer]] = {
        f"GET {PRM_PATH}": prm(scopes_supported=["read", "write"]),
        f"GET {AS_OAUTH}": as_meta(
            revocation_endpoint=f"{AS}/revoke",
            device_authorization_endpoint=f"{AS}/device",
            scopes_supported=["read", "write", "offline_access"],
            token_endpoint_auth_methods_supported=["none", "client_secret_basic"],
            authorization_response_iss_parameter_supported=True,
            client_id_metadata_document_supported=True,
        ),
    }
    discovery, _ = run(routes, challenge=Challenge("Bearer", (("scope", "read"),)))
    assert discovery.resource_scopes_supported == ("read", "write")
    assert discovery.scopes_supported == ("read", "write", "offline_access")
    assert discovery.challenge_scope == ("read",)
    assert discovery.authorization_response_iss_parameter_supported is True
    assert discovery.client_id_metadata_document_supported is True
    assert discovery.revocation_endpoint == f"{AS}/revoke"
    assert discovery.code_challenge_methods_supported == ("S256",)
    assert msgspec.json.decode(msgspec.json.encode(discovery), type=Discovery) == discovery


def test_discover_yields_fetch_effects_driven_by_hand() -> None:
    """D2: driven with next()/send(), discovery yields GET requests with Accept: application/json."""
    flow = discover(MCP, policy=POLICY)
    effect = next(flow)
    assert isinstance(effect, Fetch)
    assert (effect.request.method, effect.request.url) == ("GET", PRM_PATH)
    assert effect.request.header("Accept") == "application/json"
    effect = flow.send(prm())
    assert isinstance(effect, Fetch)
    assert effect.request.url == AS_OAUTH
    with pytest.raises(StopIteration) as stop:
        flow.send(as_meta())
    assert isinstance(stop.value.value, Discovery)


def test_wrong_answer_type_is_a_driver_bug() -> None:
    """Effects: answering a Fetch with something else raises TypeError, not an OAuth error."""
    flow = discover(MCP, policy=POLICY)
    next(flow)
    with pytest.raises(TypeError, match="Fetch must be answered"):
        flow.send({"status": 200})


def test_issuer_with_query_is_refused() -> None:
    """D5: an issuer with a query component is not a valid RFC 8414 issuer."""
    with pytest.raises(DiscoveryError, match="query"):
        run({f"GET {PRM_PATH}": prm(servers=[AS + "/?tenant=1"])})


def test_metadata_without_token_endpoint_is_unusable() -> None:
    """D5: metadata without authorization or token endpoint is not usable."""
    doc = json_response(200, {"issuer": AS, "authorization_endpoint": f"{AS}/authorize"})
    with pytest.raises(DiscoveryError, match="no authorization or token endpoint"):
        run({f"GET {PRM_PATH}": prm(), f"GET {AS_OAUTH}": doc})


# ---- machine-to-machine servers, DPoP metadata, server cards (E1, E3, D8) -------------------------------

CARD = "https://mcp.example.com/.well-known/mcp.json"


@pytest.mark.parametrize(
    ("grants", "usable"),
    [(["client_credentials"], True), (["client_credentials", "authorization_code"], False), (None, False)],
)
def test_authorization_endpoint_may_be_missing_only_without_the_code_grant(
    grants: list[str] | None, usable: bool
) -> None:
    """E1, RFC 8414 §2: a server whose grants leave out authorization_code needs no authorization endpoint."""
    doc: dict[str, Any] = {"issuer": AS, "token_endpoint": f"{AS}/token"}
    if grants is not None:
        doc["grant_types_supported"] = grants
    routes: dict[str, Answer | list[Answer]] = {
        f"GET {PRM_PATH}": prm(),
        f"GET {AS_OAUTH}": json_response(200, doc),
    }
    if usable:
        discovery, _ = run(routes)
        assert (discovery.authorization_endpoint, discovery.token_endpoint) == (None, f"{AS}/token")
    else:
        with pytest.raises(DiscoveryError, match="no authorization or token endpoint"):
            run(routes)


def test_dpop_metadata_of_both_documents_is_kept() -> None:
    """E3: dpop_signing_alg_values_supported (AS, RFC 9449 §5.1) and the PRM's DPoP fields (RFC 9728 §2)."""
    discovery, _ = run(
        {
            f"GET {PRM_PATH}": prm(
                dpop_signing_alg_values_supported=["ES256"], dpop_bound_access_tokens_required=True
            ),
            f"GET {AS_OAUTH}": as_meta(
                dpop_signing_alg_values_supported=["ES256", "EdDSA"],
                token_endpoint_auth_signing_alg_values_supported=["ES256"],
            ),
        }
    )
    assert discovery.dpop_signing_alg_values_supported == ("ES256", "EdDSA")
    assert discovery.token_endpoint_auth_signing_alg_values_supported == ("ES256",)
    assert discovery.resource_dpop_signing_alg_values_supported == ("ES256",)
    assert discovery.resource_dpop_bound_access_tokens_required is True
    assert msgspec.json.decode(msgspec.json.encode(discovery), type=Discovery) == discovery


def test_server_card_names_the_resource_metadata() -> None:
    """D8: no PRM at the well-known URLs → /.well-known/mcp.json → authorization.resource_metadata_url."""
    named = "https://mcp.example.com/meta/prm.json"
    card = json_response(200, {"name": "x", "authorization": {"resource_metadata_url": named}})
    discovery, driver = run({f"GET {CARD}": card, f"GET {named}": prm(), f"GET {AS_OAUTH}": as_meta()})
    assert driver.urls == [
        f"GET {PRM_PATH}",
        f"GET {PRM_ROOT}",
        f"GET {CARD}",
        f"GET {named}",
        f"GET {AS_OAUTH}",
    ]
    assert (discovery.source, discovery.resource_metadata_url, discovery.issuer) == ("server_card", named, AS)


def test_server_card_with_a_relative_url() -> None:
    """D8: a relative resource_metadata_url is resolved against the card's URL."""
    card = json_response(200, {"authorization": {"resource_metadata_url": "/meta/prm.json"}})
    named = "https://mcp.example.com/meta/prm.json"
    discovery, _ = run({f"GET {CARD}": card, f"GET {named}": prm(), f"GET {AS_OAUTH}": as_meta()})
    assert discovery.resource_metadata_url == named


@pytest.mark.parametrize(
    "card",
    [
        json_response(404, {}),
        json_response(200, {"name": "no authorization block"}),
        json_response(200, {"authorization": {"type": "oauth2"}}),
        json_response(200, {"authorization": "oauth"}),
        HttpResponse(200, (("content-type", "text/html"),), b"<html></html>"),
    ],
    ids=["missing", "no-authorization", "no-url", "wrong-shape", "html"],
)
def test_a_card_that_names_nothing_leads_to_the_legacy_path(card: Answer) -> None:
    """D8, D6: a missing or silent server card is no metadata; discovery goes on to the legacy fallback."""
    legacy = "https://mcp.example.com/.well-known/oauth-authorization-server"
    discovery, driver = run({f"GET {CARD}": card, f"GET {legacy}": as_meta(issuer="https://mcp.example.com")})
    assert f"GET {CARD}" in driver.urls
    assert discovery.source == "legacy_metadata"


def test_server_card_metadata_must_be_for_this_server() -> None:
    """D8, D3: the document the card names must have resource == the server URL, exactly."""
    named = "https://mcp.example.com/meta/prm.json"
    card = json_response(200, {"authorization": {"resource_metadata_url": named}})
    with pytest.raises(DiscoveryError, match="refusing to authorize"):
        run({f"GET {CARD}": card, f"GET {named}": prm(resource="https://evil.example/mcp")})


def test_server_card_naming_missing_metadata_stops() -> None:
    """D8: metadata the card names but cannot be had stops discovery (like the 401's resource_metadata)."""
    named = "https://mcp.example.com/meta/prm.json"
    card = json_response(200, {"authorization": {"resource_metadata_url": named}})
    with pytest.raises(DiscoveryError, match="server card"):
        run({f"GET {CARD}": card})


@pytest.mark.parametrize("where", ["card", "named"])
def test_server_card_outage_is_transient(where: str) -> None:
    """D8, T5: a 5xx at the card or at the metadata it names is transient, not a legacy server."""
    named = "https://mcp.example.com/meta/prm.json"
    card = json_response(200, {"authorization": {"resource_metadata_url": named}})
    routes: dict[str, Answer | list[Answer]] = {f"GET {CARD}": card, f"GET {named}": json_response(503, {})}
    if where == "card":
        routes[f"GET {CARD}"] = json_response(503, {})
    with pytest.raises(TransientError):
        run(routes)


def test_server_card_url_passes_the_policy() -> None:
    """D8, S2: a card naming metadata on a private address is refused like any other URL."""
    card = json_response(200, {"authorization": {"resource_metadata_url": "https://10.0.0.5/prm"}})
    with pytest.raises(PolicyError, match="private"):
        run({f"GET {CARD}": card})


def test_not_used_when_the_401_names_metadata() -> None:
    """D8: the card is only asked when neither the 401 nor the well-known URLs give metadata."""
    named = "https://mcp.example.com/custom/prm.json"
    challenge = Challenge("Bearer", (("resource_metadata", named),))
    _, driver = run({f"GET {named}": prm(), f"GET {AS_OAUTH}": as_meta()}, challenge=challenge)
    assert f"GET {CARD}" not in driver.urls


def test_discover_issuer_finds_an_idp_and_asks_for_no_resource() -> None:
    """E2: an IdP found by its issuer; its resource indicator is None (an IdP login sends no resource)."""
    idp = "https://idp.example.com"
    driver = FakeDriver({f"GET {idp}/.well-known/openid-configuration": as_meta(issuer=idp)})
    discovery = run_sync(discover_issuer(idp, policy=POLICY), driver)
    assert (discovery.source, discovery.issuer, discovery.resource_indicator) == ("issuer", idp, None)
    assert driver.urls == [
        f"GET {idp}/.well-known/oauth-authorization-server",
        f"GET {idp}/.well-known/openid-configuration",
    ]


def test_discover_issuer_without_metadata() -> None:
    """E2: an IdP issuer without metadata cannot be used."""
    with pytest.raises(DiscoveryError, match="no authorization server metadata"):
        run_sync(discover_issuer("https://idp.example.com", policy=POLICY), FakeDriver())


@pytest.mark.parametrize(
    ("header", "scheme"),
    [
        ('DPoP resource_metadata="https://x/prm", algs="ES256"', "DPoP"),
        ('DPoP algs="ES256", Bearer resource_metadata="https://x/prm"', "Bearer"),
        ('Basic realm="x"', None),
    ],
)
def test_resource_challenge_prefers_bearer_then_dpop(header: str, scheme: str | None) -> None:
    """E3, D1: a server that only takes DPoP challenges with DPoP; its resource_metadata is still found."""
    challenge = resource_challenge(header)
    assert (challenge.scheme if challenge else None) == scheme
