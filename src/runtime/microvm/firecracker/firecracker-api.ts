import { request } from 'node:http';
import { PrismError } from '../../../core/errors.js';
import type { FirecrackerRequest } from './firecracker-config.js';

/**
 * A minimal HTTP/1.1 client for Firecracker's API socket (a unix socket given by `--api-sock`). One
 * connection per request: the API is used a handful of times per VM, and no idle socket is left
 * behind. Bodies carry a Content-Length (Firecracker's HTTP server wants it rather than chunks).
 *
 * Errors: a non-2xx answer becomes FAILED_PRECONDITION (400: Firecracker refused the request in its
 * current state or with our input; the input is ours, not the user's) or INTERNAL (anything else),
 * with Firecracker's `fault_message`. A missing or refusing socket is UNAVAILABLE, no answer in time
 * DEADLINE_EXCEEDED. Tested against a fake API server; untested against a real Firecracker.
 */
export class FirecrackerApi {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = 10_000,
  ) {}

  put(path: string, body: object): Promise<void> {
    return this.call('PUT', path, body).then(() => undefined);
  }

  patch(path: string, body: object): Promise<void> {
    return this.call('PATCH', path, body).then(() => undefined);
  }

  async get<T = unknown>(path: string): Promise<T> {
    const text = await this.call('GET', path);
    try {
      return JSON.parse(text) as T;
    } catch (e) {
      throw new PrismError('INTERNAL', `Firecracker GET ${path} answered with a body that is not JSON: ${text.slice(0, 200)}`, { cause: e });
    }
  }

  /** Sends a request from the builders in firecracker-config. */
  send(r: FirecrackerRequest): Promise<void> {
    return r.method === 'PUT' ? this.put(r.path, r.body) : this.patch(r.path, r.body);
  }

  private call(method: 'GET' | 'PUT' | 'PATCH', path: string, body?: object): Promise<string> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const what = `Firecracker ${method} ${path}`;
    return new Promise<string>((resolve, reject) => {
      const headers: Record<string, string | number> = { Accept: 'application/json' };
      if (payload) Object.assign(headers, { 'Content-Type': 'application/json', 'Content-Length': payload.length });
      const req = request({ socketPath: this.socketPath, path, method, headers, agent: false, timeout: this.timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => reject(new PrismError('UNAVAILABLE', `${what}: ${e.message}`, { cause: e })));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) resolve(text);
          else reject(new PrismError(status === 400 ? 'FAILED_PRECONDITION' : 'INTERNAL', `${what} failed (HTTP ${status}): ${faultMessage(text)}`));
        });
      });
      req.on('timeout', () => req.destroy(new PrismError('DEADLINE_EXCEEDED', `${what} got no answer within ${this.timeoutMs} ms`)));
      req.on('error', (e) => {
        if (e instanceof PrismError) reject(e);
        else reject(new PrismError('UNAVAILABLE', `cannot reach Firecracker's API at ${this.socketPath}: ${e.message}`, { cause: e }));
      });
      req.end(payload);
    });
  }
}

/** The spec's Error definition: `{ "fault_message": string }`; anything else is shown as sent. */
function faultMessage(text: string): string {
  try {
    const parsed = JSON.parse(text) as { fault_message?: unknown };
    if (typeof parsed.fault_message === 'string') return parsed.fault_message;
  } catch {
    // not JSON: fall through
  }
  return text.trim().slice(0, 500) || 'no message';
}
