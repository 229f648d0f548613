import { PrismError } from '../../core/errors.js';

/**
 * Registry authentication after the Docker token authentication spec: parsing `WWW-Authenticate`
 * challenges, token responses, and a cache of bearer tokens per (host, scope) until they expire.
 * Nothing here performs I/O; the transport (registry-http.ts) drives the flow.
 */

export interface Credentials {
  username: string;
  password: string;
}

export interface Challenge {
  /** Lower-cased scheme, e.g. `bearer` or `basic`. */
  scheme: string;
  /** Lower-cased parameter names, e.g. `realm`, `service`, `scope`. */
  params: Record<string, string>;
}

/** The scope a pull needs, as the token spec spells it. */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

export function basicAuthorization(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
}

/**
 * Parses a `WWW-Authenticate` value (RFC 7235): one or more challenges, each a scheme followed by
 * comma-separated `name=value` or `name="quoted, value"` parameters. Unparseable parts are skipped.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const skip = (chars: string): void => {
    while (i < header.length && chars.includes(header[i]!)) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < header.length && !' \t,="'.includes(header[i]!)) i++;
    return header.slice(start, i);
  };
  while (i < header.length) {
    skip(' \t,');
    const name = token();
    if (name === '') {
      i++;
      continue;
    }
    skip(' \t');
    if (header[i] !== '=') {
      out.push({ scheme: name.toLowerCase(), params: {} });
      continue;
    }
    i++;
    skip(' \t');
    const value = header[i] === '"' ? quoted() : token();
    const current = out[out.length - 1];
    if (current !== undefined) current.params[name.toLowerCase()] = value;
  }
  return out;

  function quoted(): string {
    let value = '';
    for (i++; i < header.length && header[i] !== '"'; i++) {
      if (header[i] === '\\' && i + 1 < header.length) i++;
      value += header[i];
    }
    i++;
    return value;
  }
}

export interface TokenResponse {
  token: string;
  /** Seconds; the spec's default is 60 when the server gives none. */
  expiresIn: number;
}

const DEFAULT_EXPIRES_IN_S = 60;

export function parseTokenResponse(body: unknown, realmHost: string): TokenResponse {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const token = typeof b.token === 'string' && b.token !== '' ? b.token : b.access_token;
  if (typeof token !== 'string' || token === '') {
    throw new PrismError('UNAVAILABLE', `token server ${realmHost} answered without a token`, { retryable: false });
  }
  const expiresIn = typeof b.expires_in === 'number' && b.expires_in > 0 ? b.expires_in : DEFAULT_EXPIRES_IN_S;
  return { token, expiresIn };
}

/** Bearer tokens per (host, scope). Entries are dropped a little before they expire. */
export class TokenCache {
  private readonly tokens = new Map<string, { token: string; expiresAt: number }>();

  get(host: string, scope: string, now = Date.now()): string | undefined {
    const key = `${host} ${scope}`;
    const entry = this.tokens.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= now) {
      this.tokens.delete(key);
      return undefined;
    }
    return entry.token;
  }

  set(host: string, scope: string, t: TokenResponse, now = Date.now()): void {
    // Renew early so a token does not expire between the check and the request it authorises.
    const margin = Math.min(10, t.expiresIn / 10);
    this.tokens.set(`${host} ${scope}`, { token: t.token, expiresAt: now + (t.expiresIn - margin) * 1000 });
  }

  delete(host: string, scope: string): void {
    this.tokens.delete(`${host} ${scope}`);
  }
}
