/**
 * GET /metrics of a real prismd (oci): the Prometheus text format, parsed here; token-protected unless
 * `--metrics-auth none`; a sandbox's create, exec and usage show up, and its series go with it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authHeaders, call, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping metrics tests: ${skip}`);

interface Sample { name: string; labels: Record<string, string>; value: number }

/** The samples of an exposition text (`name{a="b",...} value`), comments skipped. */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

describe.skipIf(!!skip)('GET /metrics (Prometheus)', () => {
  let d: Prismd;
  const scrape = async (headers: Record<string, string> = authHeaders(d.url)) => {
    const r = await fetch(`${d.url}/metrics`, { headers });
    return { status: r.status, type: r.headers.get('content-type') ?? '', text: await r.text() };
  };
  const find = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
    samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

  beforeAll(async () => {
    d = await startPrismd({ extraArgs: ['--runtime', 'oci', '--metrics-interval', '1'] });
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('needs a token like the API, and answers the text format with the node label', async () => {
    const none = await scrape({});
    expect(none.status).toBe(401);
    expect(none.text).toMatch(/UNAUTHENTICATED/);
    expect((await scrape({ authorization: 'Bearer prism_nope_nope' })).status).toBe(401);
    const ok = await scrape();
    expect(ok.status).toBe(200);
    expect(ok.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const samples = parse(ok.text);
    const node = (await call(d.url, 'GET', '/health')).body.node as string;
    expect(find(samples, 'prism_node_capacity_cpus', { node })[0]?.value).toBeGreaterThan(0);
    expect(find(samples, 'process_resident_memory_bytes', { node })[0]?.value).toBeGreaterThan(0);
  });

  it("shows a sandbox's create, exec and usage, counts requests by route, and drops its series once deleted", async () => {
    const c = await call(d.url, 'POST', '/sandboxes', { memoryMb: 128, cpus: 0.5, name: 'metrics-me' });
    expect(c.status, JSON.stringify(c.body)).toBe(201);
    const id = c.body.id as string;
    const r = await call(d.url, 'POST', `/sandboxes/${id}/exec`, { cmd: ['sh', '-c', 'head -c 20000000 /dev/zero | md5sum >/dev/null; echo done'] });
    expect(r.body.stdout).toBe('done\n');
    // The sampler's newest sample of it (every second here): wait until it is there.
    let samples: Sample[] = [];
    for (const deadline = Date.now() + 15_000; Date.now() < deadline; await new Promise((res) => setTimeout(res, 250))) {
      samples = parse((await scrape()).text);
      if (find(samples, 'prism_sandbox_memory_bytes', { sandbox: id }).length) break;
    }
    const labels = { sandbox: id, name: 'metrics-me', runtime: 'oci' };
    expect(find(samples, 'prism_sandbox_memory_bytes', labels)[0]?.value).toBeGreaterThan(0);
    expect(find(samples, 'prism_sandbox_memory_limit_bytes', labels)[0]?.value).toBe(128 * 2 ** 20);
    expect(find(samples, 'prism_sandbox_cpu_seconds_total', labels)[0]?.value).toBeGreaterThan(0);
    expect(find(samples, 'prism_sandbox_pids', labels)[0]?.value).toBeGreaterThan(0);
    expect(find(samples, 'prism_sandboxes', { status: 'running', runtime: 'oci' })[0]?.value).toBe(1);
    expect(find(samples, 'prism_sandbox_create_duration_seconds_count', { runtime: 'oci', outcome: 'ok' })[0]?.value).toBe(1);
    expect(find(samples, 'prism_exec_duration_seconds_count', { runtime: 'oci' })[0]?.value).toBeGreaterThanOrEqual(1);
    expect(find(samples, 'prism_api_requests_total', { method: 'POST', route: '/api/v1/sandboxes', status: '201' })[0]?.value).toBe(1);
    // Route templates only: no sandbox id is a label value of the request counter.
    expect(find(samples, 'prism_api_requests_total').some((s) => s.labels.route!.includes(id))).toBe(false);
    expect(find(samples, 'prism_store_request_duration_seconds_count').reduce((n, s) => n + s.value, 0)).toBeGreaterThan(0);

    expect((await call(d.url, 'DELETE', `/sandboxes/${id}`)).status).toBe(204);
    const after = parse((await scrape()).text);
    expect(after.filter((s) => s.labels.sandbox === id)).toEqual([]);
    expect(find(after, 'prism_sandboxes', { status: 'running' })).toEqual([]);
  }, 60_000);

  it('with --metrics-auth none, Prometheus scrapes without a token while the API still needs one', async () => {
    const open = await startPrismd({ extraArgs: ['--runtime', 'oci', '--metrics-auth', 'none'] });
    try {
      const r = await fetch(`${open.url}/metrics`);
      expect(r.status).toBe(200);
      expect(parse(await r.text()).length).toBeGreaterThan(0);
      expect((await fetch(`${open.url}/api/v1/sandboxes`)).status).toBe(401);
    } finally {
      await open.dispose();
    }
  });
});
