// A real OAuth 2.1 authorization server for ncp-broker's integration tests: panva's oidc-provider 9.x on
// loopback, configured the way an MCP deployment would be, plus a small admin API under /__admin/ that lets a
// test break the token endpoint on purpose and count what the server saw.
//
// Usage: node oidc_server.mjs [CONFIG]   where CONFIG is a JSON object or the path of a JSON file
//        (else $NCP_TEST_OIDC_CONFIG, else defaults). See docs/testing-servers.md for every key.
// When listening it prints exactly one line to stdout:
//        {"issuer": "http://127.0.0.1:PORT", "port": PORT, "pid": PID}
// Everything else (events, oidc-provider's warnings) goes to stderr.
//
// This file never prints a token, code or secret: events are logged by name and ids only. When
// $NCP_TEST_SECRETS_DIR is set, every credential it issues (and every PKCE verifier it is shown) is appended to
// a private file there, for the test session's secret scan (tests/secret_scan.py).

import {
  createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, randomUUID, sign as cryptoSign,
  verify as cryptoVerify,
} from 'node:crypto';
import { createServer } from 'node:http';
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import Provider, { errors } from 'oidc-provider';

const HOST = '127.0.0.1';
const ADMIN_PREFIX = '/__admin/';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
const ID_JAG_TYPE = 'urn:ietf:params:oauth:token-type:id-jag';

// ---------------------------------------------------------------------------------------------------------
// Configuration

function loadConfig() {
  const raw = process.argv[2] ?? process.env.NCP_TEST_OIDC_CONFIG ?? '{}';
  const text = raw.trimStart().startsWith('{') ? raw : readFileSync(raw, 'utf8');
  const given = JSON.parse(text);
  const config = {
    port: 0,
    scopes: ['openid', 'offline_access', 'mcp:read', 'mcp:write', 'mcp:admin'],
    // Resource indicators (RFC 8707) the server accepts, each {url, scopes?}. More can be added at run time
    // with POST /__admin/resources (the MCP server's port is only known after this server has started).
    resources: [],
    default_resource: null,
    use_granted_resource: false,
    access_token_ttl: 3600,
    refresh_token_ttl: 14 * 24 * 3600,
    authorization_code_ttl: 60,
    device_code_ttl: 600,
    device_poll_interval: null,
    rotate_refresh_token: true,
    clients: [],
    state_dir: null,
    parent_pid: null,  // exit when this process is gone (the test runner), so no server outlives a killed run
    // Grants and DPoP beyond the defaults (see "Extensions" below): the client-credentials grant, DPoP
    // "on" (oidc-provider's default) | "off" | "nonce" (a nonce is demanded), trusted jwt-bearer issuers,
    // and the IdP side of enterprise-managed authorization (token exchange for ID-JAGs).
    client_credentials: false,
    dpop: 'on',
    jwt_bearer: null,      // {issuers: [{issuer, jwks: {keys: [...]}}]}
    token_exchange: null,  // {client_id, client_ids: {<audience issuer>: <client_id there>}}: the ID-JAG's client_id
    ...given,
  };
  config.resources = config.resources.map((r) => (typeof r === 'string' ? { url: r } : r));
  return config;
}

const config = loadConfig();

// Values a test may change at run time through the admin API.
const ttl = {
  access_token: config.access_token_ttl,
  refresh_token: config.refresh_token_ttl,
};
const resources = new Map(config.resources.map((r) => [r.url, r]));

// ---------------------------------------------------------------------------------------------------------
// Counters and the event log read by tests through GET /__admin/stats and GET /__admin/events

