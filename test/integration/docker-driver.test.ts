/**
 * The docker driver against a real dockerd: the shared RuntimeDriver conformance suite, then what only
 * this driver has (labels, orphans on the engine, images loaded from Prism's store, an unreachable
 * engine). The engine is DOCKER_HOST, else the private test dockerd of scripts/test-dockerd.sh (which
 * .ci/run starts). Where no engine answers the tests are skipped with the reason printed.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrismError } from '../../src/core/errors.js';
import { LocalImageStore } from '../../src/images/local-image-store.js';
import type { TaskHandle, TaskSpec } from '../../src/runtime/driver.js';
import { DockerDriver, NODE_LABEL, SANDBOX_LABEL } from '../../src/runtime/docker/docker-driver.js';
import { dockerConnection } from '../../src/runtime/docker/docker-host.js';
import { IMAGE_REPO } from '../../src/runtime/docker/layer-image.js';
import { driverConformanceSuite, type DriverFixture } from '../conformance/driver-suite.js';
import { BUSYBOX, buildBusyboxLayer } from '../fixtures/busybox-layer.js';
import { call, integrationSkipReason, startPrismd } from './prismd-harness.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const initBinary = join(repo, 'guest/init/prism-init');
const testDockerDir = process.env.PRISM_TEST_DOCKER_DIR ?? '/var/lib/prism-test/docker';
const dockerHost = process.env.DOCKER_HOST ?? `unix://${testDockerDir}/docker.sock`;
const imagesDir = process.env.PRISM_TEST_IMAGES_DIR ?? '/var/lib/prism-test/images';
const BASE_IMAGE = 'prism.local/base:bookworm';
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

async function skipReason(): Promise<string | null> {
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} (busybox-static) is not installed`;
  execFileSync('make', ['-C', join(repo, 'guest/init')], { stdio: 'ignore' });
  const probe = await new DockerDriver({ dockerHost, node: 'probe', initBinary, stateDir: tmpdir() }).probe();
  return probe.usable ? null : `${probe.reason} (start one with scripts/test-dockerd.sh start)`;
}

interface DockerFixture extends DriverFixture {
  driver: DockerDriver;
  node: string;
  stateDir: string;
  open(): DockerDriver;
}

/** A driver on its own node label, so that parallel runs never see or remove each other's tasks. */
async function makeFixture(): Promise<DockerFixture> {
  const root = await mkdtemp(join(tmpdir(), 'prism-docker-test-'));
  const layer = join(root, 'layers/busybox');
  const stateDir = join(root, 'state');
  const node = `test-${randomBytes(4).toString('hex')}`;
  const open = () => new DockerDriver({ dockerHost, node, initBinary, stateDir });
  const driver = open();
  await buildBusyboxLayer(layer);
  const engine = new Docker(dockerConnection(dockerHost));
  return {
    driver, node, stateDir, open,
    layers: [layer],
    reopen: async () => open(),
    async leaks(id) {
      const left = await engine.listContainers({ all: true, filters: { label: [`${SANDBOX_LABEL}=${id}`, `${NODE_LABEL}=${node}`] } });
      const tmp = await readdir(join(stateDir, 'tmp')).catch(() => [] as string[]);
      return [...left.map((c) => `container ${c.Names.join(',')} (${c.State})`), ...tmp.map((f) => `temp file ${f}`)];
    },
    async cleanup() {
      // Also what a failing test left: every container labelled with this node.
      const left = await engine.listContainers({ all: true, filters: { label: [`${NODE_LABEL}=${node}`] } });
      for (const c of left) await engine.getContainer(c.Id).remove({ force: true, v: true }).catch((e: unknown) => console.error(e));
      await rm(root, { recursive: true, force: true });
    },
  };
}

