// node-oidc-provider 9, configured like authserver, as the peer of benchmarks/refresh.py.
//
// This file and package.json are copied into a cache directory and run there, next to an
// `npm install` of the `oidc-provider` package (never into the repository). Configuration,
// chosen to match authserver's defaults:
//
//   - issuer http://127.0.0.1:PORT, bound to 127.0.0.1 only;
//   - an in-process Map adapter: the bundled MemoryAdapter is an LRU capped at 1,000
//     entries, which would evict live refresh tokens under load;
//   - one RSA-2048 signing key generated at start (RS256), like `authserver keys ensure`;
//   - rotateRefreshToken: true (every refresh consumes the presented token and returns a
//     new one; presenting a consumed token revokes the grant);
//   - features.resourceIndicators with a default resource whose accessTokenFormat is 'jwt'
//     signed with RS256, so refresh and client_credentials both return RS256 JWT access
//     tokens (900 s, like authserver's access_token_ttl);
//   - features.clientCredentials enabled;
//   - a public client (token_endpoint_auth_method none) for the refresh chains and a
//     confidential client (client_secret_basic) for client_credentials.
//
// It mints --mint refresh tokens in process (one provider.Grant per token, like one
// sign-in per chain in authserver) and writes them, one per line, to --tokens-out. When it
// listens it writes one JSON object to --ready-file (port, versions, client ids).
//
//   node server.mjs --port 0 --mint 40 --tokens-out tokens.txt --ready-file ready.json
//
// The confidential client's secret comes from $BENCH_SERVICE_SECRET.

import * as crypto from 'node:crypto';
import { writeFileSync, readFileSync } from 'node:fs';
import * as http from 'node:http';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const RESOURCE = 'urn:authserver-bench:api';
const SCOPE = 'read write';
const PUBLIC_CLIENT_ID = 'bench-public';
const SERVICE_CLIENT_ID = 'bench-service';
const ACCOUNT_ID = 'bench-user';
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);

const { values: opts } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    mint: { type: 'string', default: '0' },
    'tokens-out': { type: 'string' },
    'ready-file': { type: 'string' },
  },
});

const serviceSecret = process.env.BENCH_SERVICE_SECRET;
if (!serviceSecret) {
  console.error('peer: set BENCH_SERVICE_SECRET');
  process.exit(2);
}

// -- an in-process Map adapter (no LRU, no eviction) ---------------------------------------

const store = new Map(); // `${model}:${id}` -> { payload, expiresAt (ms) }
const grantMembers = new Map(); // grantId -> Set of store keys
const sessionUids = new Map(); // uid -> Session id
const userCodes = new Map(); // userCode -> DeviceCode id

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(key, { payload, expiresAt });
    if (GRANTABLE.has(this.model) && payload.grantId) {
      let members = grantMembers.get(payload.grantId);
      if (!members) {
        members = new Set();
        grantMembers.set(payload.grantId, members);
      }
      members.add(key);
    }
    if (this.model === 'Session' && payload.uid) sessionUids.set(payload.uid, id);
    if (payload.userCode) userCodes.set(payload.userCode, id);
  }

  async find(id) {
    const key = this.key(id);
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    const id = sessionUids.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = userCodes.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    const key = this.key(id);
    const entry = store.get(key);
    store.delete(key);
    if (entry?.payload.grantId) grantMembers.get(entry.payload.grantId)?.delete(key);
  }

  async revokeByGrantId(grantId) {
    const members = grantMembers.get(grantId);
    if (!members) return;
    for (const key of members) store.delete(key);
    grantMembers.delete(grantId);
  }
}

// -- the provider ----------------------------------------------------------------------------

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: crypto.randomBytes(8).toString('hex'),
  use: 'sig',
  alg: 'RS256',
};

const resourceServer = {
  scope: SCOPE,
  audience: RESOURCE,
  accessTokenTTL: 900,
  accessTokenFormat: 'jwt',
  jwt: { sign: { alg: 'RS256' } },
};

function configuration() {
  return {
    adapter: MapAdapter,
    jwks: { keys: [signingJwk] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    rotateRefreshToken: true,
    scopes: ['openid', 'offline_access', 'read', 'write'],
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    clients: [
      {
        client_id: PUBLIC_CLIENT_ID,
        token_endpoint_auth_method: 'none',
        grant_types: ['refresh_token', 'authorization_code'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
        scope: SCOPE,
      },
      {
        client_id: SERVICE_CLIENT_ID,
        client_secret: serviceSecret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        scope: SCOPE,
      },
    ],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => {
          if (Array.isArray(oneOf)) return oneOf.length === 1 ? oneOf[0] : oneOf;
          return oneOf ?? RESOURCE;
        },
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => {
          if (indicator !== RESOURCE) throw new Provider.errors.InvalidTarget();
          return resourceServer;
        },
      },
    },
    ttl: {
      AccessToken: 900,
      ClientCredentials: 900,
      IdToken: 3600,
      RefreshToken: 14 * 24 * 3600, // authserver's refresh idle TTL
      Grant: 90 * 24 * 3600, // authserver's session (family) lifetime
      Session: 14 * 24 * 3600,
      Interaction: 3600,
      AuthorizationCode: 60,
    },
  };
}

async function mint(provider, count) {
  const client = await provider.Client.find(PUBLIC_CLIENT_ID);
  const now = Math.floor(Date.now() / 1000);
  const tokens = [];
  for (let i = 0; i < count; i += 1) {
    const grant = new provider.Grant({ accountId: ACCOUNT_ID, clientId: PUBLIC_CLIENT_ID });
    grant.addResourceScope(RESOURCE, SCOPE);
    const grantId = await grant.save();
    const refreshToken = new provider.RefreshToken({
      accountId: ACCOUNT_ID,
      client,
      grantId,
      gty: 'authorization_code',
      authTime: now,
      scope: SCOPE,
      resource: RESOURCE,
    });
    tokens.push(await refreshToken.save());
  }
  return tokens;
}

function oidcProviderVersion() {
  const require = createRequire(import.meta.url);
  const main = require.resolve('oidc-provider');
  const pkg = main.slice(0, main.lastIndexOf('/node_modules/oidc-provider/') + 28) + '/package.json';
  return JSON.parse(readFileSync(pkg, 'utf8')).version;
}

const server = http.createServer();
server.listen(Number(opts.port), '127.0.0.1', async () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration());
  provider.on('server_error', (_ctx, err) => console.error('peer: server_error', err));
  server.on('request', provider.callback());

  const count = Number(opts.mint);
  if (count > 0) {
    const tokens = await mint(provider, count);
    writeFileSync(opts['tokens-out'], `${tokens.join('\n')}\n`);
  }
  const ready = {
    port,
    issuer,
    pid: process.pid,
    node: process.version,
    oidc_provider: oidcProviderVersion(),
    public_client_id: PUBLIC_CLIENT_ID,
    service_client_id: SERVICE_CLIENT_ID,
    resource: RESOURCE,
    scope: SCOPE,
    minted: count,
  };
  if (opts['ready-file']) writeFileSync(opts['ready-file'], JSON.stringify(ready));
  console.error(`peer: oidc-provider ${ready.oidc_provider} on ${issuer} (node ${process.version})`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
