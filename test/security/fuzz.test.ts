import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seededRng } from '../fixtures/seeded-rng.js';
import { authHeaders, call, integrationSkipReason, startPrismd, type Prismd } from '../integration/prismd-harness.js';

/**
 * Malformed requests against a real prismd, on every route of its OpenAPI document: no 5xx, no crash,
 * nothing left behind. The daemon gets a private, empty image store and a default image on a closed
 * local port, so that no request can pull from the internet or touch the shared test images (GC,
 * removal). Bodies are built to be invalid (wrong types, unknown fields, broken encodings), so no
 * request may create anything: any sandbox, mount, cgroup or loop device afterwards is a leak.
 * PRISM_FUZZ_SEED=<n> replays a run; PRISM_FUZZ_COUNT sets how many requests.
 */

const skip = integrationSkipReason();
if (skip) console.warn(`skipping the API fuzz test: ${skip}`);

const SEED = Number(process.env.PRISM_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const COUNT = Number(process.env.PRISM_FUZZ_COUNT ?? 3000);
const CONCURRENCY = 8;

interface Route {
  method: string;
  path: string;
  /** Property names of its JSON body, if it has one. */
  props: string[];
}

interface FuzzRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Buffer;
  what: string;
}

class Fuzzer {
  constructor(private readonly r: () => number) {}

  int(n: number): number {
    return Math.floor(this.r() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  /** Path segments: traversal, encodings, control bytes, huge, unicode. */
  segment(): string {
    return this.pick([
      () => '..', () => '../../../etc/passwd', () => '%2e%2e%2f%2e%2e%2fetc%2fpasswd', () => '..%2f..%2f',
      () => '%00', () => 'a%00b', () => '%ff%fe', () => 'x'.repeat(300 + this.int(5000)), () => '%E2%80%AE',
      () => encodeURIComponent('😈'.repeat(20)), () => 'sb-000000000000', () => '.', () => '%2F', () => '~root',
      () => encodeURIComponent(`\${jndi:ldap://127.0.0.1:1/a}`), () => 'CON', () => '-rf', () => String(this.int(1e9)),
      () => encodeURIComponent(this.str(20)),
    ])();
  }

  str(max: number): string {
    const alphabet = ['a', 'Z', '0', '-', '_', '.', '/', '\\', '"', "'", ' ', '\n', '\u0000', '\u202e', '😈', '%', '{', '$'];
    let s = '';
    const n = this.int(max);
    for (let i = 0; i < n; i++) s += this.pick(alphabet);
    return s;
  }

  /** A JSON value that is never a valid string (no route takes free text that could pull or run). */
  wrongValue(depth = 0): unknown {
    return this.pick([
      () => null, () => true, () => -1, () => 1e308, () => -0, () => 2 ** 53 + 1, () => 0.5, () => [],
      () => ({}), () => [this.str(10)], () => ({ [this.str(8)]: this.str(8) }),
      () => (depth < 3 ? [this.wrongValue(depth + 1), this.wrongValue(depth + 1)] : 7),
      () => (depth < 3 ? { nested: this.wrongValue(depth + 1) } : false),
    ])();
  }

  body(route: Route): { body: string | Buffer; what: string } {
    const kind = this.int(10);
    switch (kind) {
      case 0: // a known field with a wrong type, plus maybe an unknown one
      case 1: {
        const o: Record<string, unknown> = {};
        for (const p of route.props) if (this.r() < 0.5) o[p] = this.wrongValue();
        if (Object.keys(o).length === 0 || this.r() < 0.3) o[`unknown_${this.str(6)}`] = this.str(10);
        return { body: JSON.stringify(o), what: 'wrong types / unknown fields' };
      }
      case 2:
        // `{}` is a valid create (all defaults): only values that are not objects.
        return { body: JSON.stringify(this.pick([null, true, -1, 'x', [], [{}], 1e308, [null]])), what: 'not an object' };
      case 3: {
        const n = 5000 + this.int(100_000);
        const open = this.r() < 0.5 ? '[' : '{"a":';
        return { body: open.repeat(n) + '1' + (open === '[' ? ']' : '}').repeat(n), what: `nesting ${n}` };
      }
      case 4: {
        const o: Record<string, unknown> = { [route.props[0] ?? 'x']: 'x'.repeat(100_000 + this.int(2_000_000)) };
        o[`zz_${this.str(4)}`] = 1; // an unknown field keeps it invalid whatever the first is
        return { body: JSON.stringify(o), what: 'huge string' };
      }
      case 5:
        return { body: Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0x22, 0x7d]), what: 'invalid UTF-8' };
      case 6:
        return { body: this.str(200), what: 'garbage text' };
      case 7:
        return { body: JSON.stringify({ ['__proto__']: { polluted: true }, constructor: { prototype: { x: 1 } } }), what: 'prototype pollution' };
      case 8:
        return { body: JSON.stringify(Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`k${i}`, i]))), what: 'many keys' };
      default:
        return { body: '{"a":1,"a":', what: 'truncated JSON' };
    }
  }

  contentType(): string | undefined {
    return this.pick([
      'application/json', 'application/json', 'application/json', 'text/plain', 'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x', 'application/json; charset=utf-16', 'application/octet-stream', '\u00ff/\u00fe', undefined,
      'application/x-ndjson', 'application/json; charset=' + 'x'.repeat(2000),
    ]);
  }

  request(routes: Route[], base: string): FuzzRequest {
    const route = this.pick(routes);
    const path = route.path.replace(/\{[^}]+\}/g, () => this.segment());
    const headers: Record<string, string> = { ...authHeaders(base) };
    if (this.r() < 0.05) headers.authorization = this.pick(['Bearer ', 'Bearer x', 'Basic Zm9vOmJhcg==', `Bearer ${'a'.repeat(9000)}`]);
    if (this.r() < 0.2) headers.accept = this.pick(['application/x-ndjson', '*/*', 'text/html', 'x'.repeat(500)]);
    // fetch cannot send a GET with a body; DELETE sometimes gets one.
    const hasBody = route.method === 'GET' ? false : route.method === 'DELETE' ? this.r() < 0.2 : this.r() < 0.9;
    if (!hasBody) return { method: route.method, path, headers, what: 'no body' };
    const { body, what } = this.body(route);
    const ct = this.contentType();
    if (ct) headers['content-type'] = ct;
    return { method: route.method, path, headers, body, what: `${what} as ${ct}` };
  }
}

