import { PrismError } from '../../core/errors.js';
import { basicAuthorization, parseChallenges, parseTokenResponse, pullScope, TokenCache, type Challenge, type Credentials } from './registry-auth.js';

/**
 * HTTP to one or more registries: the plain-HTTP policy, redirects, and the 401 -> challenge ->
 * credentials/token -> retry dance. Credentials only ever travel in headers: never in URLs, logs or
 * error messages, and never to another origin on a redirect.
 */

/** Where a request goes: the API host, the domain as written in the image name, and the repository. */
export interface RegistryTarget {
  host: string;
  domain: string;
  repository: string;
}

export interface TransportOptions {
  insecure: string[];
  auths: Record<string, Credentials>;
  userAgent: string;
}

export interface RequestOptions {
  accept?: string;
  signal?: AbortSignal;
}

const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

export function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(?:\.\d{1,3}){3}$/.test(hostname);
}

/** Discards a response body we do not read, so the connection can be reused. */
export async function discard(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // The body is unwanted; a failure to cancel it changes nothing.
  }
}

export class RegistryTransport {
  private readonly tokens = new TokenCache();
  private readonly pendingTokens = new Map<string, Promise<string>>();
  /** Hosts that answered a Basic challenge, so later requests send credentials up front. */
  private readonly basicHosts = new Set<string>();

  constructor(private readonly opts: TransportOptions) {}

  /** Plain HTTP only for loopback and for hosts (`host` or `host:port`) listed as insecure. */
  plainHttpAllowed(url: URL): boolean {
    return isLoopbackHost(url.hostname) || this.opts.insecure.includes(url.host) || this.opts.insecure.includes(url.hostname);
  }

  baseUrl(host: string): URL {
    const plain = new URL(`http://${host}/`);
    return this.plainHttpAllowed(plain) ? plain : new URL(`https://${host}/`);
  }

  /** Throws before any connection is made when `url` may not be fetched. */
  checkUrl(url: URL): void {
    if (url.protocol === 'https:') return;
    if (url.protocol !== 'http:') throw new PrismError('INVALID_ARGUMENT', `unsupported URL scheme ${url.protocol} for registry host ${url.host}`);
    if (!this.plainHttpAllowed(url)) {
      throw new PrismError(
        'FAILED_PRECONDITION',
        `refusing plain HTTP to ${url.host}: only loopback registries and those listed as insecure may be reached without TLS`,
      );
    }
  }

  /** GET `path` on the target's registry, authenticating when challenged. Non-401 statuses are the caller's. */
  async get(t: RegistryTarget, path: string, o: RequestOptions): Promise<Response> {
    const url = new URL(path, this.baseUrl(t.host));
    const known = this.knownAuthorization(t);
    let res = await this.send(url, o, known);
    if (res.status !== 401) return res;
    const challenges = parseChallenges(res.headers.get('www-authenticate') ?? '');
    await discard(res);
    this.tokens.delete(t.host, pullScope(t.repository));
    const authorization = await this.authorize(t, challenges, o.signal);
    res = await this.send(url, o, authorization);
    if (res.status !== 401) return res;
    await discard(res);
    this.tokens.delete(t.host, pullScope(t.repository));
    throw this.unauthenticated(t, 'the registry refused the request');
  }

  private credentials(t: RegistryTarget): Credentials | undefined {
    const a = this.opts.auths;
    return a[t.host] ?? a[t.domain] ?? (t.domain === 'docker.io' ? a['index.docker.io'] : undefined);
  }

  private knownAuthorization(t: RegistryTarget): string | undefined {
    const token = this.tokens.get(t.host, pullScope(t.repository));
    if (token !== undefined) return `Bearer ${token}`;
    const creds = this.credentials(t);
    return creds && this.basicHosts.has(t.host) ? basicAuthorization(creds) : undefined;
  }

  private unauthenticated(t: RegistryTarget, why: string): PrismError {
    const hint = this.credentials(t)
      ? `the credentials configured for ${t.host} were rejected`
      : `no credentials are configured for ${t.host}; the repository may be private or may not exist`;
    return new PrismError('UNAUTHENTICATED', `cannot pull ${t.domain}/${t.repository}: ${why} (${hint})`);
  }

  private async authorize(t: RegistryTarget, challenges: Challenge[], signal?: AbortSignal): Promise<string> {
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    const creds = this.credentials(t);
    if (bearer !== undefined) return `Bearer ${await this.token(t, bearer, creds, signal)}`;
    if (challenges.some((c) => c.scheme === 'basic')) {
      if (!creds) throw this.unauthenticated(t, 'the registry requires a user name and password');
      this.basicHosts.add(t.host);
      return basicAuthorization(creds);
    }
    throw this.unauthenticated(t, 'the registry asked for authentication without a supported challenge');
  }

