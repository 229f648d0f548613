/**
 * Where the docker runtime gets a sandbox's image (src/service/task-image.ts), against a real dockerd
 * and the local registries: an image the engine built is used as it is, by its engine tag or id; a
 * reference neither the engine nor Prism's store has is pulled by the engine; one that exists nowhere
 * is NOT_FOUND and leaves nothing; when the engine and Prism's store both have a tag, the docker runtime
 * runs the engine's and the oci runtime the store's. There is no Docker Hub here: the engine's base
 * image is `docker import`ed from static busybox, and the rest `docker build` on top of it.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrismError } from '../../src/core/errors.js';
import type { TaskSpec } from '../../src/runtime/driver.js';
import { DockerDriver, NODE_LABEL } from '../../src/runtime/docker/docker-driver.js';
import { dockerConnection } from '../../src/runtime/docker/docker-host.js';
import { BUSYBOX, buildBusyboxLayer } from '../fixtures/busybox-layer.js';
import { ensureTestRegistries, REGISTRY_BASIC, REGISTRY_PLAIN, TEST_REGISTRY_USER } from '../fixtures/test-images.js';
import { authHeaders, call, integrationSkipReason, REPO_ROOT, startPrismd, type Prismd } from './prismd-harness.js';

const dockerHost = process.env.DOCKER_HOST ?? `unix://${process.env.PRISM_TEST_DOCKER_DIR ?? '/var/lib/prism-test/docker'}/docker.sock`;
const initBinary = join(REPO_ROOT, 'guest/init/prism-init');
const BASE = 'prism-test/busybox:base';
const BUILT = 'prism-test/laptop:dev';
/** Only in the registry: the test removes it from the engine first, and Prism's store is the test's own. */
const REGISTRY_ONLY = `${REGISTRY_PLAIN}/prism-test/engine-pull:1`;
const NOWHERE = `${REGISTRY_PLAIN}/prism-test/nosuch:1`;
const BOTH = 'prism-test/laptop:both';
const NAMED_USER = 'prism-test/laptop:named-user';

async function skipReason(): Promise<string | undefined> {
  const harness = integrationSkipReason();
  if (harness) return harness;
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} (busybox-static) is not installed`;
  try {
    execFileSync('docker', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'the docker CLI is not installed (docker.io)';
  }
  const probe = await new DockerDriver({ dockerHost, node: 'probe', initBinary, stateDir: tmpdir() }).probe();
  return probe.usable ? undefined : `${probe.reason} (start one with scripts/test-dockerd.sh start)`;
}

/** The docker CLI against the test engine; the classic builder, which needs no buildx plugin. */
function docker(args: string[], input?: Buffer): string {
  return execFileSync('docker', args, { env: { ...process.env, DOCKER_HOST: dockerHost, DOCKER_BUILDKIT: '0' }, input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

/** `docker build -t tag` of a context holding `dockerfile` and msg.txt (`msg`). */
async function build(tag: string, dockerfile: string, msg: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'prism-docker-build-'));
  try {
    await writeFile(join(dir, 'Dockerfile'), dockerfile);
    await writeFile(join(dir, 'msg.txt'), msg);
    docker(['build', '-q', '-t', tag, dir]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const reason = await skipReason();
if (reason) console.warn(`skipping the docker runtime's image tests: ${reason}`);

