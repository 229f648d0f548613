import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DockerDriver } from '../../src/runtime/docker/docker-driver.js';
import { call, integrationSkipReason, REPO_ROOT, startPrismd, type Prismd } from './prismd-harness.js';

const dockerHost = process.env.DOCKER_HOST ?? `unix://${process.env.PRISM_TEST_DOCKER_DIR ?? '/var/lib/prism-test/docker'}/docker.sock`;
const probe = await new DockerDriver({ dockerHost, node: 'probe', initBinary: join(REPO_ROOT, 'guest/init/prism-init'), stateDir: tmpdir() }).probe();
const skip = integrationSkipReason() ?? (probe.usable ? undefined : `${probe.reason} (start one with scripts/test-dockerd.sh start)`);
if (skip) console.warn(`skipping docker volume tests: ${skip}`);

function volumeResources(dataDir: string): string[] {
  const loops = execFileSync('losetup', ['-a'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(join(dataDir, 'volumes')));
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(dataDir));
  return [...loops, ...mounts];
}

describe.skipIf(!!skip)('volumes on the docker runtime (real prismd, real dockerd)', () => {
  let d: Prismd;
  const sh = async (id: string, command: string) => (await call(d.url, 'POST', `/sandboxes/${id}/exec`, { command, timeoutSec: 60 })).body;

  beforeAll(async () => {
    d = await startPrismd({ extraArgs: ['--docker-host', dockerHost, '--runtime', 'oci'] });
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('a docker sandbox writes a volume (size enforced, kept across stop/start); an oci sandbox reads it after', async () => {
    await call(d.url, 'POST', '/volumes', { name: 'dk', sizeMb: 16 });
    const a = await call(d.url, 'POST', '/sandboxes', { runtime: 'docker', user: '1000:1000', volumes: [{ name: 'dk', mountPath: '/data' }] });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    expect(await sh(a.body.id, 'echo from-docker > /data/f && cat /data/f')).toMatchObject({ exitCode: 0, stdout: 'from-docker\n' });
    const full = await sh(a.body.id, 'head -c 33554432 /dev/zero > /data/big');
    expect(full.stderr).toMatch(/No space left on device/);
    expect(full).toMatchObject({ diskFull: true, limitExceeded: 'DISK_FULL' });
    await sh(a.body.id, 'rm /data/big');
    await call(d.url, 'POST', `/sandboxes/${a.body.id}/stop`);
    expect(volumeResources(d.dataDir)).toEqual([]); // released while stopped
    await call(d.url, 'POST', `/sandboxes/${a.body.id}/start`);
    expect(await sh(a.body.id, 'cat /data/f')).toMatchObject({ stdout: 'from-docker\n' });
    expect((await call(d.url, 'DELETE', `/sandboxes/${a.body.id}`)).status).toBe(204);
    expect(volumeResources(d.dataDir)).toEqual([]);

    const b = (await call(d.url, 'POST', '/sandboxes', { runtime: 'oci', volumes: [{ name: 'dk', mountPath: '/data', readOnly: true }] })).body;
    expect(await sh(b.id, 'cat /data/f')).toMatchObject({ exitCode: 0, stdout: 'from-docker\n' });
    await call(d.url, 'DELETE', `/sandboxes/${b.id}`);
    expect((await call(d.url, 'DELETE', '/volumes/dk')).status).toBe(204);
    expect(volumeResources(d.dataDir)).toEqual([]);
  });
});
