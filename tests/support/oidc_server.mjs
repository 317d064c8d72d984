// A strict OAuth 2.0 authorization server on 127.0.0.1 for the provider's tests: panva's
// oidc-provider (OpenID Certified), configured for backend services only.
//
// - grant: client_credentials only; client authentication: private_key_jwt only, with the nine
//   JWS algorithms the provider signs with; an assertion's jti is accepted once; an assertion
//   whose exp lies more than MAX_ASSERTION_AGE seconds after its iat (or without iat) is refused.
// - clients: registered by the test through dynamic registration (RFC 7591) with an initial
//   access token, carrying their public JWKS; `dpop_bound_access_tokens: true` makes DPoP
//   required for that client. Two test-only metadata members: x_token_ttl (seconds) and
//   x_require_dpop_nonce (answer proofs without the server's nonce with use_dpop_nonce).
// - access tokens: JWTs (ES256) for one resource (the FHIR base), so a test can read what the
//   server bound the token to (cnf.jkt) after checking the signature against /jwks.
//
// GET /fhir/... is a resource endpoint that accepts DPoP-bound tokens only, verified by jose.
//
// Configuration comes as JSON in the environment variable OIDC_TEST_CONFIG. The server binds
// port 0 and prints one line `listening <issuer>` once it accepts connections; every token
// request outcome is one JSON line `event {...}` on stdout (the reason the server keeps out of
// its answer included), so a test can say why the server refused.
import { createServer } from 'node:http';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

// The package is installed outside this folder (.cache/oidc-provider): its entry point comes
// from the environment, as ESM resolves bare names only from the importing file's folders.
const { default: Provider, errors } = await import(
  pathToFileURL(process.env.OIDC_PROVIDER_ENTRY).href
);
// jose (panva's JOSE library, oidc-provider's own dependency) verifies resource requests.
const jose = createRequire(process.env.OIDC_PROVIDER_ENTRY)('jose');

const config = JSON.parse(process.env.OIDC_TEST_CONFIG || '{}');
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'];
const MAX_ASSERTION_AGE = config.max_assertion_age ?? 300;
const DEFAULT_TTL = config.token_ttl ?? 300;

function meta(client, name) {
  return client ? client.metadata()[name] : undefined;
}

function emit(kind, fields) {
  process.stdout.write(`event ${JSON.stringify({ kind, ...fields })}\n`);
}

function assertionClaims(ctx) {
  const assertion = ctx.oidc?.params?.client_assertion;
  if (typeof assertion !== 'string') return {};
  try {
    const payload = JSON.parse(Buffer.from(assertion.split('.')[1], 'base64url'));
    return { jti: payload.jti, iat: payload.iat, exp: payload.exp };
  } catch {
    return {};
  }
}

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const signing = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const jwk = { ...signing.export({ format: 'jwk' }), kid: 'server-es256', alg: 'ES256', use: 'sig' };

  const provider = new Provider(issuer, {
    jwks: { keys: [jwk] },
    clientAuthMethods: ['private_key_jwt'],
    enabledJWA: {
      clientAuthSigningAlgValues: ALGORITHMS,
      dPoPSigningAlgValues: ['ES256', 'ES384', 'ES512', 'PS256', 'RS256'],
    },
    scopes: config.scopes ?? [],
    extraClientMetadata: { properties: ['x_token_ttl', 'x_require_dpop_nonce'] },
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'private_key_jwt',
      id_token_signed_response_alg: 'ES256', // the server's only key (no ID tokens are issued)
    },
    async assertJwtClientAuthClaimsAndHeader(ctx, claims) {
      if (typeof claims.iat !== 'number' || claims.exp - claims.iat > MAX_ASSERTION_AGE) {
        throw new errors.InvalidClientAuth(
          `client assertion lifetime exceeds ${MAX_ASSERTION_AGE} seconds (or has no iat)`,
        );
      }
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      registration: { enabled: true, initialAccessToken: config.initial_access_token },
      dPoP: {
        enabled: true,
        nonceSecret: randomBytes(32),
        requireNonce: (ctx) => Boolean(meta(ctx.oidc?.client, 'x_require_dpop_nonce')),
        allowReplay: false,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => config.resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, indicator) => {
          if (indicator !== config.resource) throw new errors.InvalidTarget();
          return {
            scope: (config.scopes ?? []).join(' '),
            audience: config.resource,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        },
      },
    },
    ttl: {
      ClientCredentials: (ctx, token, client) => meta(client, 'x_token_ttl') ?? DEFAULT_TTL,
    },
  });

  provider.on('grant.success', (ctx) => {
    emit('token', { client_id: ctx.oidc.client?.clientId, dpop: Boolean(ctx.get('DPoP')), ...assertionClaims(ctx) });
  });
  provider.on('grant.error', (ctx, err) => {
    emit('refused', {
      client_id: ctx.oidc?.client?.clientId ?? null,
      error: err.error,
      description: err.error_description,
      detail: err.error_detail ?? null,
      dpop: Boolean(ctx.get('DPoP')),
      ...assertionClaims(ctx),
    });
  });
  const handler = provider.callback();
  const resource = resourceServer(issuer, jose.createLocalJWKSet({ keys: [publicJwk(jwk)] }));
  server.on('request', (req, res) => (req.url.startsWith('/fhir/') ? resource(req, res) : handler(req, res)));
  process.stdout.write(`listening ${issuer}\n`);
});

