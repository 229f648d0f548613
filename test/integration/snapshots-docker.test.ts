/**
 * Snapshots and forks on the docker runtime (real prismd, real dockerd): a snapshot is the engine's
 * commit of the container, tagged prism.local/snapshots/<id>, and sandboxes are made from that image.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DockerDriver } from '../../src/runtime/docker/docker-driver.js';
import { call, integrationSkipReason, REPO_ROOT, startPrismd, type Prismd } from './prismd-harness.js';

const dockerHost = process.env.DOCKER_HOST ?? `unix://${process.env.PRISM_TEST_DOCKER_DIR ?? '/var/lib/prism-test/docker'}/docker.sock`;
const probe = await new DockerDriver({ dockerHost, node: 'probe', initBinary: join(REPO_ROOT, 'guest/init/prism-init'), stateDir: tmpdir() }).probe();
const skip = integrationSkipReason() ?? (probe.usable ? undefined : `${probe.reason} (start one with scripts/test-dockerd.sh start)`);
if (skip) console.warn(`skipping docker snapshot tests: ${skip}`);

describe.skipIf(!!skip)('snapshots on the docker runtime', () => {
  let d: Prismd;
  const engine = new Docker({ socketPath: dockerHost.replace('unix://', '') });
  const sh = async (id: string, command: string, root = false) => (await call(d.url, 'POST', `/sandboxes/${id}/exec`, { command, timeoutSec: 60, ...(root ? { user: 'root' } : {}) })).body;

  beforeAll(async () => {
    d = await startPrismd({ extraArgs: ['--docker-host', dockerHost, '--runtime', 'oci'] });
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('commits a sandbox in the engine; creates and forks from it; removes the image with the snapshot', async () => {
    const parent = (await call(d.url, 'POST', '/sandboxes', { runtime: 'docker' })).body;
    expect(await sh(parent.id, 'echo engine-snap > /tmp/f && chmod 644 /tmp/f && rm /etc/debian_version', true)).toMatchObject({ exitCode: 0 });
    const snap = await call(d.url, 'POST', `/sandboxes/${parent.id}/snapshots`, {});
    expect(snap.status, JSON.stringify(snap.body)).toBe(201);
    expect(snap.body).toMatchObject({ runtime: 'docker', memory: false, imageDigest: expect.stringMatching(/^sha256:/) });
    expect((await engine.getImage(snap.body.image).inspect()).Id).toBe(snap.body.imageDigest);
    expect((await call(d.url, 'POST', '/sandboxes', { snapshot: snap.body.id, runtime: 'oci' })).status).toBe(400);
    const child = await call(d.url, 'POST', '/sandboxes', { snapshot: snap.body.id });
    expect(child.status, JSON.stringify(child.body)).toBe(201);
    expect(child.body.runtime).toBe('docker');
    expect((await sh(child.body.id, 'cat /tmp/f; test -e /etc/debian_version && echo has || echo gone')).stdout).toBe('engine-snap\ngone\n');
    const fork = await call(d.url, 'POST', `/sandboxes/${parent.id}/fork`, { count: 2 });
    expect(fork.status, JSON.stringify(fork.body)).toBe(201);
    for (const f of fork.body.sandboxes) expect((await sh(f.id, 'cat /tmp/f')).stdout).toBe('engine-snap\n');
    expect((await call(d.url, 'DELETE', `/snapshots/${snap.body.id}`)).status).toBe(412);
    for (const x of [child.body, ...fork.body.sandboxes, parent]) await call(d.url, 'DELETE', `/sandboxes/${x.id}`);
    for (const s of [snap.body, fork.body.snapshot]) expect((await call(d.url, 'DELETE', `/snapshots/${s.id}`)).status).toBe(204);
    await expect(engine.getImage(snap.body.image).inspect()).rejects.toMatchObject({ statusCode: 404 });
  });
});
