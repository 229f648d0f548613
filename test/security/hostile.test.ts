import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RuntimeName } from '../../src/core/types.js';
import { call, integrationSkipReason, startPrismd, type Prismd } from '../integration/prismd-harness.js';
import { CASES, RUNTIMES, SETUID_RUNTIMES, type CaseContext, type ExecReply } from './hostile-cases.js';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping the hostile-code suite: ${skip}`);

const BYSTANDER_PORT = 8765;

async function exec(d: Prismd, id: string, body: Record<string, unknown>): Promise<ExecReply> {
  const r = await call<ExecReply>(d.url, 'POST', `/sandboxes/${id}/exec`, body);
  if (r.status !== 200) throw new Error(`exec in ${id} failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function create(d: Prismd, body: Record<string, unknown>): Promise<{ id: string; name: string }> {
  const r = await call(d.url, 'POST', '/sandboxes', body);
  if (r.status !== 201) throw new Error(`create ${JSON.stringify(body)}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

describe.skipIf(!!skip)('hostile code is contained', () => {
  let d: Prismd;
  let bystander: { id: string; name: string };
  let server: Server;
  let accepted = 0;
  let hostPort = 0;
  const marker = { path: `/root/prism-marker-${randomBytes(6).toString('hex')}`, secret: randomBytes(16).toString('hex') };

  beforeAll(async () => {
    writeFileSync(marker.path, `${marker.secret}\n`, { mode: 0o644 });
    server = createServer((s) => {
      accepted++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    hostPort = (server.address() as { port: number }).port;
    d = await startPrismd();
    bystander = await create(d, { name: 'bystander' });
    // A listener inside the bystander, left running in the background for the network case.
    await exec(d, bystander.id, {
      command: `nohup python3 -c 'import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", ${BYSTANDER_PORT})); s.listen(8)\nwhile True: s.accept()[0].close()' >/dev/null 2>&1 &`,
    });
  }, 120_000);

  afterAll(async () => {
    await d?.dispose();
    server?.close();
    rmSync(marker.path, { force: true });
  });

  /** The host and the bystander answer promptly: the daemon's health, and a command in another sandbox. */
  async function expectBystanderFine(): Promise<void> {
    const t0 = Date.now();
    expect((await call(d.url, 'GET', '/health')).status).toBe(200);
    expect((await exec(d, bystander.id, { command: 'echo fine' })).stdout).toBe('fine\n');
    expect(Date.now() - t0).toBeLessThan(3000);
  }

  // PRISM_HOSTILE_RUNTIMES=oci,microvm narrows the runtimes (e.g. to iterate on one).
  const only = process.env.PRISM_HOSTILE_RUNTIMES?.split(',');
  for (const rt of RUNTIMES.filter((r) => !only || only.includes(r.name))) {
    describe(`on ${rt.name}`, () => {
      let victim: { id: string; name: string } | undefined;
      let unusable: string | undefined;
      let ctx: CaseContext;

      beforeAll(async () => {
        const nodes = (await call(d.url, 'GET', '/nodes')).body.nodes as Array<{ runtimeInfo: Array<{ name: RuntimeName; usable: boolean; reason?: string }> }>;
        const info = nodes[0]!.runtimeInfo.find((r) => r.name === rt.name);
        if (!info?.usable) {
          unusable = `${rt.name} is not usable on this host: ${info?.reason ?? 'not registered'}`;
          console.warn(`hostile suite: ${unusable}`);
          return;
        }
        // Root in the sandbox: the suite shows what contains even the most privileged code a sandbox can run.
        victim = await create(d, { name: `victim-${rt.name}`, runtime: rt.name, user: 'root', ...rt.victim });
        ctx = {
          d, runtime: rt.name, target: rt, victim, bystander, bystanderPort: BYSTANDER_PORT, marker,
          hostListener: { port: hostPort, accepted: () => accepted },
          exec: (id, body) => exec(d, id, body),
          py: (code, extra = {}) => exec(d, victim!.id, { cmd: ['python3', '-c', code], timeoutSec: 30, ...extra }),
        };
      }, 180_000);

      afterAll(async () => {
        if (victim) await call(d.url, 'DELETE', `/sandboxes/${victim.id}`);
      });

      for (const c of CASES) {
        it(c.name, async (t) => {
          if (unusable) return t.skip(unusable);
          const e = c.expect[rt.name];
          if (e !== 'deny' && e !== 'guest') {
            console.warn(`hostile suite: '${c.name}' skipped on ${rt.name}: ${e ?? 'no expectation written for this runtime'}`);
            return t.skip(e ?? 'no expectation for this runtime');
          }
          await c.run(ctx, e);
          // Contained: the victim still runs commands, the host and the bystander answer promptly.
          expect((await exec(d, victim!.id, { command: 'echo alive', timeoutSec: 30 })).stdout).toBe('alive\n');
          await expectBystanderFine();
        }, c.timeoutMs ?? 60_000);
      }

      it('a setuid-root binary does not give root to a non-root user (no_new_privs)', async (t) => {
        const e = SETUID_RUNTIMES[rt.name];
        if (unusable) return t.skip(unusable);
        if (e !== 'deny') {
          console.warn(`hostile suite: setuid case skipped on ${rt.name}: ${e}`);
          return t.skip(e);
        }
        if (rt.name === 'microvm') {
          // No second VM (a TCG boot each): root in the victim plants the binary, then a command that
          // drops to uid 1000 itself (allowed to root) runs it: the agent's no_new_privs still holds.
          const drop = 'import os, sys; os.setgroups([]); os.setgid(1000); os.setuid(1000); os.execv(sys.argv[1], sys.argv[1:])';
          const r = await exec(d, victim!.id, {
            command: `cp -L /usr/bin/python3 /usr/local/bin/py-suid && chmod 4755 /usr/local/bin/py-suid && stat -c %a:%u /usr/local/bin/py-suid; python3 -c '${drop}' /usr/local/bin/py-suid -c "import os; print(os.getuid(), os.geteuid()); print(open('/proc/self/status').read())"; rm -f /usr/local/bin/py-suid`,
          });
          expect(r.stdout, r.stderr).toContain('4755:0');
          expect(r.stdout).toContain('1000 1000');
          expect(r.stdout).toMatch(/NoNewPrivs:\s+1/);
          return;
        }
        const sb = await create(d, { name: `setuid-${rt.name}`, runtime: rt.name, user: '1000' });
        try {
          // Planted from the host: a root-owned setuid copy of the image's own python3.
          if (rt.name === 'docker') {
            execFileSync('docker', ['exec', '-u', '0', `prism-${sb.id}`, 'sh', '-c', 'cp -L /usr/bin/python3 /usr/local/bin/py-suid && chmod 4755 /usr/local/bin/py-suid']);
          } else {
            const rootfs = join(d.dataDir, 'runtime', 'oci', 'tasks', sb.id, 'rootfs');
            const py = realpathSync(join(rootfs, 'usr/bin/python3'));
            const planted = join(rootfs, 'usr/local/bin/py-suid');
            copyFileSync(py, planted);
            chmodSync(planted, 0o4755);
          }
          const r = await exec(d, sb.id, {
            command: 'stat -c %a:%u /usr/local/bin/py-suid; /usr/local/bin/py-suid -c "import os; print(os.getuid(), os.geteuid())"; grep NoNewPrivs /proc/self/status; su -c id root </dev/null 2>&1; echo "su=$?"',
          });
          expect(r.stdout).toContain('4755:0'); // the bit really is there
          expect(r.stdout).toContain('1000 1000');
          expect(r.stdout).toMatch(/NoNewPrivs:\s+1/);
          expect(r.stdout).not.toMatch(/uid=0\(root\)/);
          expect(r.stdout).not.toContain('su=0');
        } finally {
          await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
        }
        await expectBystanderFine();
      }, 60_000);
    });
  }
});
