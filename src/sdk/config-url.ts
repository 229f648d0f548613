/** Daemon addresses, as every platform of the SDK takes them. */

export const DEFAULT_API = '127.0.0.1:8008';
export const DEFAULT_URL = 'http://127.0.0.1:8008';

/** Accepts `host:port`, `http://host:port`, with or without a trailing `/` or `/api/v1`. */
export function normalizeUrl(url: string): string {
  let u = url.trim();
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(u)) u = `http://${u}`;
  return u.replace(/\/+$/, '').replace(/\/api\/v1$/, '');
}