function freshStats() {
  return {
    requests: {},            // by endpoint, counted before the provider sees the request
    token_requests: {},      // by grant type (short names: authorization_code, refresh_token, device_code)
    token_success: {},       // by grant type
    token_errors: {},        // by OAuth error code
    token_503: 0,            // answered 503 by the admin switch
    token_stalled: 0,        // held by the admin switch (stall), before processing
    token_injected_errors: 0, // answered with an injected OAuth error by the admin switch
    token_dropped: 0,        // connection closed unprocessed by the switch (drop, or a stall ending in drop)
    token_late: 0,           // processed at once, answer held by the switch (late)
    token_lost: 0,           // processed, then the connection closed without the answer (lose)
    replay_detected: 0,      // a consumed refresh token was presented again
    grants_revoked: 0,       // grant.revoked events (replay, revocation endpoint) plus admin revoke_all
    refresh_tokens_consumed: 0,
    registrations: 0,
    authorizations: 0,
    authorization_errors: {},
    device_authorizations: 0,
    revocations: 0,
    introspections: 0,
    errors: {},              // every *.error event by name
  };
}

let stats = freshStats();
let events = [];
const MAX_EVENTS = 500;

function bump(map, key) {
  map[key] = (map[key] ?? 0) + 1;
}

function record(name, detail = {}) {
  const entry = { t: Date.now() / 1000, event: name, ...detail };
  events.push(entry);
  if (events.length > MAX_EVENTS) events = events.slice(-MAX_EVENTS);
  process.stderr.write(`${JSON.stringify(entry)}\n`);
}

function shortGrantType(grantType) {
  if (grantType === DEVICE_GRANT) return 'device_code';
  if (grantType === JWT_BEARER) return 'jwt_bearer';
  if (grantType === TOKEN_EXCHANGE) return 'token_exchange';
  return grantType || 'missing';
}

// ---------------------------------------------------------------------------------------------------------
// Secrets for the test session's scan: one {"kind", "value"} JSON line per secret in
// $NCP_TEST_SECRETS_DIR/issued-<pid>.jsonl (mode 0600), written before the response leaves, never to stdout
// or stderr. The user code of the device flow is not one: it is shown to the user on purpose.

const SECRETS_FILE = process.env.NCP_TEST_SECRETS_DIR
  ? join(process.env.NCP_TEST_SECRETS_DIR, `issued-${process.pid}.jsonl`)
  : null;
const ISSUED_IN_BODY = [
  'access_token', 'refresh_token', 'id_token', 'device_code', 'client_secret', 'registration_access_token',
];

function recordSecret(kind, value) {
  if (!SECRETS_FILE || typeof value !== 'string' || value === '') return;
  appendFileSync(SECRETS_FILE, `${JSON.stringify({ kind, value })}\n`, { mode: 0o600 });
}

// What a response hands out: tokens, device codes and client credentials in a JSON body (token, device
// authorization and registration endpoints), the authorization code in the redirect back to the client.
function recordIssued(ctx) {
  const body = ctx.body;
  if (body && typeof body === 'object' && !Buffer.isBuffer(body) && typeof body.pipe !== 'function') {
    for (const kind of ISSUED_IN_BODY) recordSecret(kind, body[kind]);
  }
  const location = ctx.response.get('Location');
  if (location && location.includes('code=')) {
    recordSecret('authorization_code', new URL(location, 'http://invalid').searchParams.get('code'));
  }
}

for (const client of config.clients) recordSecret('client_secret', client.client_secret);

// ---------------------------------------------------------------------------------------------------------
// Storage: oidc-provider's adapter interface over one Map, optionally snapshotted to a file so that a test
// can stop and start the server (an outage) without losing clients, grants and signing keys.

class Store {
  constructor(file) {
    this.file = file;
    this.map = new Map();
    if (file && existsSync(file)) {
      for (const [key, entry] of JSON.parse(readFileSync(file, 'utf8'))) this.map.set(key, entry);
    }
  }

  get(key) {
    const entry = this.map.get(key);
    if (!entry) return undefined;
    if (entry.exp !== null && entry.exp <= Date.now()) {
      this.map.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value, expiresIn) {
    const exp = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : null;
    this.map.set(key, { value, exp });
  }

  delete(key) {
    this.map.delete(key);
  }

  keys() {
    return [...this.map.keys()];
  }

  save() {
    if (!this.file) return;
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify([...this.map.entries()]), { mode: 0o600 });
    renameSync(tmp, this.file);
  }
}

