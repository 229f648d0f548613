import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RuntimeName } from '../../src/core/types.js';
import { INET, startFakeInternet, startTestDns, type FakeInternet } from '../fixtures/fake-internet.js';
import { authHeaders, call, createdDuring, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

/**
 * The network policy cases of network-policy.test.ts (which covers oci in depth) on the runtimes that
 * do not simply join the prepared namespace: microvm (QEMU in the namespace, its NIC standing in for
 * the veth end) and docker (the container's own namespace linked after start). Few sandboxes per
 * runtime: each microVM boot is ~2 s of TCG CPU, so one VM carries several checks.
 */
const skip = integrationSkipReason() ?? (existsSync('/usr/sbin/nft') ? undefined : 'nft is not installed (scripts/setup.sh)');
if (skip) console.warn(`skipping network policy runtime tests: ${skip}`);

/** A pool no other test daemon uses (network-policy.test.ts takes 10.203.128.0/20). */
const POOL = '10.203.144.0/20';
const sh = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const rules = (table: string) => (sh('nft', 'list', 'tables').includes(table) ? sh('nft', 'list', 'table', 'inet', table) : '');
const CONNECT = `
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(s.recv(100).decode().strip())
except Exception as e:
    print("FAIL", type(e).__name__); sys.exit(1)
`;
const MY_ADDRESS = "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('198.51.100.2', 9)); print(s.getsockname()[0])";

describe.skipIf(!!skip)('network policy on the microvm and docker runtimes', () => {
  let d: Prismd;
  let inet: FakeInternet;
  let dns: Awaited<ReturnType<typeof startTestDns>>;
  let hostListener: Server;
  let hostPort = 0;
  let table = '';
  let ipForward = '';
  const usable = new Map<RuntimeName, string | undefined>();

  beforeAll(async () => {
    ipForward = sh('cat', '/proc/sys/net/ipv4/ip_forward').trim();
    inet = await startFakeInternet();
    dns = await startTestDns({ 'allowed.test': INET.a, 'other.test': INET.b });
    hostListener = createServer((c) => c.end('host secret\n'));
    await new Promise<void>((r) => hostListener.listen(0, '0.0.0.0', r));
    hostPort = (hostListener.address() as { port: number }).port;
    d = await startPrismd({ extraArgs: ['--runtime', 'oci', '--sandbox-cidr', POOL, '--sandbox-dns', `127.0.0.1:${dns.port}`] });
    table = `prism_${(JSON.parse(sh('cat', join(d.dataDir, 'node.json'))).id as string).replace(/^node-/, '').slice(0, 8)}`;
    const nodes = (await call(d.url, 'GET', '/nodes')).body.nodes as Array<{ runtimeInfo: Array<{ name: RuntimeName; usable: boolean; reason?: string }> }>;
    for (const rt of ['microvm', 'docker'] as const) {
      const info = nodes[0]!.runtimeInfo.find((r) => r.name === rt);
      usable.set(rt, info?.usable ? undefined : `${rt} is not usable here: ${info?.reason ?? 'not registered'}`);
    }
  }, 60_000);

  afterAll(async () => {
    await d?.dispose();
    hostListener?.close();
    dns?.close();
    await inet?.close();
    if (table) try { sh('nft', 'delete', 'table', 'inet', table); } catch { /* removed by the daemon */ }
    if (ipForward) writeFileSync('/proc/sys/net/ipv4/ip_forward', ipForward);
  });

  for (const runtime of ['microvm', 'docker'] as const) {
    describe(`on ${runtime}`, () => {
      const mine: string[] = [];
      const create = async (body: object) => {
        const t0 = Date.now();
        const r = await call(d.url, 'POST', '/sandboxes', { runtime, cpus: 0.1, memoryMb: 128, user: '0', ...body });
        expect(r.status, JSON.stringify(r.body)).toBe(201);
        mine.push(r.body.id);
        return { ...r.body, ms: Date.now() - t0 } as { id: string; name: string; ms: number };
      };
      const run = async (id: string, cmd: string[]) => {
        const r = await call(d.url, 'POST', `/sandboxes/${id}/exec`, { cmd, timeoutSec: 30 });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        return r.body as { exitCode: number; stdout: string; stderr: string };
      };
      const connect = async (id: string, host: string, port: number) => (await run(id, ['python3', '-c', CONNECT, host, String(port)])).stdout.trim();
      const myAddress = async (id: string) => (await run(id, ['python3', '-c', MY_ADDRESS])).stdout.trim();
      const served = async (id: string, port: number, path: string) => {
        let r: Response | undefined;
        for (let i = 0; i < 100; i++) {
          r = await fetch(`${d.url}/api/v1/sandboxes/${id}/ports/${port}/${path}`, { headers: authHeaders(d.url) });
          if (r.status === 200) break;
          await new Promise((res) => setTimeout(res, 100));
        }
        return { status: r!.status, text: await r!.text() };
      };
      /** Everything a network leaves on the host, by sandbox. */
      const traces = (id: string) => {
        const key = id.slice(3);
        return [
          ...(sh('ip', 'netns', 'list').includes(`prism-${id}`) ? ['netns'] : []),
          ...(sh('ip', 'link').includes(`pv${key}`) ? ['veth'] : []),
          ...(rules(table).includes(key) ? ['nft'] : []),
          ...(existsSync(join(d.dataDir, 'net', `${id}.json`)) ? ['state'] : []),
        ];
      };
      /** QEMU processes of this daemon with a NIC (a networked microVM's). */
      const networkedVms = () => sh('ps', '-eo', 'args').split('\n').filter((l) => l.includes('-netdev') && l.includes(d.dataDir));
      let a: { id: string; ms: number } | undefined;
      let b: { id: string; ms: number } | undefined;

      afterAll(async () => {
        for (const id of mine) await call(d.url, 'DELETE', `/sandboxes/${id}`);
      }, 60_000);

      it('egress none: only lo, nothing made on the host', async (t) => {
        if (usable.get(runtime)) return t.skip(usable.get(runtime));
        const sb = await create({});
        const ifs = await run(sb.id, ['ls', '/sys/class/net']);
        expect(ifs.stdout.split(/\s+/).filter(Boolean)).toEqual(['lo']);
        expect(traces(sb.id)).toEqual([]);
        console.log(`[${runtime}] create time, egress none: ${sb.ms} ms`);
      }, 120_000);

      it('egress all with a port: the internet, names, and the port through the proxy; never the host, metadata or private ranges', async (t) => {
        if (usable.get(runtime)) return t.skip(usable.get(runtime));
        a = await create({ network: { egress: 'all' }, ports: [8000] });
        console.log(`[${runtime}] create time, egress all + port: ${a.ms} ms`);
        expect(await connect(a.id, INET.a, INET.port)).toBe(`hello ${INET.a}`);
        expect(await connect(a.id, INET.metadata, INET.port)).toMatch(/^FAIL/);
        expect(await connect(a.id, INET.private, INET.port)).toMatch(/^FAIL/);
        const gateway = (await myAddress(a.id)).replace(/\.(\d+)$/, (_m, n) => `.${Number(n) - 1}`);
        const apiPort = Number(new URL(d.url).port);
        for (const [host, port] of [[gateway, apiPort], [gateway, hostPort], ['198.51.100.1', hostPort], ['127.0.0.1', apiPort]] as const) {
          expect(await connect(a.id, host, port), `${host}:${port}`).toMatch(/^FAIL/);
        }
        const named = await run(a.id, ['python3', '-c', "import socket; print(socket.gethostbyname('allowed.test'))"]);
        expect(named.stdout.trim(), named.stderr).toBe(INET.a);
        // A bulk transfer through the proxy: offloaded (GSO) frames must cross the tap intact.
        await run(a.id, ['sh', '-c', 'mkdir -p /srv && echo served > /srv/index.txt && head -c 3000000 /dev/urandom > /srv/big && cd /srv && setsid python3 -m http.server 8000 >/dev/null 2>&1 < /dev/null &']);
        expect(await served(a.id, 8000, 'index.txt')).toEqual({ status: 200, text: 'served\n' });
        const big = await fetch(`${d.url}/api/v1/sandboxes/${a.id}/ports/8000/big`, { headers: authHeaders(d.url) });
        expect((await big.arrayBuffer()).byteLength).toBe(3_000_000);
        // Its network bytes (docs/metrics.md): the 3 MB left the sandbox over its link, whatever the runtime.
        let sample: { netRxBytes?: number; netTxBytes?: number } | undefined;
        for (const deadline = Date.now() + 15_000; !(sample?.netTxBytes! >= 3_000_000) && Date.now() < deadline; await new Promise((r) => setTimeout(r, 500))) {
          sample = ((await call(d.url, 'GET', `/sandboxes/${a.id}/metrics`)).body.metrics as (typeof sample)[]).at(-1);
        }
        expect(sample?.netTxBytes).toBeGreaterThanOrEqual(3_000_000);
        expect(sample?.netRxBytes).toBeGreaterThan(0);
      }, 120_000);

      it('an allow-list: allowed CIDRs and names only, raw IPs of names closed, other sandboxes unreachable', async (t) => {
        if (usable.get(runtime)) return t.skip(usable.get(runtime));
        b = await create({ network: { egress: { allow: ['allowed.test', `${INET.private}/32`] } } });
        expect(await connect(b.id, INET.private, INET.port)).toBe(`hello ${INET.private}`);
        expect(await connect(b.id, INET.a, INET.port)).toMatch(/^FAIL/);
        expect(await connect(b.id, 'allowed.test', INET.port)).toBe(`hello ${INET.a}`);
        expect(await connect(b.id, INET.b, INET.port)).toMatch(/^FAIL/);
        const other = await run(b.id, ['python3', '-c', "import socket; print(socket.gethostbyname('other.test'))"]);
        expect(other.exitCode).not.toBe(0);
        expect(dns.queries).not.toContain('other.test');
        if (a) expect(await connect(b.id, await myAddress(a.id), 8000)).toMatch(/^FAIL/);
      }, 120_000);

      it('keeps the address and policy across stop/start and a daemon restart', async (t) => {
        if (usable.get(runtime)) return t.skip(usable.get(runtime));
        if (!b) return t.skip('the allow-list sandbox was not made');
        const addr = await myAddress(b.id);
        expect((await call(d.url, 'POST', `/sandboxes/${b.id}/stop`)).status).toBe(200);
        expect((await call(d.url, 'POST', `/sandboxes/${b.id}/start`)).status).toBe(200);
        expect(await myAddress(b.id)).toBe(addr);
        expect(await connect(b.id, 'allowed.test', INET.port)).toBe(`hello ${INET.a}`);
        expect(await connect(b.id, INET.b, INET.port)).toMatch(/^FAIL/);
        // The task keeps running; its link, rules and DNS filter are found again (docker: same namespace, kept).
        d = await d.restart();
        expect(await connect(b.id, INET.private, INET.port)).toBe(`hello ${INET.private}`);
        expect(await connect(b.id, 'allowed.test', INET.port)).toBe(`hello ${INET.a}`);
        expect(await connect(b.id, INET.b, INET.port)).toMatch(/^FAIL/);
      }, 120_000);

      it('delete and a failed create leave no namespace, veth, tap, rule, state or process', async (t) => {
        if (usable.get(runtime)) return t.skip(usable.get(runtime));
        for (const sb of [a, b]) {
          if (!sb) continue;
          expect(traces(sb.id)).not.toEqual([]);
          expect((await call(d.url, 'DELETE', `/sandboxes/${sb.id}`)).status).toBe(204);
          expect(traces(sb.id)).toEqual([]);
          expect(sh('ps', '-eo', 'args')).not.toContain(sb.id);
        }
        expect(networkedVms()).toEqual([]);
        // The failed sandbox is named by its `created` event: other test files make namespaces meanwhile.
        // The workdir is made after the task runs in its network (under a file: it cannot be): a late failure.
        const { result: r, ids } = await createdDuring(d, () =>
          call(d.url, 'POST', '/sandboxes', { runtime, cpus: 0.1, memoryMb: 128, user: '0', workdir: '/etc/passwd/x', network: { egress: { allow: ['allowed.test'] } } }),
        );
        expect(r.status, JSON.stringify(r.body)).toBeGreaterThanOrEqual(400);
        expect(ids).toHaveLength(1);
        expect(sh('ip', 'netns', 'list')).not.toContain(ids[0]);
        expect(existsSync(join(d.dataDir, 'net')) ? sh('ls', join(d.dataDir, 'net')).trim() : '').toBe('');
        expect(networkedVms()).toEqual([]);
      }, 120_000);
    });
  }
});