const reason = await skipReason();
if (reason) {
  console.warn(`skipping docker driver integration tests: ${reason}`);
  describe.skip('RuntimeDriver conformance: docker', () => it('needs a Docker engine', () => {}));
} else {
  driverConformanceSuite('docker', makeFixture);

  describe('docker driver', () => {
    let fx: DockerFixture;
    const engine = new Docker(dockerConnection(dockerHost));
    const spec = (over: Partial<TaskSpec> = {}): TaskSpec => ({
      id: `dk-${randomBytes(4).toString('hex')}`, hostname: 'sandbox', layers: fx.layers,
      env: { PATH }, workdir: '/', cpus: 0.5, memoryMb: 128, pidsLimit: 100, diskMb: 1024, maxOpenFiles: 1024, ...over,
    });
    const run = async (d: DockerDriver, h: TaskHandle, script: string) => {
      const p = await d.exec(h, { argv: ['/bin/sh', '-c', script], env: { PATH }, cwd: '/', stdin: false });
      let out = '';
      p.stdout.on('data', (c: Buffer) => (out += c.toString()));
      p.stderr.resume();
      return { ...(await p.result), out };
    };

    beforeAll(async () => {
      fx = await makeFixture();
    });
    afterAll(async () => {
      await fx?.cleanup();
    });

    it('labels its containers, applies the limits and gives them no network', async () => {
      const h = await fx.driver.create(spec());
      try {
        const info = await engine.getContainer(`prism-${h.id}`).inspect();
        expect(info.Config.Labels).toMatchObject({ [SANDBOX_LABEL]: h.id, [NODE_LABEL]: fx.node });
        expect(info.HostConfig).toMatchObject({ NetworkMode: 'none', Memory: 128 << 20, NanoCpus: 5e8, PidsLimit: 100 });
        expect(Object.keys(info.NetworkSettings.Networks ?? {}).filter((n) => n !== 'none')).toEqual([]);
        expect((info.Config as { NetworkDisabled?: boolean }).NetworkDisabled).toBe(true);
      } finally {
        await fx.driver.destroy(h);
      }
    });

    it('finds orphans from a new driver instance and destroys them', async () => {
      const h = await fx.driver.create(spec());
      const d2 = fx.open();
      expect(await d2.listTasks()).toContain(h.id);
      // Another node's driver on the same engine neither sees nor touches it.
      const other = new DockerDriver({ dockerHost, node: `${fx.node}-other`, initBinary, stateDir: fx.stateDir });
      expect(await other.listTasks()).not.toContain(h.id);
      expect(await other.inspect(h)).toBe('gone');
      await other.destroy(h);
      expect(await fx.driver.inspect(h)).toBe('running');
      // The daemon knows only the id of an orphan.
      await d2.destroy({ id: h.id, runtime: 'docker', spec: { id: h.id } as TaskSpec, data: {} });
      expect(await d2.listTasks()).not.toContain(h.id);
      expect(await fx.leaks!(h.id)).toEqual([]);
    });

    it('loads the sandbox image from Prism\'s image store when the engine lacks it', async () => {
      const store = new LocalImageStore({ root: imagesDir, fixupBinary: initBinary });
      const rootfs = await store.rootfs(BASE_IMAGE).catch((e: unknown) => {
        throw new Error(`${BASE_IMAGE} is not in ${imagesDir} (node bin/prismd.js build-base-image --images-dir ${imagesDir})`, { cause: e });
      });
      // Forget the engine's copy from earlier runs, so that this create has to load it.
      for (const img of await engine.listImages({ filters: { reference: [`${IMAGE_REPO}`] } })) {
        await engine.getImage(img.Id).remove({ force: true }).catch(() => undefined);
      }
      const h = await fx.driver.create(spec({ layers: rootfs.layerDirs, memoryMb: 256 }));
      try {
        const r = await run(fx.driver, h, 'cat /etc/debian_version; id -u');
        expect(r.exitCode).toBe(0);
        expect(r.out).toMatch(/^12\.\d+\n0\n$/);
        const tag = (await engine.getContainer(`prism-${h.id}`).inspect()).Config.Image;
        expect(tag.startsWith(`${IMAGE_REPO}:`)).toBe(true);
        expect((await engine.getImage(tag).inspect()).Config.Labels).toMatchObject({ 'prism.managed': 'true' });
      } finally {
        await fx.driver.destroy(h);
      }
      expect(await readdir(join(fx.stateDir, 'tmp')).catch(() => [])).toEqual([]);
    });

    it('runs commands as a numeric user', async () => {
      const h = await fx.driver.create(spec({ user: '65534:65534' }));
      try {
        expect((await run(fx.driver, h, 'id -u; id -g')).out).toBe('65534\n65534\n');
      } finally {
        await fx.driver.destroy(h);
      }
    });

    it('limits the writable layer to diskMb where the engine can: ENOSPC/EDQUOT, diskFull, space comes back', async (ctx) => {
      const limit = (await fx.driver.probe()).details?.diskLimit ?? 'not reported';
      if (!limit.startsWith('enforced')) {
        console.warn(`skipping the docker disk limit test: this engine has no container size limit (${limit}); scripts/test-dockerd.sh starts one that has`);
        ctx.skip();
      }
      const diskMb = 64;
      const h = await fx.driver.create(spec({ diskMb }));
      try {
        expect((await engine.getContainer(`prism-${h.id}`).inspect()).HostConfig.StorageOpt?.size).toMatch(/^\d+M$/);
        // overlay2 on XFS says ENOSPC; a btrfs qgroup says EDQUOT. Either way the limit is what was hit.
        const fill = await run(fx.driver, h, 'dd if=/dev/zero of=/fill bs=1M 2>&1');
        expect(fill.exitCode).not.toBe(0);
        expect(fill.out).toMatch(/No space left on device|Disk quota exceeded/);
        expect(fill.diskFull).toBe(true);
        const written = Number((await run(fx.driver, h, 'wc -c < /fill')).out.trim());
        expect(written).toBeLessThanOrEqual(diskMb << 20);
        expect(written).toBeGreaterThan((diskMb << 20) / 2);
        // Any command while full reports it, not only the one that filled the disk.
        expect(await run(fx.driver, h, 'true')).toMatchObject({ exitCode: 0, diskFull: true });
        const after = await run(fx.driver, h, 'rm /fill && echo ok > /x && cat /x');
        expect(after).toMatchObject({ exitCode: 0, out: 'ok\n', diskFull: false });
        // The relay's room check leaves nothing behind in the task's filesystem.
        expect((await run(fx.driver, h, 'ls -a /.prism')).out.split('\n').filter(Boolean).sort()).toEqual(['.', '..', 'agent.sock', 'init']);
      } finally {
        await fx.driver.destroy(h);
      }
      expect(await fx.leaks!(h.id)).toEqual([]);
    });

    it('says clearly when no engine is reachable, and a create against it leaves nothing behind', async () => {
      const stateDir = join(fx.stateDir, 'unreachable');
      const d = new DockerDriver({ dockerHost: 'unix:///nonexistent/docker.sock', node: fx.node, initBinary, stateDir });
      const probe = await d.probe();
      expect(probe.usable).toBe(false);
      expect(probe.reason).toMatch(/no Docker engine reachable at unix:\/\/\/nonexistent\/docker.sock/);
      const err = await d.create(spec()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PrismError);
      expect((err as PrismError).code).toBe('UNAVAILABLE');
      expect(await readdir(join(stateDir, 'tmp')).catch(() => [])).toEqual([]);
    });
  });

  describe('docker warm pool (warmPool: 1)', () => {
    let fx: DockerFixture;
    let pooled: DockerDriver;
    const engine = new Docker(dockerConnection(dockerHost));
    const spec = (over: Partial<TaskSpec> = {}): TaskSpec => ({
      id: `dk-${randomBytes(4).toString('hex')}`, hostname: 'sandbox', layers: fx.layers,
      env: { PATH }, workdir: '/', cpus: 0.5, memoryMb: 128, pidsLimit: 100, diskMb: 1024, maxOpenFiles: 1024, ...over,
    });
    const sh = async (h: TaskHandle, script: string, env: Record<string, string> = {}) => {
      const p = await pooled.exec(h, { argv: ['/bin/sh', '-c', script], env: { PATH, ...env }, cwd: '/', stdin: false });
      let out = '';
      p.stdout.on('data', (c: Buffer) => (out += c.toString()));
      p.stderr.resume();
      await p.result;
      return out;
    };
    /** Names of this node's pool containers on the engine, claimed or not. */
    const poolContainers = async () => (await engine.listContainers({ all: true, filters: { label: [`${NODE_LABEL}=${fx.node}`, 'prism.pool=true'] } })).map((c) => c.Names[0]!.slice(1)).sort();

    beforeAll(async () => {
      fx = await makeFixture();
      pooled = new DockerDriver({ dockerHost, node: fx.node, initBinary, stateDir: fx.stateDir, warmPool: 1 });
    });
    afterAll(async () => {
      await pooled?.close();
      await fx?.cleanup();
    });

    it('a create of the same shape takes the ready container: its hostname, env and id are the sandbox\'s, across a restart', async () => {
      const first = await pooled.create(spec());
      expect(first.data.boot).toBeUndefined(); // nothing was ready yet
      await pooled.poolSettled();
      const [slot] = await poolContainers();
      expect(slot).toMatch(/^prism-pool-[0-9a-f]{12}$/);
      expect(await pooled.listTasks()).toEqual([first.id]); // a ready container belongs to no sandbox

      const s = spec({ hostname: 'bee' });
      const h = await pooled.create(s);
      expect(h.data).toMatchObject({ boot: 'pool', slot: slot!.slice('prism-'.length) });
      expect(await sh(h, 'hostname; cat /etc/hostname; grep -c pool- /etc/hosts; echo $FOO', { FOO: 'bar' })).toBe('bee\nbee\n0\nbar\n');
      expect((await pooled.listTasks()).sort()).toEqual([first.id, s.id].sort());
      await pooled.stop(h, { timeoutMs: 5000 });
      await pooled.start(h);
      expect(await sh(h, 'hostname; cat /etc/hostname')).toBe('bee\nbee\n');

      await pooled.destroy(h);
      await pooled.destroy(first);
      expect(await fx.leaks!(s.id)).toEqual([]);
      await pooled.poolSettled();
      expect(await poolContainers()).toHaveLength(1); // refilled after the claim
    }, 120_000);

    it('reports a task whose container dies from the engine\'s events, once, and not after unwatch', async () => {
      const a = await pooled.create(spec());
      const b = await pooled.create(spec());
      const ends: string[] = [];
      expect(await pooled.watchExit(a, (why) => ends.push(`a:${why}`))).toBe(true);
      expect(await pooled.watchExit(b, (why) => ends.push(`b:${why}`))).toBe(true);
      pooled.unwatchExit(b);
      // Killed behind the driver's back, as a crash would.
      await engine.getContainer(`prism-${a.id}`).kill();
      await engine.getContainer(`prism-${b.id}`).kill();
      for (let i = 0; i < 100 && ends.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 300));
      expect(ends).toEqual(['a:exited']);
      // A task that is already dead when watched is reported at once.
      const late: string[] = [];
      expect(await pooled.watchExit(b, (why) => late.push(why))).toBe(true);
      expect(late).toEqual(['exited']);
      await pooled.destroy(a);
      await pooled.destroy(b);
    }, 120_000);

    it('another shape is made from scratch; a crashed driver\'s ready container is an orphan to the next; close removes the pool', async () => {
      const other = await pooled.create(spec({ memoryMb: 96 }));
      expect(other.data.boot).toBeUndefined();
      await pooled.destroy(other);
      await pooled.poolSettled();
      const before = await poolContainers();
      expect(before.length).toBeGreaterThan(0);
      // A second driver on the same node (prismd after a crash) holds none of them: it lists them to be removed.
      const next = fx.open();
      const listed = await next.listTasks();
      for (const c of before) expect(listed).toContain(c.slice('prism-'.length));
      await pooled.close();
      expect(await poolContainers()).toEqual([]);
    }, 120_000);
  });

  describe.skipIf(!!integrationSkipReason())('prismd with the docker runtime', () => {
    it('runs a sandbox that asks for docker, while auto stays on oci, and deletes its container', async () => {
      const d = await startPrismd({ extraArgs: ['--docker-host', dockerHost] });
      const engine = new Docker(dockerConnection(dockerHost));
      try {
        const nodes = (await call(d.url, 'GET', '/nodes')).body.nodes;
        const node = (await call(d.url, 'GET', `/nodes/${nodes[0].id}`)).body;
        expect(node.runtimes).toContain('docker');
        expect(node.defaultRuntime).not.toBe('docker');
        const c = await call(d.url, 'POST', '/sandboxes', { runtime: 'docker' });
        expect(c.status, JSON.stringify(c.body)).toBe(201);
        expect(c.body).toMatchObject({ status: 'running', runtime: 'docker' });
        const r = await call(d.url, 'POST', `/sandboxes/${c.body.id}/exec`, { cmd: ['sh', '-c', 'echo hi; exit 4'] });
        expect(r.body).toMatchObject({ exitCode: 4, stdout: 'hi\n', stderr: '', oomKilled: false });
        const labelled = await engine.listContainers({ all: true, filters: { label: [`${SANDBOX_LABEL}=${c.body.id}`] } });
        expect(labelled).toHaveLength(1);
        expect((await call(d.url, 'DELETE', `/sandboxes/${c.body.id}`)).status).toBeLessThan(300);
        const deadline = Date.now() + 20_000;
        while ((await engine.listContainers({ all: true, filters: { label: [`${SANDBOX_LABEL}=${c.body.id}`] } })).length > 0) {
          if (Date.now() > deadline) throw new Error('the container outlived its sandbox');
          await new Promise((res) => setTimeout(res, 100));
        }
      } finally {
        await d.dispose();
      }
    });
  });
}