  /** One token request per (host, scope) at a time; concurrent callers share it. */
  private token(t: RegistryTarget, c: Challenge, creds: Credentials | undefined, signal?: AbortSignal): Promise<string> {
    const scope = pullScope(t.repository);
    const key = `${t.host} ${scope}`;
    let pending = this.pendingTokens.get(key);
    if (pending === undefined) {
      pending = this.fetchToken(t, c, creds, signal).finally(() => this.pendingTokens.delete(key));
      this.pendingTokens.set(key, pending);
    }
    return pending;
  }

  private async fetchToken(t: RegistryTarget, c: Challenge, creds: Credentials | undefined, signal?: AbortSignal): Promise<string> {
    let realm: URL;
    try {
      realm = new URL(c.params.realm!);
    } catch (e) {
      throw new PrismError('UNAVAILABLE', `registry ${t.host} sent a malformed token realm`, { cause: e, retryable: false });
    }
    if (c.params.service) realm.searchParams.set('service', c.params.service);
    realm.searchParams.set('scope', c.params.scope ?? pullScope(t.repository));
    const res = await this.send(realm, { accept: 'application/json', signal }, creds ? basicAuthorization(creds) : undefined);
    if (res.status === 401) {
      await discard(res);
      throw this.unauthenticated(t, `the token server ${realm.host} refused`);
    }
    if (res.status === 403) {
      await discard(res);
      throw new PrismError('PERMISSION_DENIED', `cannot pull ${t.domain}/${t.repository}: the token server ${realm.host} denied access`);
    }
    if (!res.ok) {
      await discard(res);
      throw new PrismError('UNAVAILABLE', `token server ${realm.host} answered HTTP ${res.status}`, { retryable: res.status >= 500 || res.status === 429 });
    }
    let body: unknown;
    try {
      body = await res.json();
    } catch (e) {
      throw new PrismError('UNAVAILABLE', `token server ${realm.host} answered with malformed JSON`, { cause: e, retryable: false });
    }
    const parsed = parseTokenResponse(body, realm.host);
    this.tokens.set(t.host, pullScope(t.repository), parsed);
    return parsed.token;
  }

  /** Follows redirects itself so that every hop obeys the plain-HTTP policy and credentials stay on their origin. */
  private async send(url: URL, o: RequestOptions, authorization: string | undefined): Promise<Response> {
    let current = url;
    let auth = authorization;
    for (let hop = 0; ; hop++) {
      this.checkUrl(current);
      const headers: Record<string, string> = { 'user-agent': this.opts.userAgent };
      if (o.accept) headers.accept = o.accept;
      if (auth) headers.authorization = auth;
      const res = await fetch(current, { headers, redirect: 'manual', signal: o.signal });
      if (!REDIRECT_STATUSES.has(res.status)) return res;
      const location = res.headers.get('location');
      await discard(res);
      if (!location || hop >= MAX_REDIRECTS) {
        throw new PrismError('UNAVAILABLE', `${current.host} sent ${location ? 'too many redirects' : 'a redirect without a location'}`, { retryable: false });
      }
      const next = new URL(location, current);
      if (next.origin !== current.origin) auth = undefined;
      current = next;
    }
  }
}

/** Maps a registry's error status to a PrismError; 429 and 5xx are retryable. */
export async function statusError(res: Response, what: string): Promise<PrismError> {
  let detail = '';
  try {
    const body = (await res.json()) as { errors?: { code?: string; message?: string }[] };
    const first = body.errors?.[0];
    if (first?.code) detail = `: ${first.code}${first.message ? ` (${first.message})` : ''}`;
  } catch {
    // Not every registry sends the spec's JSON error body.
  }
  const s = res.status;
  if (s === 404) return new PrismError('NOT_FOUND', `${what} not found${detail}`);
  if (s === 401) return new PrismError('UNAUTHENTICATED', `${what}: authentication required${detail}`);
  if (s === 403) return new PrismError('PERMISSION_DENIED', `${what}: access denied${detail}`);
  if (s === 429) return new PrismError('UNAVAILABLE', `${what}: the registry is rate limiting (HTTP 429)${detail}`, { retryable: true });
  if (s >= 500) return new PrismError('UNAVAILABLE', `${what}: the registry failed with HTTP ${s}${detail}`, { retryable: true });
  if (s === 400) return new PrismError('INVALID_ARGUMENT', `${what}: the registry rejected the request${detail}`);
  return new PrismError('UNAVAILABLE', `${what}: unexpected HTTP ${s} from the registry${detail}`, { retryable: false });
}
