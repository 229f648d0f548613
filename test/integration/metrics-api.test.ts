/**
 * GET /metrics of a real prismd (oci): the Prometheus text format, parsed here; token-protected unless
 * `--metrics-auth none`; a sandbox's create, exec and usage show up, and its series go with it.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushTestImages } from '../fixtures/test-images.js';
import { authHeaders, call, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping metrics tests: ${skip}`);
const noNetwork = existsSync('/usr/sbin/nft') ? undefined : 'nft is not installed (scripts/setup.sh)';
if (!skip && noNetwork) console.warn(`skipping the network bytes test: ${noNetwork}`);
const noRegistry = existsSync('/usr/bin/docker-registry') ? undefined : 'docker-registry is not installed';
if (!skip && noRegistry) console.warn(`skipping the image pull test: ${noRegistry}`);

/** In the sandbox: takes one connection on :8080, counts what comes until EOF, answers 300000 bytes. */
const SINK = `
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(1)
c, _ = s.accept()
n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    n += len(b)
c.sendall(b"x" * 300000)
c.close()
print(n)
`;

/** From the host: sends `bytes` to host:port, then reads the answer to its end; retries until the port listens. */
async function sendAndDrain(host: string, port: number, bytes: number): Promise<number> {
  for (const deadline = Date.now() + 15_000; ; await new Promise((r) => setTimeout(r, 200))) {
    try {
      return await new Promise<number>((resolve, reject) => {
        const sock = connect(port, host);
        let got = 0;
        sock.on('connect', () => sock.end(Buffer.alloc(bytes, 7)));
        sock.on('data', (b: Buffer) => (got += b.length));
        sock.on('end', () => resolve(got));
        sock.on('error', reject);
      });
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
  }
}

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
    // No network (egress none, no ports): no network series.
    expect(find(samples, 'prism_sandbox_network_receive_bytes_total', { sandbox: id })).toEqual([]);
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

  it.skipIf(!!noNetwork)("counts a networked sandbox's bytes each way, in /metrics and its samples, and drops them once it is deleted", async () => {
    // A port gives it a network with egress none: the host can connect in, nothing leaves the host.
    const c = await call(d.url, 'POST', '/sandboxes', { memoryMb: 128, cpus: 0.5, name: 'net-me', ports: [8080] });
    expect(c.status, JSON.stringify(c.body)).toBe(201);
    const id = c.body.id as string;
    try {
      const exec = (cmd: string[], timeoutSec = 20) => call(d.url, 'POST', `/sandboxes/${id}/exec`, { cmd, timeoutSec });
      // Its address: the source of a UDP socket connected along its default route (no packet is sent).
      const addr = (await exec(['python3', '-c', "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('198.51.100.2', 9)); print(s.getsockname()[0])"])).body.stdout.trim();
      expect(addr).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
      const scrapeNet = async () => {
        const samples = parse((await scrape()).text);
        const labels = { sandbox: id, name: 'net-me', runtime: 'oci' };
        return { rx: find(samples, 'prism_sandbox_network_receive_bytes_total', labels)[0]?.value, tx: find(samples, 'prism_sandbox_network_transmit_bytes_total', labels)[0]?.value };
      };
      let before = await scrapeNet();
      for (const deadline = Date.now() + 15_000; before.rx === undefined && Date.now() < deadline; await new Promise((r) => setTimeout(r, 250))) before = await scrapeNet();
      expect(before.rx, 'a network series from the first samples').toBeGreaterThanOrEqual(0);

      const sink = exec(['python3', '-c', SINK], 60);
      const answered = await sendAndDrain(addr, 8080, 1_000_000);
      const r = await sink;
      expect(r.body.stdout.trim(), JSON.stringify(r.body)).toBe('1000000');
      expect(answered).toBe(300_000);

      // Received: the megabyte sent in (with its headers); sent: the 300000 answered (and the acks).
      let after = before;
      for (const deadline = Date.now() + 15_000; Date.now() < deadline; await new Promise((res) => setTimeout(res, 250))) {
        after = await scrapeNet();
        if (after.rx! - before.rx! >= 1_000_000 && after.tx! - before.tx! >= 300_000) break;
      }
      expect(after.rx! - before.rx!).toBeGreaterThanOrEqual(1_000_000);
      expect(after.rx! - before.rx!).toBeLessThan(1_300_000);
      expect(after.tx! - before.tx!).toBeGreaterThanOrEqual(300_000);
      expect(after.tx! - before.tx!).toBeLessThan(1_000_000);
      const series = (await call(d.url, 'GET', `/sandboxes/${id}/metrics`)).body.metrics as { netRxBytes?: number; netTxBytes?: number }[];
      expect(series.at(-1)!.netRxBytes).toBeGreaterThanOrEqual(after.rx!);
      expect(series.at(-1)!.netTxBytes).toBeGreaterThanOrEqual(after.tx!);
    } finally {
      expect((await call(d.url, 'DELETE', `/sandboxes/${id}`)).status).toBe(204);
    }
    const gone = parse((await scrape()).text);
    expect(gone.filter((s) => s.labels.sandbox === id)).toEqual([]);
  }, 90_000);

  it.skipIf(!!noRegistry)('times image pulls from a registry: POST /images and a create of an absent image, and a failed pull', async () => {
    const t = await pushTestImages();
    // Its own image store: pulls into the shared one would change what other tests find.
    const imagesDir = await mkdtemp(join(tmpdir(), 'prism-metrics-images-'));
    const p = await startPrismd({ imagesDir, extraArgs: ['--runtime', 'oci'] });
    try {
      const pulled = await call(p.url, 'POST', '/images', { ref: t.images.layers.ref });
      expect(pulled.status, JSON.stringify(pulled.body)).toBeLessThan(300);
      const missing = await call(p.url, 'POST', '/images', { ref: '127.0.0.1:5000/prism-test/no-such-image:1' });
      expect(missing.status).toBe(404);
      const sb = await call(p.url, 'POST', '/sandboxes', { name: 'pulled', image: t.images.links.ref, memoryMb: 64 });
      expect(sb.status, JSON.stringify(sb.body)).toBe(201);
      const samples = parse(await (await fetch(`${p.url}/metrics`, { headers: authHeaders(p.url) })).text());
      const count = (outcome: string) => find(samples, 'prism_image_pull_duration_seconds_count', { store: 'prism', outcome })[0]?.value;
      expect(count('ok')).toBe(2);
      expect(count('error')).toBe(1);
      expect(find(samples, 'prism_image_pull_duration_seconds_sum', { store: 'prism', outcome: 'ok' })[0]?.value).toBeGreaterThan(0);
    } finally {
      await p.dispose();
      await rm(imagesDir, { recursive: true, force: true });
    }
  }, 120_000);

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