function publicJwk({ d, ...rest }) {
  return rest;
}

// A FHIR-like resource endpoint (GET /fhir/...) that accepts only DPoP-bound access tokens
// (RFC 9449 section 7): the token's signature and audience, then the proof: its signature by
// its embedded key, typ, htm, htu (no query), iat within 60 s, single-use jti, ath = hash of
// the token, and the key's thumbprint = the token's cnf.jkt. Outcomes are `event` lines.
function resourceServer(issuer, serverKeys) {
  const seen = new Set();
  return async (req, res) => {
    const fail = (code, why, clientId = null) => {
      emit('resource_refused', { client_id: clientId, why });
      res.writeHead(401, { 'WWW-Authenticate': `DPoP error="${code}"`, 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: code, error_description: why }));
    };
    const [scheme, token] = (req.headers.authorization ?? '').split(' ');
    if (scheme !== 'DPoP' || !token) return fail('invalid_token', `scheme ${scheme} is not DPoP`);
    let access;
    try {
      ({ payload: access } = await jose.jwtVerify(token, serverKeys, { issuer, audience: config.resource }));
    } catch (err) {
      return fail('invalid_token', `access token: ${err.message}`);
    }
    const clientId = access.client_id;
    try {
      const { payload, protectedHeader } = await jose.jwtVerify(req.headers.dpop ?? '', jose.EmbeddedJWK, {
        typ: 'dpop+jwt',
        maxTokenAge: '60s',
        clockTolerance: 5,
      });
      const target = `${issuer}${req.url.split('?')[0]}`;
      const ath = createHash('sha256').update(token).digest('base64url');
      const jkt = await jose.calculateJwkThumbprint(protectedHeader.jwk);
      const wrong = [
        payload.htm !== req.method && `htm ${payload.htm}`,
        payload.htu !== target && `htu ${payload.htu}`,
        payload.ath !== ath && 'ath',
        jkt !== access.cnf?.jkt && 'jkt',
        (typeof payload.jti !== 'string' || seen.has(payload.jti)) && 'jti reused',
      ].filter(Boolean);
      if (wrong.length) return fail('invalid_dpop_proof', `proof: ${wrong.join(', ')}`, clientId);
      seen.add(payload.jti);
      emit('resource', { client_id: clientId, jti: payload.jti, htu: payload.htu });
      res.writeHead(200, { 'Content-Type': 'application/fhir+json' });
      res.end(JSON.stringify({ resourceType: 'Bundle', type: 'searchset', total: 0 }));
    } catch (err) {
      return fail('invalid_dpop_proof', `proof: ${err.message}`, clientId);
    }
  };
}

process.on('SIGTERM', () => server.close(() => process.exit(0)));
