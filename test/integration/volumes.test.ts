import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, integrationSkipReason, leftovers, REPO_ROOT, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();

/** Loop devices and mounts of this daemon's volumes: each must be gone once no sandbox uses it. */
function volumeResources(dataDir: string): string[] {
  const loops = execFileSync('losetup', ['-a'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(join(dataDir, 'volumes')));
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(dataDir));
  return [...loops.map((l) => `loop: ${l}`), ...mounts.map((m) => `mount: ${m}`)];
}

describe.skipIf(!!skip)('volumes on the oci runtime (real prismd)', () => {
  let d: Prismd;
  const sh = async (id: string, command: string) => (await call(d.url, 'POST', `/sandboxes/${id}/exec`, { command, timeoutSec: 60 })).body;
  const create = async (body: object) => call(d.url, 'POST', '/sandboxes', { runtime: 'oci', ...body });

  beforeAll(async () => {
    d = await startPrismd({ extraArgs: ['--runtime', 'oci'] });
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('keeps data across sandbox delete, stop/start and a prismd restart; a new sandbox mounts it again', async () => {
    const v = await call(d.url, 'POST', '/volumes', { name: 'data', sizeMb: 64 });
    expect(v.status).toBe(201);
    expect(v.body).toMatchObject({ name: 'data', sizeMb: 64, multiAttach: false, attachments: [] });

    const a = (await create({ name: 'writer', volumes: [{ name: 'data', mountPath: '/data' }] })).body;
    expect(a.status).toBe('running');
    // The default user (sandbox, 1000) may write: the volume's root is 1777.
    expect(await sh(a.id, 'id -u && echo hello > /data/greeting && cat /data/greeting')).toMatchObject({ exitCode: 0, stdout: '1000\nhello\n' });
    expect((await call(d.url, 'GET', '/volumes/data')).body.attachments).toEqual([{ sandboxId: a.id, mountPath: '/data', readOnly: false, runtime: 'oci' }]);
    expect((await call(d.url, 'DELETE', `/sandboxes/${a.id}`)).status).toBe(204);
    expect(leftovers(a.id, d.dataDir)).toEqual([]);
    expect(volumeResources(d.dataDir)).toEqual([]);
    expect((await call(d.url, 'GET', '/volumes/data')).body.attachments).toEqual([]);

    const b = (await create({ name: 'reader', volumes: [{ name: 'data', mountPath: '/home/sandbox/work' }] })).body;
    expect(await sh(b.id, 'cat /home/sandbox/work/greeting')).toMatchObject({ exitCode: 0, stdout: 'hello\n' });
    await call(d.url, 'POST', `/sandboxes/${b.id}/stop`);
    expect(volumeResources(d.dataDir)).toEqual([]); // a stopped sandbox mounts nothing
    await call(d.url, 'POST', `/sandboxes/${b.id}/start`);
    expect(await sh(b.id, 'echo more >> ~/work/greeting && sync')).toMatchObject({ exitCode: 0 });

    d = await d.restart();
    expect(await sh(b.id, 'cat ~/work/greeting')).toMatchObject({ exitCode: 0, stdout: 'hello\nmore\n' });
    await call(d.url, 'DELETE', `/sandboxes/${b.id}`);
    d = await d.restart();
    const c = (await create({ volumes: [{ name: 'data', mountPath: '/data' }] })).body;
    expect(await sh(c.id, 'cat /data/greeting')).toMatchObject({ stdout: 'hello\nmore\n' });
    await call(d.url, 'DELETE', `/sandboxes/${c.id}`);
    expect(volumeResources(d.dataDir)).toEqual([]);
  });

  it('enforces the size: writing past sizeMb fails with ENOSPC and reports DISK_FULL', async () => {
    await call(d.url, 'POST', '/volumes', { name: 'small', sizeMb: 16 });
    const sb = (await create({ volumes: [{ name: 'small', mountPath: '/small' }] })).body;
    const r = await sh(sb.id, 'head -c 33554432 /dev/zero > /small/big');
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/No space left on device/);
    expect(r).toMatchObject({ diskFull: true, limitExceeded: 'DISK_FULL' });
    // The writable layer is not what filled up: the rest of the sandbox still writes.
    expect(await sh(sb.id, 'echo ok > /tmp/x && cat /tmp/x')).toMatchObject({ exitCode: 0, stdout: 'ok\n' });
    await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
    await call(d.url, 'DELETE', '/volumes/small');
  });

  it('a read-only mount refuses writes; a second read-write attach is CONFLICT unless multiAttach', async () => {
    await call(d.url, 'POST', '/volumes', { name: 'single', sizeMb: 16 });
    await call(d.url, 'POST', '/volumes', { name: 'shared', sizeMb: 16, multiAttach: true });
    const w = (await create({ volumes: [{ name: 'single', mountPath: '/v' }, { name: 'shared', mountPath: '/s' }] })).body;
    await sh(w.id, 'echo from-writer > /v/f');

    const second = await create({ name: 'second-writer', volumes: [{ name: 'single', mountPath: '/v' }] });
    expect(second.status).toBe(409);
    expect(second.body.error.code).toBe('CONFLICT');
    expect((await call(d.url, 'GET', '/sandboxes/second-writer')).status).toBe(404);

    const ro = (await create({ volumes: [{ name: 'single', mountPath: '/v', readOnly: true }] })).body;
    expect(await sh(ro.id, 'cat /v/f')).toMatchObject({ exitCode: 0, stdout: 'from-writer\n' });
    const refused = await sh(ro.id, 'echo x > /v/g');
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/Read-only file system/);

    const w2 = (await create({ volumes: [{ name: 'shared', mountPath: '/s' }] })).body;
    await sh(w2.id, 'echo from-w2 > /s/f');
    expect(await sh(w.id, 'cat /s/f')).toMatchObject({ stdout: 'from-w2\n' }); // one file system, two sandboxes

    const busy = await call(d.url, 'DELETE', '/volumes/single');
    expect(busy.status).toBe(409);
    expect(busy.body.error.code).toBe('CONFLICT');
    for (const sb of [w, ro, w2]) await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
    expect(volumeResources(d.dataDir)).toEqual([]);
    expect((await call(d.url, 'DELETE', '/volumes/single')).status).toBe(204);
    expect((await call(d.url, 'DELETE', '/volumes/shared')).status).toBe(204);
    expect(existsSync(join(d.dataDir, 'volumes', 'single'))).toBe(false);
  });

  it('a failed create releases the attachment and leaves no loop device or mount', async () => {
    await call(d.url, 'POST', '/volumes', { name: 'vfail', sizeMb: 16 });
    // /etc/passwd is a file in the image: runc cannot mount the volume's directory over it.
    const r = await create({ name: 'bad-mount', volumes: [{ name: 'vfail', mountPath: '/etc/passwd' }] });
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect((await call(d.url, 'GET', '/sandboxes/bad-mount')).status).toBe(404);
    expect((await call(d.url, 'GET', '/volumes/vfail')).body.attachments).toEqual([]);
    expect(volumeResources(d.dataDir)).toEqual([]);
    const ok = (await create({ volumes: [{ name: 'vfail', mountPath: '/data' }] })).body;
    expect(ok.status).toBe('running');
    await call(d.url, 'DELETE', `/sandboxes/${ok.id}`);
    await call(d.url, 'DELETE', '/volumes/vfail');
  });

  it('answers bad volume requests with stable codes and creates nothing', async () => {
    await call(d.url, 'POST', '/volumes', { name: 'v', sizeMb: 16 });
    const cases: [string, string, unknown, number, string][] = [
      ['POST', '/volumes', { name: 'Bad!', sizeMb: 16 }, 400, 'INVALID_ARGUMENT'],
      ['POST', '/volumes', { name: 'big', sizeMb: 1 << 30 }, 400, 'INVALID_ARGUMENT'],
      ['POST', '/volumes', { name: 'v', sizeMb: 16 }, 409, 'ALREADY_EXISTS'],
      ['GET', '/volumes/none', undefined, 404, 'NOT_FOUND'],
      ['DELETE', '/volumes/none', undefined, 404, 'NOT_FOUND'],
      ['POST', '/sandboxes', { volumes: [{ name: 'none', mountPath: '/x' }] }, 404, 'NOT_FOUND'],
      ['POST', '/sandboxes', { volumes: [{ name: 'v', mountPath: '/proc/v' }] }, 400, 'INVALID_ARGUMENT'],
      ['POST', '/sandboxes', { volumes: [{ name: 'v', mountPath: 'rel' }] }, 400, 'INVALID_ARGUMENT'],
      ['POST', '/sandboxes', { volumes: [{ name: 'v', mountPath: '/' }] }, 400, 'INVALID_ARGUMENT'],
      ['POST', '/sandboxes', { volumes: [{ name: 'v', mountPath: '/a' }, { name: 'v', mountPath: '/b' }] }, 400, 'INVALID_ARGUMENT'],
    ];
    for (const [method, path, body, status, code] of cases) {
      const r = await call(d.url, method, path, body);
      expect({ method, path, body, status: r.status, code: r.body?.error?.code }).toEqual({ method, path, body, status, code });
    }
    expect((await call(d.url, 'GET', '/sandboxes')).body.sandboxes).toEqual([]);
    expect((await call(d.url, 'GET', '/volumes')).body.volumes.map((v: { name: string }) => v.name)).toEqual(['data', 'v']);
    await call(d.url, 'DELETE', '/volumes/v');
  });

  it('prismctl (through the SDK): volume create/ls/inspect/rm and sandbox create --volume', () => {
    const ctl = (...args: string[]) => {
      const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin', 'prismctl.js'), '--api', d.api, ...args], {
        encoding: 'utf8', timeout: 60_000, env: { ...process.env, PRISM_TOKEN: d.token, PRISM_CONFIG: join(d.dataDir, 'no-cli-config.json') },
      });
      return { code: r.status, out: r.stdout, err: r.stderr };
    };
    expect(ctl('volume', 'create', 'cli', '--size', '16', '--multi-attach')).toMatchObject({ code: 0, out: expect.stringMatching(/created volume cli \(16 MiB on node/) });
    const made = ctl('-o', 'json', 'sandbox', 'create', '--runtime', 'oci', '--volume', 'cli:/cli', '--volume', 'data:/ref:ro');
    expect(made.code, made.err).toBe(0);
    const sb = JSON.parse(made.out) as { id: string; volumes: unknown };
    expect(sb.volumes).toEqual([{ name: 'cli', mountPath: '/cli', readOnly: false }, { name: 'data', mountPath: '/ref', readOnly: true }]);
    expect(ctl('sandbox', 'info', sb.id).out).toMatch(/Volumes:\s+cli:\/cli, data:\/ref:ro/);
    expect(ctl('volume', 'ls').out).toMatch(new RegExp(`cli\\s+16 MiB\\s+\\S+\\s+yes\\s+${sb.id}:/cli`));
    expect(ctl('volume', 'inspect', 'data').out).toMatch(new RegExp(`${sb.id}\\s+/ref\\s+ro\\s+oci`));
    const busy = ctl('volume', 'rm', 'cli');
    expect(busy.code).toBe(1);
    expect(busy.err).toContain('CONFLICT');
    expect(ctl('sandbox', 'create', '--volume', 'cli')).toMatchObject({ code: 2, err: expect.stringMatching(/NAME:\/path/) });
    expect(ctl('sandbox', 'rm', sb.id).code).toBe(0);
    expect(ctl('volume', 'rm', 'cli')).toMatchObject({ code: 0, out: 'deleted volume cli\n' });
    expect(JSON.parse(ctl('-o', 'json', 'volume', 'ls').out).volumes.map((v: { name: string }) => v.name)).toEqual(['data']);
  });
});