describe.skipIf(!!reason)('the docker runtime\'s images (real dockerd, local registry)', () => {
  const engine = new Docker(dockerConnection(dockerHost));
  let root: string;
  let d: Prismd;
  let nodeId: string;

  const sh = async (id: string, command: string) => (await call(d.url, 'POST', `/sandboxes/${id}/exec`, { command, timeoutSec: 60 })).body;
  /** This node's containers: [] when nothing is left. */
  const containers = async () => (await engine.listContainers({ all: true, filters: { label: [`${NODE_LABEL}=${nodeId}`] } })).map((c) => c.Names.join(','));

  beforeAll(async () => {
    await ensureTestRegistries();
    root = await mkdtemp(join(tmpdir(), 'prism-docker-images-'));
    await buildBusyboxLayer(join(root, 'rootfs'));
    docker(['import', '-', BASE], execFileSync('tar', ['-C', join(root, 'rootfs'), '-c', '.'], { maxBuffer: 64 << 20 }));
    await build(BUILT, `FROM ${BASE}\nENV GREETING=hello-from-the-engine\nWORKDIR /app\nCOPY msg.txt /app/msg.txt\nUSER 1000:1000\n`, 'built by docker\n');
    // A private image store: what Prism's store has is exactly what these tests put there.
    d = await startPrismd({ imagesDir: join(root, 'images'), extraArgs: ['--docker-host', dockerHost] });
    nodeId = (await call(d.url, 'GET', '/nodes')).body.nodes[0].id;
  });
  afterAll(async () => {
    await d?.dispose();
    // What this run made (the engine's images are used as they are: the driver adds none).
    for (const tag of [REGISTRY_ONLY, BOTH, NAMED_USER, BUILT, BASE]) {
      try {
        docker(['rmi', tag]);
      } catch {
        /* not there, or shared with a run still going */
      }
    }
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('runs a sandbox from an image the engine built, by its engine tag, with the image\'s Env, WorkingDir and User', async () => {
    const id = (await engine.getImage(BUILT).inspect()).Id;
    const c = await call(d.url, 'POST', '/sandboxes', { runtime: 'docker', image: BUILT, env: { EXTRA: 'x' } });
    expect(c.status, JSON.stringify(c.body)).toBe(201);
    expect(c.body).toMatchObject({ status: 'running', image: BUILT, imageDigest: id, workdir: '/app', user: '1000:1000' });
    expect(await sh(c.body.id, 'echo $GREETING $EXTRA; pwd; id -u; cat msg.txt')).toMatchObject({
      exitCode: 0, stdout: 'hello-from-the-engine x\n/app\n1000\nbuilt by docker\n',
    });
    // The container runs the engine's image itself, with prism-init in its writable layer; the image is untouched.
    expect((await engine.getContainer(`prism-${c.body.id}`).inspect()).Image).toBe(id);
    expect((await engine.getImage(BUILT).inspect()).Id).toBe(id);
    // prism-init lives in the container's writable layer, so it is there again after stop/start.
    expect((await call(d.url, 'POST', `/sandboxes/${c.body.id}/stop`)).status).toBe(200);
    expect((await call(d.url, 'POST', `/sandboxes/${c.body.id}/start`)).status).toBe(200);
    expect(await sh(c.body.id, 'cat msg.txt')).toMatchObject({ exitCode: 0, stdout: 'built by docker\n' });
    // Prism's store never saw it: `image ls` lists the store only.
    expect((await call(d.url, 'GET', '/images')).body.images).toEqual([]);
    // By a short image id too, as `docker run` takes it.
    const byId = await call(d.url, 'POST', '/sandboxes', { runtime: 'docker', image: id.slice('sha256:'.length, 'sha256:'.length + 12) });
    expect(byId.status, JSON.stringify(byId.body)).toBe(201);
    expect((await engine.getContainer(`prism-${byId.body.id}`).inspect()).Image).toBe(id);
    expect(await sh(byId.body.id, 'cat /app/msg.txt')).toMatchObject({ exitCode: 0, stdout: 'built by docker\n' });
    for (const sb of [c.body.id, byId.body.id]) expect((await call(d.url, 'DELETE', `/sandboxes/${sb}`)).status).toBe(204);
    expect(await containers()).toEqual([]);
  });

  it('runs commands as a user the engine image names (USER app), resolved in its own /etc/passwd', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'prism-docker-build-'));
    try {
      await writeFile(join(dir, 'passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234:app:/home/app:/bin/sh\n');
      await writeFile(join(dir, 'group'), 'root:x:0:\napp:x:1234:\nextra:x:2000:app\n');
      await writeFile(join(dir, 'Dockerfile'), `FROM ${BASE}\nCOPY passwd group /etc/\nUSER app\n`);
      docker(['build', '-q', '-t', NAMED_USER, dir]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const c = await call(d.url, 'POST', '/sandboxes', { runtime: 'docker', image: NAMED_USER });
    expect(c.status, JSON.stringify(c.body)).toBe(201);
    expect(c.body.user).toBe('app');
    expect(await sh(c.body.id, 'id -u; id -g; id -G')).toMatchObject({ exitCode: 0, stdout: '1234\n1234\n1234 2000\n' });
    expect((await call(d.url, 'DELETE', `/sandboxes/${c.body.id}`)).status).toBe(204);
    // A name the image does not know fails the create, and its container goes with it.
    const bad = await call(d.url, 'POST', '/sandboxes', { runtime: 'docker', image: NAMED_USER, user: 'nobody-here' });
    expect(bad.status, JSON.stringify(bad.body)).toBe(400);
    expect(bad.body.error.message).toMatch(/user 'nobody-here' is not in the image's \/etc\/passwd/);
    expect(await containers()).toEqual([]);
  });

  it('has the engine pull a reference that only its registry has', async () => {
    await build(REGISTRY_ONLY, `FROM ${BASE}\nENV FROM_REGISTRY=yes\nCOPY msg.txt /msg.txt\n`, `pushed ${randomBytes(4).toString('hex')}\n`);
    docker(['push', REGISTRY_ONLY]);
    const pushed = (await engine.getImage(REGISTRY_ONLY).inspect()).Id;
    docker(['rmi', REGISTRY_ONLY]);
    const c = await call(d.url, 'POST', '/sandboxes', { runtime: 'docker', image: REGISTRY_ONLY });
    expect(c.status, JSON.stringify(c.body)).toBe(201);
    expect(c.body.imageDigest).toBe(pushed);
    expect(await sh(c.body.id, 'echo $FROM_REGISTRY; cat /msg.txt')).toMatchObject({ exitCode: 0, stdout: expect.stringMatching(/^yes\npushed [0-9a-f]{8}\n$/) });
    expect((await engine.getImage(REGISTRY_ONLY).inspect()).Id).toBe(pushed);
    expect((await call(d.url, 'GET', `/images/${REGISTRY_ONLY}`)).status).toBe(404);
    expect((await call(d.url, 'DELETE', `/sandboxes/${c.body.id}`)).status).toBe(204);
  });

  it('answers NOT_FOUND naming a reference that exists nowhere, and leaves no sandbox, container or image', async () => {
    const c = await call(d.url, 'POST', '/sandboxes', { runtime: 'docker', name: 'ghost', image: NOWHERE });
    expect(c.status, JSON.stringify(c.body)).toBe(404);
    expect(c.body.error.code).toBe('NOT_FOUND');
    expect(c.body.error.message).toContain(`'${NOWHERE}'`);
    expect(c.body.error.message).toMatch(/manifest unknown/);
    expect((await call(d.url, 'GET', '/sandboxes')).body.sandboxes).toEqual([]);
    expect((await call(d.url, 'GET', '/sandboxes/ghost')).status).toBe(404);
    expect(await containers()).toEqual([]);
    expect(await engine.listImages({ filters: { reference: [NOWHERE] } })).toEqual([]);
  });

  it('when the engine and Prism\'s store both have a tag, docker runs the engine\'s and oci the store\'s', async () => {
    docker(['tag', BUILT, BOTH]);
    // Prism's store gets the plain base image under the same name.
    const archive = join(root, 'both.tar');
    docker(['tag', BASE, `prism-test/save:both`]);
    docker(['save', '-o', archive, 'prism-test/save:both']);
    docker(['rmi', 'prism-test/save:both']);
    const imported = await fetch(`${d.url}/api/v1/images/import?ref=${encodeURIComponent(BOTH)}`, {
      method: 'POST', headers: { ...authHeaders(d.url), 'content-type': 'application/x-tar' }, body: await readFile(archive),
    });
    expect(imported.status, await imported.clone().text()).toBe(200);
    const storeDigest = ((await imported.json()) as { images: { digest: string }[] }).images[0]!.digest;
    const fromDocker = (await call(d.url, 'POST', '/sandboxes', { runtime: 'docker', image: BOTH })).body;
    const fromOci = (await call(d.url, 'POST', '/sandboxes', { runtime: 'oci', image: BOTH })).body;
    expect(fromDocker.status, JSON.stringify(fromDocker)).toBe('running');
    expect(fromOci.status, JSON.stringify(fromOci)).toBe('running');
    expect((await sh(fromDocker.id, 'cat /app/msg.txt')).stdout).toBe('built by docker\n');
    expect((await sh(fromOci.id, 'test -e /app/msg.txt || echo absent')).stdout).toBe('absent\n');
    // A digest names content, so it runs the store's image on docker too (the engine lacks that manifest).
    const pinned = (await call(d.url, 'POST', '/sandboxes', { runtime: 'docker', image: `${BOTH.split(':')[0]}@${storeDigest}` })).body;
    expect(pinned.status, JSON.stringify(pinned)).toBe('running');
    expect((await sh(pinned.id, 'test -e /app/msg.txt || echo absent')).stdout).toBe('absent\n');
    for (const sb of [fromDocker.id, fromOci.id, pinned.id]) await call(d.url, 'DELETE', `/sandboxes/${sb}`);
    expect((await call(d.url, 'DELETE', `/images/${BOTH}`)).status).toBe(204);
  });

  describe('the driver', () => {
    const node = `test-${randomBytes(4).toString('hex')}`;
    let driver: DockerDriver;
    beforeAll(() => {
      driver = new DockerDriver({ dockerHost, node, initBinary, stateDir: join(root, 'driver') });
    });

    it('finds an engine image with its config, and nothing for a name the engine lacks', async () => {
      expect(await driver.findImage(BUILT)).toMatchObject({ env: expect.arrayContaining(['GREETING=hello-from-the-engine']), workingDir: '/app', user: '1000:1000' });
      expect(await driver.findImage(NOWHERE)).toBeUndefined();
    });

    it('translates the engine\'s pull failures: credentials missing, registry unreachable, an id', async () => {
      const codeOf = (ref: string) => driver.pullImage(ref).then(() => 'pulled', (e: unknown) => (e instanceof PrismError ? e.code : String(e)));
      expect(await codeOf(`${REGISTRY_BASIC}/prism-test/layers:1`)).toBe('UNAUTHENTICATED');
      expect(await codeOf('127.0.0.1:1/prism-test/nothing:1')).toBe('UNAVAILABLE');
      expect(await codeOf(NOWHERE)).toBe('NOT_FOUND');
      expect(await codeOf(`sha256:${'0'.repeat(64)}`)).toBe('NOT_FOUND');
    });

    it('sends Prism\'s credentials for the registry (prismd --registry-auth) with the engine\'s pull', async () => {
      // On the registry that wants Basic credentials: pushed there by skopeo from the engine, then gone from the engine.
      const ref = `${REGISTRY_BASIC}/prism-test/engine-pull:1`;
      const creds = `${TEST_REGISTRY_USER.username}:${TEST_REGISTRY_USER.password}`;
      execFileSync('skopeo', ['copy', '--quiet', '--insecure-policy', '--src-daemon-host', dockerHost, '--dest-tls-verify=false', '--dest-creds', creds, `docker-daemon:${BUILT}`, `docker://${ref}`]);
      const withAuth = new DockerDriver({ dockerHost, node, initBinary, stateDir: join(root, 'driver'), registryAuths: { [REGISTRY_BASIC]: TEST_REGISTRY_USER } });
      try {
        const pulled = await withAuth.pullImage(ref);
        expect(pulled.id).toBe((await engine.getImage(BUILT).inspect()).Id);
        expect((await engine.getImage(ref).inspect()).Id).toBe(pulled.id);
      } finally {
        await engine.getImage(ref).remove().catch(() => undefined);
      }
    });

    it('creates a task from an engine image id and runs commands in it as the spec says', async () => {
      const image = (await driver.findImage(BUILT))!;
      const spec: TaskSpec = {
        id: `dki-${randomBytes(4).toString('hex')}`, hostname: 'sandbox', layers: [], image: image.id,
        env: { PATH: '/bin' }, workdir: '/app', cpus: 0.5, memoryMb: 128, pidsLimit: 100, diskMb: 256, maxOpenFiles: 1024, user: '1000:1000',
      };
      const h = await driver.create(spec);
      try {
        const p = await driver.exec(h, { argv: ['/bin/sh', '-c', 'id -u; pwd; ls /.prism'], env: spec.env, cwd: '/app', stdin: false });
        let out = '';
        p.stdout.on('data', (b: Buffer) => (out += b.toString()));
        p.stderr.resume();
        expect(await p.result).toMatchObject({ exitCode: 0 });
        expect(out).toBe('1000\n/app\nagent.sock\ninit\n');
      } finally {
        await driver.destroy(h);
      }
      expect(await engine.listContainers({ all: true, filters: { label: [`${NODE_LABEL}=${node}`] } })).toEqual([]);
    });
  });
});
