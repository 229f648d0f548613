import { Prism, PrismApiError } from '../../src/sdk/browser.js';

/**
 * The console's login: the API token lives in sessionStorage (gone with the tab, never in a URL or a
 * cookie) and goes out as a bearer header through the SDK. Any 401 ends the session: a revoked token
 * logs the user out with a message saying so.
 */

export const TOKEN_KEY = 'prism.console.token';

export interface TokenStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export type SessionListener = (state: { client: Prism | undefined; notice: string | undefined }) => void;

export class Session {
  readonly #store: TokenStore;
  readonly #fetch: typeof fetch;
  readonly #url: string;
  #client: Prism | undefined;
  #notice: string | undefined;
  readonly #listeners = new Set<SessionListener>();

  constructor(store: TokenStore, opts: { url: string; fetch?: typeof fetch }) {
    this.#store = store;
    this.#url = opts.url;
    this.#fetch = opts.fetch ?? ((input, init) => fetch(input, init));
    const saved = store.getItem(TOKEN_KEY);
    if (saved) this.#client = this.#makeClient(saved);
  }

  get client(): Prism | undefined {
    return this.#client;
  }

  /** Why the last session ended, when it did not end by the user's choice. */
  get notice(): string | undefined {
    return this.#notice;
  }

  subscribe(l: SessionListener): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  /** Checks the token against the API before keeping it; rejects with a message fit to show. */
  async login(token: string): Promise<void> {
    const t = token.trim();
    if (!t) throw new Error('Enter an API token.');
    const client = this.#makeClient(t, false);
    try {
      await client.nodes.list();
    } catch (e) {
      if (e instanceof PrismApiError && e.code === 'UNAUTHENTICATED') throw new Error('That API token was not accepted: check it, or create one with prismctl token create.');
      throw new Error(describeError(e));
    }
    this.#store.setItem(TOKEN_KEY, t);
    this.#client = this.#makeClient(t);
    this.#notice = undefined;
    this.#emit();
  }

  logout(notice?: string): void {
    this.#store.removeItem(TOKEN_KEY);
    const had = this.#client !== undefined;
    this.#client = undefined;
    this.#notice = notice;
    if (had || notice) this.#emit();
  }

  /** A client whose every call ends the session on a 401 (a revoked or expired token). */
  #makeClient(token: string, guard = true): Prism {
    const base = this.#fetch;
    const guarded: typeof fetch = async (input, init) => {
      const res = await base(input, init);
      if (res.status === 401 && this.#client) this.logout('Your API token is no longer accepted (it was revoked or is invalid). Log in again.');
      return res;
    };
    return new Prism({ url: this.#url, token, fetch: guard ? guarded : base });
  }

  #emit(): void {
    for (const l of this.#listeners) l({ client: this.#client, notice: this.#notice });
  }
}

/** A message fit to show: the API's code and message, never a stack trace. */
export function describeError(e: unknown): string {
  if (e instanceof PrismApiError) return `${e.message} (${e.code})`;
  if (e instanceof Error) return e.message || e.name;
  return String(e);
}
