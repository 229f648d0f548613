import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe } from 'vitest';
import { DEFAULT_GUEST_DIR } from '../../src/daemon/config.js';
import { DockerDriver } from '../../src/runtime/docker/docker-driver.js';
import { Prism, type RuntimeName, type SandboxHandle } from '../../src/sdk/index.js';
import { filesSuite } from './files-suite.js';
import { REPO_ROOT, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

/**
 * The files API suite (files-suite.ts) on the microvm and docker runtimes: the same helper, reached
 * through the guest agent (mounted from the initramfs) and through `docker exec`. Smaller files than
 * on oci: a microVM under TCG is slow, and the transport is what differs, not the helper.
 */

const guestDir = process.env.PRISM_GUEST_DIR ?? DEFAULT_GUEST_DIR;
const dockerHost = process.env.DOCKER_HOST ?? `unix://${process.env.PRISM_TEST_DOCKER_DIR ?? '/var/lib/prism-test/docker'}/docker.sock`;

async function dockerSkip(): Promise<string | undefined> {
  const probe = await new DockerDriver({ dockerHost, node: 'probe', initBinary: join(REPO_ROOT, 'guest/init/prism-init'), stateDir: '/tmp' }).probe();
  return probe.usable ? undefined : `docker: ${probe.reason}`;
}

const runtimes: { runtime: RuntimeName; skip: string | undefined; args: string[]; create: object }[] = [
  {
    runtime: 'microvm',
    skip: integrationSkipReason() ?? (existsSync(join(guestDir, 'initramfs.cpio')) ? undefined : `no guest files in ${guestDir} (scripts/prepare-guest.sh)`),
    args: [],
    create: { memoryMb: 256 },
  },
  { runtime: 'docker', skip: integrationSkipReason() ?? (await dockerSkip()), args: ['--docker-host', dockerHost], create: {} },
];

for (const rt of runtimes) {
  if (rt.skip) console.warn(`skipping files API tests on ${rt.runtime}: ${rt.skip}`);
  describe.skipIf(!!rt.skip)(`files API on the ${rt.runtime} runtime`, () => {
    let d: Prismd;
    let a: SandboxHandle;
    let b: SandboxHandle;
    beforeAll(async () => {
      d = await startPrismd({ extraArgs: rt.args });
      const prism = new Prism({ url: d.url, token: d.token });
      a = await prism.sandboxes.create({ runtime: rt.runtime, ...rt.create });
      b = await prism.sandboxes.create({ runtime: rt.runtime, ...rt.create });
    }, 240_000);
    afterAll(async () => {
      await d?.dispose();
    }, 120_000);

    filesSuite({ sandboxes: () => ({ a, b }), roundTripBytes: 8 << 20, timeoutMs: 120_000 });
  });
}