let store;

class Adapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), payload, expiresIn);
    if (this.model === 'Session') store.set(`sessionUid:${payload.uid}`, id, expiresIn);
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, id, expiresIn);
    if (payload.grantId) {
      const members = new Set(store.get(`grant:${payload.grantId}`) ?? []);
      members.add(this.key(id));
      store.set(`grant:${payload.grantId}`, [...members], null);
    }
    store.save();
  }

  async find(id) {
    return store.get(this.key(id));
  }

  async findByUid(uid) {
    const id = store.get(`sessionUid:${uid}`);
    return id === undefined ? undefined : store.get(this.key(id));
  }

  async findByUserCode(userCode) {
    const id = store.get(`userCode:${userCode}`);
    return id === undefined ? undefined : store.get(this.key(id));
  }

  async consume(id) {
    const payload = store.get(this.key(id));
    if (payload) {
      payload.consumed = Math.floor(Date.now() / 1000);
      store.save();
    }
  }

  async destroy(id) {
    store.delete(this.key(id));
    store.save();
  }

  async revokeByGrantId(grantId) {
    revokeGrantMembers(grantId);
    store.save();
  }
}

function revokeGrantMembers(grantId) {
  for (const key of store.get(`grant:${grantId}`) ?? []) store.delete(key);
  store.delete(`grant:${grantId}`);
}

// Keys survive a restart when state_dir is set, so tokens issued before an outage still verify after it.
function loadOrCreateSecrets() {
  const file = config.state_dir ? join(config.state_dir, 'keys.json') : null;
  if (file && existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'));
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: randomBytes(8).toString('hex') };
  const secrets = { jwks: { keys: [jwk] }, cookieKeys: [randomBytes(32).toString('hex')] };
  if (file) writeFileSync(file, JSON.stringify(secrets), { mode: 0o600 });
  return secrets;
}

// ---------------------------------------------------------------------------------------------------------
// The provider

function resourceServerInfo(url) {
  const entry = resources.get(url);
  if (!entry) throw new errors.InvalidTarget();
  const scopes = entry.scopes ?? config.scopes.filter((s) => s !== 'openid' && s !== 'offline_access');
  return {
    scope: scopes.join(' '),
    audience: url,
    // Read at issue time, so POST /__admin/ttl applies to the next token.
    get accessTokenTTL() {
      return ttl.access_token;
    },
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };
}

function buildProvider(issuer, secrets) {
  return new Provider(issuer, {
    adapter: Adapter,
    clients: config.clients,
    jwks: secrets.jwks,
    cookies: { keys: secrets.cookieKeys },
    scopes: config.scopes,
    claims: { openid: ['sub'] },
    responseTypes: ['code'],
    async findAccount(_ctx, sub) {
      return { accountId: sub, async claims() { return { sub }; } };
    },
    pkce: { required: () => true },
    clientBasedCORS: () => true,
    // Refresh tokens for every client registered with the refresh_token grant, whether or not it asked
    // for offline_access (oidc-provider's default needs offline_access, which it drops without
    // prompt=consent).
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    rotateRefreshToken: config.rotate_refresh_token,
    ttl: {
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? ttl.access_token,
      AuthorizationCode: () => config.authorization_code_ttl,
      ClientCredentials: () => ttl.access_token,
      DeviceCode: () => config.device_code_ttl,
      IdToken: () => 3600,
      RefreshToken: () => ttl.refresh_token,
      Interaction: () => 3600,
      Session: () => 14 * 24 * 3600,
      Grant: () => 14 * 24 * 3600,
    },
    features: {
      devInteractions: { enabled: true },
      registration: { enabled: true, initialAccessToken: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
      deviceFlow: { enabled: true },
      ...extensionFeatures(),
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? config.default_resource ?? undefined,
        useGrantedResource: async () => config.use_granted_resource,
        getResourceServerInfo: async (_ctx, resourceIndicator) => resourceServerInfo(resourceIndicator),
      },
    },
  });
}

