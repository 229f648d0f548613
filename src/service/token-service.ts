import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { PrismError, isPrismError } from '../core/errors.js';
import { NAME_PATTERN } from '../core/ids.js';
import type { NewToken, TokenInfo } from '../core/types.js';
import type { Store, Watch } from '../store/store.js';
import type { Logger } from './logger.js';

/** What is stored of a token: never the secret, only its SHA-256. */
interface StoredToken {
  id: string;
  name: string;
  hash: string;
  createdAt: string;
  /** Absent on tokens made before roles: those could do everything, and still can. */
  admin?: boolean;
}

/** Who a request's token is: its id, and whether it may do what only admins may. */
export interface TokenIdentity {
  id: string;
  admin: boolean;
}

const PREFIX = '/prism/tokens/';
const NAMES = '/prism/token-names/';
const NAME_RE = new RegExp(NAME_PATTERN);
const TOKEN_RE = /^prism_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

const sha256 = (s: string) => createHash('sha256').update(s).digest();

/**
 * API tokens, shared by every node through the Store. A token is `prism_<id>_<secret>` with 256 random
 * bits of secret; only SHA-256 of the secret is stored (a fast hash is enough for a random secret).
 * Verification is a map lookup by id plus a constant-time comparison; the map follows the Store by
 * watch, so a token revoked on any node stops working everywhere as soon as the change arrives (on
 * this node, at once).
 */
export class TokenService {
  private readonly byId = new Map<string, StoredToken>();
  private watch?: Watch;

  constructor(private readonly store: Store, private readonly log: Logger) {}

  async start(): Promise<void> {
    const rev = await this.store.revision();
    this.byId.clear();
    for (const kv of await this.store.list(PREFIX)) {
      const t = JSON.parse(kv.value) as StoredToken;
      this.byId.set(t.id, t);
    }
    this.watch = this.store.watch(PREFIX, rev, (e) => {
      const id = e.key.slice(PREFIX.length);
      if (e.type === 'put') this.byId.set(id, JSON.parse(e.value!) as StoredToken);
      else this.byId.delete(id);
    }, (err) => {
      this.log.warn({ err }, 'token watch failed: reloading');
      this.watch?.close();
      void this.start().catch((e) => this.log.error({ err: e }, 'reloading tokens failed'));
    });
  }

  stop(): void {
    this.watch?.close();
  }

  /** True when the cluster has no token at all (first start: time to create the admin token). */
  empty(): boolean {
    return this.byId.size === 0;
  }

  /** `admin`: the token may also manage tokens, remove nodes and read the join token. */
  async create(name: string, opts: { admin?: boolean } = {}): Promise<NewToken> {
    if (!NAME_RE.test(name)) {
      throw new PrismError('INVALID_ARGUMENT', `token name '${name}' is invalid: use 1-63 lowercase letters, digits and '-'`);
    }
    if ([...this.byId.values()].some((t) => t.name === name)) throw new PrismError('ALREADY_EXISTS', `a token named '${name}' already exists`);
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const admin = opts.admin === true;
    const stored: StoredToken = { id, name, hash: sha256(secret).toString('hex'), createdAt: new Date().toISOString(), admin };
    try {
      await this.store.commit([
        { op: 'put', key: NAMES + name, value: id, expectRevision: 0 },
        { op: 'put', key: PREFIX + id, value: JSON.stringify(stored), expectRevision: 0 },
      ]);
    } catch (e) {
      if (isPrismError(e, 'CONFLICT')) throw new PrismError('ALREADY_EXISTS', `a token named '${name}' already exists`);
      throw e;
    }
    this.byId.set(id, stored);
    return { id, name, createdAt: stored.createdAt, admin, token: `prism_${id}_${secret}` };
  }

  list(): TokenInfo[] {
    return [...this.byId.values()]
      .map(({ id, name, createdAt, admin }) => ({ id, name, createdAt, admin: admin !== false }))
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async revoke(idOrName: string): Promise<void> {
    const t = this.byId.get(idOrName) ?? [...this.byId.values()].find((x) => x.name === idOrName);
    if (!t) throw new PrismError('NOT_FOUND', `token '${idOrName}' not found`);
    this.byId.delete(t.id);
    await this.store.commit([{ op: 'delete', key: PREFIX + t.id }, { op: 'delete', key: NAMES + t.name }]);
  }

  /** Who `bearer` is when it is a valid token, else undefined. Never throws, never says why. */
  identify(bearer: string): TokenIdentity | undefined {
    const id = this.verify(bearer);
    return id ? { id, admin: this.byId.get(id)?.admin !== false } : undefined;
  }

  /** The token's id when `bearer` is a valid token, else undefined. Never throws, never says why. */
  verify(bearer: string): string | undefined {
    const m = TOKEN_RE.exec(bearer);
    const stored = m ? this.byId.get(m[1]!) : undefined;
    // Compare something of the same length even for unknown ids, so timing says nothing about ids.
    const want = stored ? Buffer.from(stored.hash, 'hex') : Buffer.alloc(32);
    const got = sha256(m?.[2] ?? bearer);
    return timingSafeEqual(want, got) && stored ? stored.id : undefined;
  }
}
