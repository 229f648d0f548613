import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seededRng } from '../fixtures/seeded-rng.js';
import { authHeaders, call, integrationSkipReason, leftovers, startPrismd, type Prismd } from '../integration/prismd-harness.js';

/**
 * The files API under hostile paths, against a real sandbox (the route fuzzer in fuzz.test.ts only
 * reaches unknown sandboxes): traversal, encoded and NUL bytes, huge and relative paths, links planted
 * in the sandbox that point at a marker file on the host, garbage archives. No answer may be a 5xx, the
 * host marker is never read or touched, and the sandbox keeps working.
 * PRISM_FUZZ_SEED=<n> replays a run; PRISM_FUZZ_FILES_COUNT sets how many requests.
 */

const skip = integrationSkipReason();
const SEED = Number(process.env.PRISM_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const COUNT = Number(process.env.PRISM_FUZZ_FILES_COUNT ?? 600);

describe.skipIf(!!skip)('files API fuzz (hostile paths on a real sandbox)', () => {
  let d: Prismd;
  let sandboxId = '';
  const hostDir = mkdtempSync(join(tmpdir(), 'prism-fuzz-marker-'));
  const marker = join(hostDir, 'marker.txt');
  const SECRET = `host-secret-${process.pid}`;

  beforeAll(async () => {
    writeFileSync(marker, SECRET, { mode: 0o644 });
    d = await startPrismd();
    const created = await call(d.url, 'POST', '/sandboxes', { name: 'fuzz-files', memoryMb: 256 });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    sandboxId = created.body.id;
    // Links that would lead to the host marker if anything resolved them outside the sandbox.
    const plant = await call(d.url, 'POST', `/sandboxes/${sandboxId}/exec`, {
      command: `cd /home/sandbox && ln -s ${marker} esc && ln -s ../../../../../../.. up && ln -s ${hostDir} dir && mkdir -p a/b && echo keep > a/b/f`,
    });
    expect(plant.body.exitCode, JSON.stringify(plant.body)).toBe(0);
  });
  afterAll(async () => {
    if (sandboxId) await call(d.url, 'DELETE', `/sandboxes/${sandboxId}`).catch(() => undefined);
    await d?.dispose();
    rmSync(hostDir, { recursive: true, force: true });
  });

  it(`answers ${COUNT} hostile file requests without a 5xx and never reaches the host (seed ${SEED})`, async () => {
    console.log(`files fuzz seed: ${SEED} (replay with PRISM_FUZZ_SEED=${SEED})`);
    const r = seededRng(SEED);
    const int = (n: number) => Math.floor(r() * n);
    const pick = <T,>(xs: readonly T[]): T => xs[int(xs.length)]!;
    const paths = [
      '', 'relative/x', '.', '..', '/', '//', '/home/sandbox/esc', '/home/sandbox/up' + marker, '/home/sandbox/dir/marker.txt',
      '/home/sandbox/up/../../..' + hostDir, `/../../..${marker}`, '/home/sandbox/a/../../../..' + marker, '/home/sandbox/a\u0000b',
      '/home/sandbox/' + 'x'.repeat(5000), '/home/sandbox/' + 'd/'.repeat(600), '/proc/self/root' + marker, '/proc/1/root' + marker,
      '/home/sandbox/😈', '/home/sandbox/a/b/f', '/home/sandbox/a', '/home/sandbox/new/deep/file', '/dev/null', '/proc/self/mem',
      '/sys/kernel/notes', '/etc/shadow', '/.prism/init', '/home/sandbox/%2e%2e/%2e%2e' + marker, '/home/sandbox/a/b/../../esc',
    ];
    const qp = (p: string, extra = '') => `path=${encodeURIComponent(p)}${extra}`;
    const garbage = () => Buffer.from(Array.from({ length: int(4096) }, () => int(256)));
    const tarish = () => {
      // A ustar header naming an escaping entry, then noise: must be refused, never written outside.
      const h = Buffer.alloc(512);
      h.write(pick(['../../../../../../..' + marker, marker, 'esc', 'up/x', 'a/../../b']), 0);
      h.write('0000644\0', 100); h.write('00000000012\0', 124); h.write('0', 156); h.write('ustar\0' + '00', 257);
      let sum = 0;
      h.fill(' ', 148, 156);
      for (const b of h) sum += b;
      h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
      return Buffer.concat([h, Buffer.from('pwned-data\n'), garbage()]);
    };
    const base = `${d.url}/api/v1/sandboxes/${sandboxId}/files`;
    const make = (): { method: string; url: string; body?: Buffer | string; ct?: string } => {
      const p = pick(paths);
      const extra = pick(['', '', '&user=root', '&user=nobody', '&mode=4777', '&mode=99999', '&recursive=true', '&zzz=1']);
      switch (int(9)) {
        case 0: return { method: 'GET', url: `${base}?${qp(p, extra)}` };
        case 1: return { method: 'PUT', url: `${base}?${qp(p, extra.replace('recursive=true', ''))}`, body: pick([Buffer.from('pwned\n'), garbage()]), ct: 'application/octet-stream' };
        case 2: return { method: 'GET', url: `${base}/stat?${qp(p)}` };
        case 3: return { method: 'GET', url: `${base}/list?${qp(p, extra)}` };
        case 4: return { method: 'POST', url: `${base}/mkdir`, body: JSON.stringify({ path: p, parents: r() < 0.5, ...(r() < 0.3 ? { mode: pick([0o777, -1, 1e9]) } : {}) }), ct: 'application/json' };
        // Deletes and moves stay the sandbox user's: as root they could wreck the sandbox itself, which
        // is allowed but would end the test's "still works" check.
        case 5: return { method: 'DELETE', url: `${base}?${qp(p, pick(['', '&recursive=true']))}` };
        case 6: return { method: 'POST', url: `${base}/move`, body: JSON.stringify({ from: p, to: pick(paths) }), ct: 'application/json' };
        case 7: return { method: 'GET', url: `${base}/archive?${qp(p)}` };
        default: return { method: 'PUT', url: `${base}/archive?${qp(pick(['/home/sandbox/x', p]))}`, body: pick([tarish(), garbage()]), ct: 'application/x-tar' };
      }
    };
    const failures: string[] = [];
    const byStatus = new Map<number, number>();
    let leaked = false;
    for (let i = 0; i < COUNT; i++) {
      const q = make();
      const res = await fetch(q.url, {
        method: q.method,
        headers: { ...authHeaders(d.url), ...(q.ct ? { 'content-type': q.ct } : {}) },
        body: q.body as BodyInit | undefined,
        signal: AbortSignal.timeout(20_000),
      }).catch((e: Error) => e);
      if (res instanceof Error) {
        failures.push(`${q.method} ${q.url.slice(0, 160)}: ${res.message}`);
        continue;
      }
      const body = Buffer.from(await res.arrayBuffer().catch(() => new ArrayBuffer(0)));
      if (body.includes(SECRET)) leaked = true;
      byStatus.set(res.status, (byStatus.get(res.status) ?? 0) + 1);
      if (res.status >= 500) failures.push(`${q.method} ${q.url.slice(0, 160)}: ${res.status} ${body.toString().slice(0, 200)}`);
    }
    console.log(`files fuzz: statuses ${JSON.stringify(Object.fromEntries([...byStatus].sort()))}`);
    expect(failures).toEqual([]);
    expect(leaked).toBe(false);
    // Some requests must have succeeded, or the fuzzer only ever met validation.
    expect(byStatus.get(200) ?? 0).toBeGreaterThan(COUNT / 20);
    // The host side is exactly as planted.
    expect(readFileSync(marker, 'utf8')).toBe(SECRET);
    expect(statSync(marker).mode & 0o7777).toBe(0o644);
    expect(readdirSync(hostDir)).toEqual(['marker.txt']);
    // The sandbox still works.
    const ok = await call(d.url, 'POST', `/sandboxes/${sandboxId}/exec`, { command: 'echo alive' });
    expect(ok.body.stdout).toBe('alive\n');
    expect((await call(d.url, 'DELETE', `/sandboxes/${sandboxId}`)).status).toBe(204);
    expect(leftovers(sandboxId, d.dataDir)).toEqual([]);
    sandboxId = '';
  });
});