function attachEvents(provider) {
  provider.on('grant.success', (ctx) => {
    bump(stats.token_success, shortGrantType(ctx.oidc.params?.grant_type));
  });
  provider.on('grant.error', (ctx, err) => {
    bump(stats.token_errors, err.error ?? 'unknown');
    if (err.error_detail === 'refresh token already used') {
      stats.replay_detected += 1;
      record('replay_detected', { client_id: ctx.oidc.client?.clientId });
    }
  });
  provider.on('grant.revoked', (ctx, grantId) => {
    stats.grants_revoked += 1;
    record('grant.revoked', { grant_id: grantId, client_id: ctx.oidc?.client?.clientId });
  });
  provider.on('refresh_token.consumed', (token) => {
    stats.refresh_tokens_consumed += 1;
    record('refresh_token.consumed', { grant_id: token.grantId, client_id: token.clientId });
  });
  provider.on('registration_create.success', (_ctx, client) => {
    stats.registrations += 1;
    record('registration_create.success', { client_id: client.clientId });
  });
  provider.on('authorization.success', () => {
    stats.authorizations += 1;
  });
  provider.on('authorization.error', (_ctx, err) => {
    bump(stats.authorization_errors, err.error ?? 'unknown');
  });
  provider.on('device_authorization.success', () => {
    stats.device_authorizations += 1;
  });
  provider.on('revocation.success', () => {
    stats.revocations += 1;
  });
  provider.on('introspection.success', () => {
    stats.introspections += 1;
  });
  const errorEvents = [
    'authorization.error', 'grant.error', 'registration_create.error', 'registration_read.error',
    'revocation.error', 'introspection.error', 'device_authorization.error', 'code_verification.error',
    'device_resume.error', 'discovery.error', 'jwks.error', 'userinfo.error', 'end_session.error', 'server_error',
  ];
  for (const name of errorEvents) {
    provider.on(name, (ctx, err) => {
      bump(stats.errors, name);
      record(name, {
        error: err?.error ?? String(err?.message ?? err),
        error_detail: err?.error_detail,
        path: ctx?.path,
      });
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Extensions (issue 11): what oidc-provider offers natively behind a switch (client credentials, DPoP with
// nonces), and two grants it lacks, added with provider.registerGrantType:
//
// * jwt-bearer (RFC 7523 §2.1): the assertion must be a JWS from an issuer in `jwt_bearer.issuers`, verified
//   with that issuer's JWKS, with aud = this issuer (or its token endpoint), exp in the future and a sub. An
//   ID-JAG (header typ oauth-id-jag+jwt) must also name the authenticated client in client_id and the
//   requested resource in resource (SEP-990 §5.1). The access token is a JWT for the resource, sub = the
//   assertion's sub. (DPoP is not offered for this grant here: oidc-provider keeps its proof checks private.)
// * token exchange (RFC 8693) for an ID-JAG (SEP-990 §4), when `token_exchange` is set: subject_token must be
//   an ID token this server issued to the authenticated client; the ID-JAG is signed with this server's key,
//   aud = the requested audience, client_id = token_exchange.client_ids[audience] (else .client_id).

function extensionFeatures() {
  return {
    clientCredentials: { enabled: Boolean(config.client_credentials) },
    dPoP: dpopFeature(config.dpop),
  };
}

function dpopFeature(mode) {
  if (mode === 'off') return { enabled: false };
  if (mode === 'nonce') return { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true };
  if (mode !== 'on') throw new Error(`unknown dpop mode ${mode}`);
  return { enabled: true };
}

const JWS_ALGS = {
  ES256: ['sha256', 'ieee-p1363'],
  ES384: ['sha384', 'ieee-p1363'],
  ES512: ['sha512', 'ieee-p1363'],
  RS256: ['sha256', undefined],
  EdDSA: [null, undefined],
};

function jsonPart(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

// The payload of a compact JWS that one of `keys` (JWKs) signed; throws with the reason otherwise.
function verifiedPayload(token, keys) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) throw new Error('not a compact JWS');
  const header = jsonPart(parts[0]);
  const alg = JWS_ALGS[header.alg];
  if (!alg) throw new Error(`alg ${header.alg} is not accepted`);
  const candidates = keys.filter((k) => !header.kid || !k.kid || k.kid === header.kid);
  const input = Buffer.from(`${parts[0]}.${parts[1]}`);
  const signature = Buffer.from(parts[2], 'base64url');
  for (const jwk of candidates) {
    const key = createPublicKey({ key: jwk, format: 'jwk' });
    if (cryptoVerify(alg[0], input, alg[1] ? { key, dsaEncoding: alg[1] } : key, signature)) {
      return { header, payload: jsonPart(parts[1]) };
    }
  }
  throw new Error('the signature does not verify');
}

function checkAssertion(provider, ctx) {
  const assertion = ctx.oidc.params.assertion;
  if (!assertion) throw new errors.InvalidRequest('missing assertion');
  let checked;
  try {
    const { iss } = jsonPart(String(assertion).split('.')[1] ?? '');
    const trusted = (config.jwt_bearer?.issuers ?? []).find((t) => t.issuer === iss);
    if (!trusted) throw new Error('the assertion issuer is not trusted');
    checked = verifiedPayload(assertion, trusted.jwks.keys);
  } catch (err) {
    throw new errors.InvalidGrant(`assertion refused: ${err.message}`);
  }
  const { header, payload } = checked;
  const now = Math.floor(Date.now() / 1000);
  const audiences = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
  const accepted = [provider.issuer, `${provider.issuer}/`, ctx.oidc.urlFor('token')];
  if (!audiences.some((aud) => accepted.includes(aud))) throw new errors.InvalidGrant('assertion audience is not this server');
  if (typeof payload.exp !== 'number' || payload.exp + 5 < now) throw new errors.InvalidGrant('assertion expired');
  if (typeof payload.sub !== 'string' || !payload.sub) throw new errors.InvalidGrant('assertion has no sub');
  if (header.typ === 'oauth-id-jag+jwt') {
    if (payload.client_id !== ctx.oidc.client.clientId) throw new errors.InvalidGrant('ID-JAG client_id is not this client');
    if (payload.resource !== ctx.oidc.params.resource) throw new errors.InvalidGrant('ID-JAG resource mismatch');
  }
  return payload;
}

async function jwtBearerGrant(provider, ctx) {
  const payload = checkAssertion(provider, ctx);
  const resource = ctx.oidc.params.resource;
  if (typeof resource !== 'string') throw new errors.InvalidTarget('resource is required');
  const info = resourceServerInfo(resource);
  const allowed = new Set(info.scope.split(' '));
  const requested = ctx.oidc.params.scope ? ctx.oidc.params.scope.split(' ') : [...allowed];
  if (requested.some((scope) => !allowed.has(scope))) throw new errors.InvalidScope('scope not allowed for this resource');
  const token = new provider.AccessToken({
    accountId: payload.sub, client: ctx.oidc.client, gty: 'jwt_bearer', scope: requested.join(' '),
  });
  token.resourceServer = new provider.ResourceServer(resource, info);
  const value = await token.save();
  ctx.body = { access_token: value, token_type: 'Bearer', expires_in: token.expiration, scope: requested.join(' ') };
}

async function tokenExchangeGrant(provider, secrets, ctx) {
  const { params, client } = ctx.oidc;
  if (params.requested_token_type !== ID_JAG_TYPE) throw new errors.InvalidRequest('only ID-JAGs are issued');
  if (params.subject_token_type !== ID_TOKEN_TYPE) throw new errors.InvalidRequest('subject_token must be an ID token');
  if (!params.audience || !params.resource) throw new errors.InvalidRequest('audience and resource are required');
  const signing = secrets.jwks.keys[0];
  let payload;
  try {
    ({ payload } = verifiedPayload(params.subject_token, [publicJwk(signing)]));
  } catch (err) {
    throw new errors.InvalidGrant(`subject_token refused: ${err.message}`);
  }
  const now = Math.floor(Date.now() / 1000);
  if (payload.iss !== provider.issuer || payload.exp < now) throw new errors.InvalidGrant('the ID token is expired or not ours');
  if (payload.aud !== client.clientId) throw new errors.InvalidGrant('the ID token was issued to another client');
  const clientId = config.token_exchange.client_ids?.[params.audience] ?? config.token_exchange.client_id;
  if (!clientId) throw new errors.InvalidTarget('no client is known at that audience');
  const claims = {
    iss: provider.issuer, sub: payload.sub, aud: params.audience, resource: params.resource, client_id: clientId,
    jti: randomUUID(), iat: now, exp: now + 300, ...(params.scope ? { scope: params.scope } : {}),
  };
  const header = { alg: 'RS256', typ: 'oauth-id-jag+jwt', kid: signing.kid };
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const signature = cryptoSign('sha256', Buffer.from(input), createPrivateKey({ key: signing, format: 'jwk' }));
  ctx.body = {
    access_token: `${input}.${signature.toString('base64url')}`, issued_token_type: ID_JAG_TYPE, token_type: 'N_A',
    expires_in: 300,
  };
}

function publicJwk(jwk) {
  const { d, p, q, dp, dq, qi, ...rest } = jwk;  // eslint-disable-line no-unused-vars
  return rest;
}

function registerExtensionGrants(provider, secrets) {
  if (config.jwt_bearer) {
    provider.registerGrantType(
      JWT_BEARER, (ctx) => jwtBearerGrant(provider, ctx), ['assertion', 'scope', 'resource'], ['resource'],
    );
  }
  if (config.token_exchange) {
    provider.registerGrantType(
      TOKEN_EXCHANGE,
      (ctx) => tokenExchangeGrant(provider, secrets, ctx),
      ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope'],
    );
  }
}

// ---------------------------------------------------------------------------------------------------------
// Admin switch for the token endpoint, optionally for some grant types only and for a limited number of
// requests. Before processing: 503 (with Retry-After) | error (an OAuth error) | stall (hold, then drop or
// proceed) | drop (close at once). After processing (the grant is already spent, a refresh token rotated):
// late (hold the answer, then send it) | lose (close without the answer). ok: no switch.

const SWITCH_MODES = ['ok', '503', 'error', 'stall', 'drop', 'late', 'lose'];

let tokenSwitch = { mode: 'ok' };
let releaseStalls = [];

function setTokenSwitch(body) {
  const mode = body.mode ?? 'ok';
  if (!SWITCH_MODES.includes(mode)) throw new Error(`unknown mode ${mode}`);
  const then = body.then ?? 'drop';
  if (!['drop', 'proceed'].includes(then)) throw new Error(`unknown then ${then}`);
  for (const release of releaseStalls) release();
  releaseStalls = [];
  tokenSwitch = {
    mode,
    seconds: Number(body.seconds ?? 30),
    then,
    error: body.error ?? 'temporarily_unavailable',
    status: Number(body.status ?? 400),
    retryAfter: String(body.retry_after ?? 1),
    grantTypes: body.grant_types ?? null,
    remaining: body.count ?? null,
  };
}

// The switch as it stands for this request, or null. A copy: a request keeps the mode it arrived under,
// also when a test sets another mode while it is held.
function switchFor(grantType) {
  if (tokenSwitch.mode === 'ok') return null;
  if (tokenSwitch.grantTypes && !tokenSwitch.grantTypes.includes(grantType)) return null;
  if (tokenSwitch.remaining !== null) {
    if (tokenSwitch.remaining <= 0) return null;
    tokenSwitch.remaining -= 1;
  }
  return { ...tokenSwitch };
}

// Resolves after `seconds`, or as soon as the switch is set again (a test ending an outage).
function stall(seconds) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, seconds * 1000);
    releaseStalls.push(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

// Close the connection without a response (the client sees the server hang up).
function hangUp(ctx) {
  ctx.respond = false;
  ctx.req.socket.destroy();
}

// Before oidc-provider sees the request. Returns true when the switch has answered (or hung up) for it.
async function switchBeforeProcessing(ctx, active, grantType) {
  if (active.mode === '503') {
    stats.token_503 += 1;
    ctx.status = 503;
    ctx.set('Retry-After', active.retryAfter);
    ctx.body = { error: 'temporarily_unavailable', error_description: 'injected by /__admin/token_endpoint' };
    return true;
  }
  if (active.mode === 'error') {
    stats.token_injected_errors += 1;
    ctx.status = active.status;
    ctx.body = { error: active.error, error_description: 'injected by /__admin/token_endpoint' };
    return true;
  }
  if (active.mode === 'drop') {
    // The refresh token stays unspent, as when the server never got the request.
    stats.token_dropped += 1;
    record('token_endpoint.dropped', { grant_type: grantType });
    hangUp(ctx);
    return true;
  }
  if (active.mode === 'stall') {
    stats.token_stalled += 1;
    record('token_endpoint.stalled', { grant_type: grantType, seconds: active.seconds });
    await stall(active.seconds);
    if (active.then === 'drop') {
      stats.token_dropped += 1;
      record('token_endpoint.dropped', { grant_type: grantType });
      hangUp(ctx);
      return true;
    }
  }
  return false;  // stall then proceed, late, lose: processed normally
}

// After oidc-provider has processed the request (tokens issued, a refresh token rotated), before the
// response is written.
async function switchAfterProcessing(ctx, active, grantType) {
  if (active.mode === 'late') {
    stats.token_late += 1;
    record('token_endpoint.late', { grant_type: grantType, status: ctx.status, seconds: active.seconds });
    await stall(active.seconds);
    record('token_endpoint.answered', { grant_type: grantType, status: ctx.status });
  } else if (active.mode === 'lose') {
    // The grant's new tokens exist only at the server now: a rotated refresh token is lost in transit.
    stats.token_lost += 1;
    record('token_endpoint.lost', { grant_type: grantType, status: ctx.status });
    hangUp(ctx);
  }
}

async function readRawBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const ENDPOINTS = {
  '/token': 'token',
  '/reg': 'registration',
  '/device/auth': 'device_authorization',
  '/token/revocation': 'revocation',
  '/token/introspection': 'introspection',
  '/auth': 'authorization',
  '/jwks': 'jwks',
  '/.well-known/oauth-authorization-server': 'discovery',
  '/.well-known/openid-configuration': 'discovery',
};

function revokeAll() {
  const grantIds = new Set();
  for (const key of store.keys()) {
    if (key.startsWith('Grant:')) grantIds.add(key.slice('Grant:'.length));
    if (key.startsWith('grant:')) grantIds.add(key.slice('grant:'.length));
  }
  for (const grantId of grantIds) {
    revokeGrantMembers(grantId);
    store.delete(`Grant:${grantId}`);
    stats.grants_revoked += 1;
    record('grant.revoked', { grant_id: grantId, by: 'admin' });
  }
  store.save();
  return grantIds.size;
}

async function admin(ctx) {
  const route = `${ctx.method} ${ctx.path.slice(ADMIN_PREFIX.length - 1)}`;
  const body = ctx.method === 'POST' ? JSON.parse((await readRawBody(ctx.req)) || '{}') : {};
  ctx.type = 'application/json';
  switch (route) {
    case 'GET /stats':
      ctx.body = stats;
      return;
    case 'POST /reset_stats':
      stats = freshStats();
      events = [];
      ctx.body = { ok: true };
      return;
    case 'GET /events':
      ctx.body = events;
      return;
    case 'POST /token_endpoint':
      try {
        setTokenSwitch(body);
      } catch (err) {
        ctx.status = 400;
        ctx.body = { error: 'bad_switch', message: err.message, modes: SWITCH_MODES };
        return;
      }
      record('admin.token_endpoint', { mode: tokenSwitch.mode });
      ctx.body = { ok: true, mode: tokenSwitch.mode };
      return;
    case 'POST /revoke_all':
      ctx.body = { ok: true, revoked: revokeAll() };
      return;
    case 'POST /resources': {
      if (typeof body.url !== 'string') ctx.throw(400, 'url required');
      resources.set(body.url, { url: body.url, scopes: body.scopes });
      record('admin.resource_added', { url: body.url });
      ctx.body = { ok: true, resources: [...resources.keys()] };
      return;
    }
    case 'POST /ttl':
      if (body.access_token !== undefined) ttl.access_token = Number(body.access_token);
      if (body.refresh_token !== undefined) ttl.refresh_token = Number(body.refresh_token);
      ctx.body = { ok: true, ttl };
      return;
    default:
      ctx.status = 404;
      ctx.body = { error: 'not_found', routes: ['GET stats', 'POST reset_stats', 'GET events', 'POST token_endpoint', 'POST revoke_all', 'POST resources', 'POST ttl'] };
  }
}

function installMiddleware(provider) {
  provider.use(async (ctx, next) => {
    if (ctx.path.startsWith(ADMIN_PREFIX)) {
      await admin(ctx);
      return;
    }
    const endpoint = ENDPOINTS[ctx.path];
    if (endpoint) bump(stats.requests, endpoint);
    let active = null;  // the token endpoint switch, when it applies to this request
    let grantType;
    if (endpoint === 'token' && ctx.method === 'POST') {
      // The grant type decides what is counted and whether the switch applies, so the body is read here.
      // oidc-provider accepts an already-read body from ctx.req.body (it warns once on stderr).
      const raw = await readRawBody(ctx.req);
      ctx.req.body = raw;
      const form = new URLSearchParams(raw);
      recordSecret('code_verifier', form.get('code_verifier'));  // made by the client: seen only here
      grantType = shortGrantType(form.get('grant_type'));
      bump(stats.token_requests, grantType);
      active = switchFor(grantType);
      if (active && await switchBeforeProcessing(ctx, active, grantType)) return;
    }
    await next();
    recordIssued(ctx);
    if (active) await switchAfterProcessing(ctx, active, grantType);
    if (endpoint === 'device_authorization' && ctx.status === 200 && config.device_poll_interval !== null
        && ctx.body && typeof ctx.body === 'object') {
      ctx.body = { ...ctx.body, interval: config.device_poll_interval };
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Start: listen first (the issuer must be the listening URL, and the port may be 0), then build the provider.

async function main() {
  if (config.state_dir) mkdirSync(config.state_dir, { recursive: true, mode: 0o700 });
  store = new Store(config.state_dir ? join(config.state_dir, 'store.json') : null);
  const secrets = loadOrCreateSecrets();

  let handler = (_req, res) => {
    res.statusCode = 503;
    res.end();
  };
  const server = createServer((req, res) => handler(req, res));
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, HOST, resolve);
  });
  const { port } = server.address();
  const issuer = `http://${HOST}:${port}`;

  const provider = buildProvider(issuer, secrets);
  registerExtensionGrants(provider, secrets);
  attachEvents(provider);
  installMiddleware(provider);
  handler = provider.callback();

  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (config.parent_pid) {
    setInterval(() => {
      try {
        process.kill(config.parent_pid, 0);
      } catch {
        stop();
      }
    }, 1000).unref();
  }

  process.stdout.write(`${JSON.stringify({ issuer, port, pid: process.pid })}\n`);
}

main().catch((err) => {
  process.stderr.write(`oidc_server failed: ${err?.stack ?? err}\n`);
  process.exit(1);
});
