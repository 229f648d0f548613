import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INET, startFakeInternet, startTestDns, type FakeInternet } from '../fixtures/fake-internet.js';
import { authHeaders, call, createdDuring, integrationSkipReason, leftovers, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason() ?? (existsSync('/usr/sbin/nft') ? undefined : 'nft is not installed (scripts/setup.sh)');
if (skip) console.warn(`skipping network policy integration tests: ${skip}`);

/** A pool no other test daemon uses, so address checks below are about this daemon only. */
const POOL = '10.203.128.0/20';
const sh = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
/** This daemon's nft table as text; empty once the last network took it away. */
const rules = (table: string) => (sh('nft', 'list', 'tables').includes(table) ? sh('nft', 'list', 'table', 'inet', table) : '');
const CONNECT = `
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(s.recv(100).decode().strip())
except Exception as e:
    print("FAIL", type(e).__name__); sys.exit(1)
`;

/** CONNECT to several host:port pairs at once (threads: the refused ones wait out their timeouts together), one line each, in order. */
const CONNECT_ALL = `
import socket, sys, threading
targets = sys.argv[1:]
out = [None] * (len(targets) // 2)
def one(i):
    try:
        s = socket.create_connection((targets[2 * i], int(targets[2 * i + 1])), timeout=2)
        out[i] = s.recv(100).decode().strip()
    except Exception as e:
        out[i] = "FAIL " + type(e).__name__
ts = [threading.Thread(target=one, args=(i,)) for i in range(len(out))]
for t in ts: t.start()
for t in ts: t.join()
print("\\n".join(out))
`;

/**
 * In the host VM (test/hostvm/inside.sh) only what a stock server could change runs: no egress, a list
 * of allowed addresses (nftables on a stock kernel) and clean deletes. The rest touches no host
 * difference and costs minutes under emulation; the host run covers it.
 */
const IN_HOST_VM = process.env.PRISM_IN_HOST_VM === '1';

describe.skipIf(!!skip)('network policy (oci runtime, real runc, nftables and namespaces)', () => {
  let d: Prismd;
  let inet: FakeInternet;
  let dns: Awaited<ReturnType<typeof startTestDns>>;
  let hostListener: Server;
  let hostPort = 0;
  let table = '';
  const created: string[] = [];

  const create = async (body: object) => {
    const t0 = Date.now();
    // A tenth of a CPU each: the node's capacity must not run out before the policies do.
    // As root: the worst case for a policy is code with every privilege the sandbox allows.
    const r = await call(d.url, 'POST', '/sandboxes', { cpus: 0.1, memoryMb: 128, user: 'root', ...body });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    created.push(r.body.id);
    return { ...r.body, ms: Date.now() - t0 } as { id: string; name: string; ms: number };
  };
  const run = async (id: string, cmd: string[]) => {
    // Under emulation on a loaded host (the host VM in CI) python3 alone can take tens of seconds to start;
    // the policy is what is tested, so an exec that ran out of time says so instead of passing as empty output.
    const r = await call(d.url, 'POST', `/sandboxes/${id}/exec`, { cmd, timeoutSec: IN_HOST_VM ? 180 : 20 });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.timedOut, `${cmd.join(' ')} ran out of time: ${JSON.stringify(r.body)}`).toBe(false);
    return r.body as { exitCode: number; stdout: string; stderr: string };
  };
  const connect = async (id: string, host: string, port: number) => (await run(id, ['python3', '-c', CONNECT, host, String(port)])).stdout.trim();
  /** One python run for many targets (python's start is slow under emulation): each target's line, in order. */
  const connectAll = async (id: string, targets: readonly (readonly [string, number])[]) =>
    (await run(id, ['python3', '-c', CONNECT_ALL, ...targets.flatMap(([h, p]) => [h, String(p)])])).stdout.trimEnd().split('\n');
  const myAddress = async (id: string) =>
    (await run(id, ['python3', '-c', "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('198.51.100.2', 9)); print(s.getsockname()[0])"])).stdout.trim();

  // prismd turns forwarding on for sandboxes with egress (docs/network.md); the test host gets its own value back.
  let ipForward = '';

  beforeAll(async () => {
    ipForward = sh('cat', '/proc/sys/net/ipv4/ip_forward').trim();
    inet = await startFakeInternet();
    dns = await startTestDns({ 'allowed.test': INET.a, 'other.test': INET.b });
    hostListener = createServer((c) => c.end('host secret\n'));
    await new Promise<void>((r) => hostListener.listen(0, '0.0.0.0', r));
    hostPort = (hostListener.address() as { port: number }).port;
    d = await startPrismd({ extraArgs: ['--runtime', 'oci', '--sandbox-cidr', POOL, '--sandbox-dns', `127.0.0.1:${dns.port}`] });
    const nodeId = JSON.parse(sh('cat', join(d.dataDir, 'node.json'))).id as string;
    table = `prism_${nodeId.replace(/^node-/, '').slice(0, 8)}`;
  });

  afterAll(async () => {
    await d?.dispose();
    hostListener?.close();
    dns?.close();
    await inet?.close();
    // Whatever a failed assertion left: this daemon's namespaces, links and table.
    for (const id of created) {
      try { sh('ip', 'netns', 'delete', `prism-${id}`); } catch { /* removed by the daemon */ }
    }
    try { sh('nft', 'delete', 'table', 'inet', table); } catch { /* removed by the daemon */ }
    if (ipForward) writeFileSync('/proc/sys/net/ipv4/ip_forward', ipForward);
  });

  it('egress none (the default) gives the sandbox only lo and creates nothing on the host', async () => {
    const sb = await create({});
    const ifs = await run(sb.id, ['ls', '/sys/class/net']);
    expect(ifs.stdout.split(/\s+/).filter(Boolean)).toEqual(['lo']);
    expect(sh('ip', 'netns', 'list')).not.toContain(sb.id);
    expect(await connect(sb.id, INET.a, INET.port)).toMatch(/^FAIL/);
  });

  it.skipIf(IN_HOST_VM)('egress all reaches the internet but never private ranges, the metadata address, the host or its loopback', async () => {
    const none = await create({});
    const sb = await create({ network: { egress: 'all' } });
    console.log(`create time: egress none ${none.ms} ms, egress all ${sb.ms} ms`);
    // Reachable from the host, so only the policy stops the sandbox.
    expect(sh('python3', '-c', CONNECT, INET.metadata, String(INET.port)).trim()).toBe(`hello ${INET.metadata}`);
    const gateway = (await myAddress(sb.id)).replace(/\.(\d+)$/, (_m, n) => `.${Number(n) - 1}`);
    const apiPort = Number(new URL(d.url).port);
    const closed = [[INET.metadata, INET.port], [INET.private, INET.port], [gateway, apiPort], [gateway, hostPort], ['192.0.2.2', hostPort], ['198.51.100.1', hostPort], ['127.0.0.1', hostPort], ['127.0.0.1', apiPort]] as const;
    const got = await connectAll(sb.id, [[INET.a, INET.port], ...closed]);
    expect(got[0]).toBe(`hello ${INET.a}`);
    closed.forEach(([host, port], i) => expect(got[i + 1], `${host}:${port}`).toMatch(/^FAIL/));
    const named = await run(sb.id, ['python3', '-c', "import socket; print(socket.gethostbyname('allowed.test'))"]);
    expect(named.stdout.trim()).toBe(INET.a);
  });

  it('an allow-list of CIDRs permits its targets only, and deny wins over allow', async () => {
    const one = await create({ network: { egress: { allow: [`${INET.a}/32`] } } });
    const [a, b] = await connectAll(one.id, [[INET.a, INET.port], [INET.b, INET.port]]);
    expect(a).toBe(`hello ${INET.a}`);
    expect(b).toMatch(/^FAIL/);
    const denied = await create({ network: { egress: { allow: ['198.51.100.0/24', '172.31.77.0/24'], deny: [`${INET.b}/32`] } } });
    // A private range opens when a CIDR names it explicitly.
    expect(await connectAll(denied.id, [[INET.a, INET.port], [INET.b, INET.port], [INET.private, INET.port]])).toEqual([
      `hello ${INET.a}`, expect.stringMatching(/^FAIL/), `hello ${INET.private}`,
    ]);
  });

  it.skipIf(IN_HOST_VM)('a domain allow-list resolves and reaches allowed names; other names and raw IPs fail', async () => {
    const sb = await create({ network: { egress: { allow: ['allowed.test'] } } });
    // Before any lookup the address is closed: only what an allowed name resolves to opens.
    expect(await connect(sb.id, INET.a, INET.port)).toMatch(/^FAIL/);
    expect(await connect(sb.id, 'allowed.test', INET.port)).toBe(`hello ${INET.a}`);
    expect(await connect(sb.id, INET.b, INET.port)).toMatch(/^FAIL/);
    const other = await run(sb.id, ['python3', '-c', "import socket; print(socket.gethostbyname('other.test'))"]);
    expect(other.exitCode).not.toBe(0);
    expect(dns.queries).not.toContain('other.test');
  });

  it.skipIf(IN_HOST_VM)('two sandboxes with egress all cannot reach each other; the host reaches an exposed port through the proxy', async () => {
    const a = await create({ network: { egress: 'all' } });
    const b = await create({ network: { egress: 'all' }, ports: [8000] });
    await run(b.id, ['sh', '-c', 'mkdir -p /srv && echo served-from-b > /srv/index.txt && cd /srv && setsid python3 -m http.server 8000 >/dev/null 2>&1 < /dev/null &']);
    const bAddr = await myAddress(b.id);
    let proxied: Response | undefined;
    // Python starts its server in a few seconds here, far slower under emulation (the host VM).
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; ) {
      proxied = await fetch(`${d.url}/api/v1/sandboxes/${b.id}/ports/8000/index.txt`, { headers: authHeaders(d.url) });
      if (proxied.status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(proxied!.status).toBe(200);
    expect(await proxied!.text()).toBe('served-from-b\n');
    expect(await connect(a.id, bAddr, 8000)).toMatch(/^FAIL/);
    // Auth like every route, and only ports exposed on create.
    expect((await fetch(`${d.url}/api/v1/sandboxes/${b.id}/ports/8000/index.txt`)).status).toBe(401);
    expect((await call(d.url, 'GET', `/sandboxes/${b.id}/ports/8001/`)).status).toBe(412);
  });

  it.skipIf(IN_HOST_VM)('egress none with ports: the port is served but every egress is dropped', async () => {
    const sb = await create({ ports: [8000] });
    await run(sb.id, ['sh', '-c', 'cd / && setsid python3 -m http.server 8000 >/dev/null 2>&1 < /dev/null &']);
    let status = 0;
    for (const deadline = Date.now() + 60_000; Date.now() < deadline && status !== 200; ) {
      status = (await fetch(`${d.url}/api/v1/sandboxes/${sb.id}/ports/8000/`, { headers: authHeaders(d.url) })).status;
      if (status !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    expect(status).toBe(200);
    expect(await connect(sb.id, INET.a, INET.port)).toMatch(/^FAIL/);
  });

  it.skipIf(IN_HOST_VM)('a failed create leaves no namespace, link, address or rule behind', async () => {
    // Other test files make namespaces, links and addresses meanwhile: the failed sandbox's own are looked
    // for by its id (from its `created` event); the rules are this daemon's table.
    const hostLists = () => [sh('ip', 'netns', 'list'), sh('ip', '-o', 'link'), sh('ip', '-o', '-4', 'addr')].join('\n');
    // Resolved addresses count down their timeout ("expires 59s"): not a difference.
    const ruleText = () => rules(table).replace(/ expires \S+/g, '');
    const rulesBefore = ruleText();
    // The user is resolved in the image after runc started the task in its network: a late failure.
    const { result: r, ids } = await createdDuring(d, () =>
      call(d.url, 'POST', '/sandboxes', { cpus: 0.1, network: { egress: { allow: ['198.51.100.0/24', 'allowed.test'] } }, user: 'no-such-user' }),
    );
    expect(r.status, JSON.stringify(r.body)).toBeGreaterThanOrEqual(400);
    expect(JSON.stringify(r.body)).toContain('no-such-user');
    expect(ids).toHaveLength(1);
    const key = ids[0]!.slice(3);
    expect(hostLists()).not.toContain(key);
    expect(ruleText()).toBe(rulesBefore);
  });

  it('delete removes the netns, veth, address and rules; the table goes with the last network', async () => {
    const sb = await create({ network: { egress: 'all' } });
    const key = sb.id.slice(3);
    expect(sh('ip', 'netns', 'list')).toContain(`prism-${sb.id}`);
    expect(sh('nft', 'list', 'table', 'inet', table)).toContain(`o_${key}`);
    expect((await call(d.url, 'DELETE', `/sandboxes/${sb.id}`)).status).toBe(204);
    expect(sh('ip', 'netns', 'list')).not.toContain(sb.id);
    expect(sh('ip', 'link')).not.toContain(`pv${key}`);
    expect(sh('ip', '-4', 'addr')).not.toContain(`pv${key}`);
    expect(rules(table)).not.toContain(key);
    const all = created.splice(0);
    for (const id of all) expect([204, 404]).toContain((await call(d.url, 'DELETE', `/sandboxes/${id}`)).status);
    for (const id of all) expect(leftovers(id, d.dataDir)).toEqual([]);
    expect(sh('nft', 'list', 'tables')).not.toContain(table);
    expect(sh('ip', '-4', 'addr')).not.toContain('10.203.1');
  });

  it.skipIf(IN_HOST_VM)('keeps the network across stop/start and a daemon restart (rules and DNS filter reattached)', async () => {
    const sb = await create({ network: { egress: { allow: ['allowed.test'] } } });
    const addr = await myAddress(sb.id);
    expect((await call(d.url, 'POST', `/sandboxes/${sb.id}/stop`)).status).toBe(200);
    expect((await call(d.url, 'POST', `/sandboxes/${sb.id}/start`)).status).toBe(200);
    expect(await myAddress(sb.id)).toBe(addr);
    d = await d.restart();
    expect(await connect(sb.id, 'allowed.test', INET.port)).toBe(`hello ${INET.a}`);
    expect(await connect(sb.id, INET.b, INET.port)).toMatch(/^FAIL/);
    expect((await call(d.url, 'DELETE', `/sandboxes/${sb.id}`)).status).toBe(204);
  });

  it.skipIf(IN_HOST_VM)('refuses a CIDR with host bits set', async () => {
    const bad = await call(d.url, 'POST', '/sandboxes', { network: { egress: { allow: ['10.0.0.1/8'] } } });
    expect(bad.status).toBe(400);
  });

  it.skipIf(IN_HOST_VM)('networks of sandboxes the store does not know are removed at daemon start', async () => {
    const orphan = 'sb-0000deadbeef';
    mkdirSync(join(d.dataDir, 'net'), { recursive: true });
    writeFileSync(join(d.dataDir, 'net', `${orphan}.json`), JSON.stringify({ id: orphan, key: '0000deadbeef', index: 7, egress: 'all' }));
    created.push(orphan);
    sh('ip', 'netns', 'add', `prism-${orphan}`);
    sh('ip', 'link', 'add', 'pv0000deadbeef', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', `prism-${orphan}`);
    d = await d.restart();
    expect(sh('ip', 'netns', 'list')).not.toContain(orphan);
    expect(sh('ip', 'link')).not.toContain('pv0000deadbeef');
    expect(existsSync(join(d.dataDir, 'net', `${orphan}.json`))).toBe(false);
  });
});