function loopDevicesUnder(dir: string): string[] {
  return readdirSync('/sys/block')
    .filter((d) => d.startsWith('loop'))
    .map((d) => {
      const f = `/sys/block/${d}/loop/backing_file`;
      return existsSync(f) ? readFileSync(f, 'utf8').trim() : '';
    })
    .filter((f) => f.startsWith(dir));
}

function loopDeviceCount(): number {
  return readdirSync('/sys/block').filter((d) => d.startsWith('loop') && existsSync(`/sys/block/${d}/loop/backing_file`)).length;
}

describe.skipIf(!!skip)('API fuzz', () => {
  let d: Prismd;
  let imagesDir: string;

  beforeAll(async () => {
    imagesDir = mkdtempSync(join(tmpdir(), 'prism-fuzz-images-'));
    d = await startPrismd({ imagesDir, extraArgs: ['--default-image', '127.0.0.1:9/fuzz/none:1'] });
  });
  afterAll(async () => {
    await d?.dispose();
    rmSync(imagesDir, { recursive: true, force: true });
  });

  it(`survives ${COUNT} malformed requests on every route (seed ${SEED})`, async () => {
    console.log(`API fuzz seed: ${SEED} (replay with PRISM_FUZZ_SEED=${SEED})`);
    const doc = (await call(d.url, 'GET', '/openapi.json')).body as {
      paths: Record<string, Record<string, { requestBody?: { content?: Record<string, { schema?: { properties?: Record<string, unknown> } }> } }>>;
    };
    const routes: Route[] = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.entries(ops).map(([method, op]) => ({
        method: method.toUpperCase(),
        path: path.replace(/^\/api\/v1/, ''),
        props: Object.keys(op.requestBody?.content?.['application/json']?.schema?.properties ?? {}),
      })),
    );
    expect(routes.length).toBeGreaterThan(10);
    const loopsBefore = loopDeviceCount();
    const f = new Fuzzer(seededRng(SEED));
    const reqs = Array.from({ length: COUNT }, () => f.request(routes, d.url));
    const failures: string[] = [];
    const byStatus = new Map<number, number>();
    let next = 0;
    const worker = async () => {
      while (next < reqs.length) {
        const q = reqs[next++]!;
        let status: number;
        try {
          const r = await fetch(`${d.url}/api/v1${q.path}`, { method: q.method, headers: q.headers, body: q.body as BodyInit | undefined, signal: AbortSignal.timeout(20_000) });
          status = r.status;
          // The live event stream never ends by design: once it answers 200, its status is the answer.
          if (status === 200 && q.path.startsWith('/events')) await r.body?.cancel();
          else await r.arrayBuffer();
        } catch (e) {
          status = -1;
          failures.push(`${q.method} ${q.path.slice(0, 120)} (${q.what}): ${(e as Error).message}`);
          continue;
        }
        byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
        if (status >= 500) failures.push(`${q.method} ${q.path.slice(0, 120)} (${q.what}): ${status}`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    console.log(`API fuzz: ${routes.length} routes, statuses ${JSON.stringify(Object.fromEntries([...byStatus].sort()))}`);
    expect(failures.slice(0, 20)).toEqual([]);

    // Alive and healthy, and nothing was made.
    expect(d.proc.exitCode).toBeNull();
    expect((await call(d.url, 'GET', '/health')).status).toBe(200);
    expect((await call(d.url, 'GET', '/sandboxes')).body.sandboxes).toEqual([]);
    // Task dirs and runc state of either runtime: where a sandbox's cgroups, mounts and VMs are named.
    for (const dir of ['oci/tasks', 'oci/runc', 'microvm/tasks']) {
      const p = join(d.dataDir, 'runtime', dir);
      expect(existsSync(p) ? readdirSync(p) : [], dir).toEqual([]);
    }
    expect(readFileSync('/proc/mounts', 'utf8')).not.toContain(d.dataDir);
    expect(loopDevicesUnder(d.dataDir)).toEqual([]);
    const loopsAfter = loopDeviceCount();
    // Other engineers' tests share this host, so the global count is reported; ours must be zero.
    console.log(`loop devices on the host: ${loopsBefore} before, ${loopsAfter} after`);
  }, 120_000);
});
