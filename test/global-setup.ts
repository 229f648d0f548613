import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { DEFAULT_GUEST_DIR } from '../src/daemon/config.js';
import { MicrovmDriver } from '../src/runtime/microvm/microvm-driver.js';
import { join } from 'node:path';
import { REPO_ROOT, TEST_IMAGES_DIR, dropStalePoolClaims, integrationSkipReason } from './integration/prismd-harness.js';

/**
 * Once per test run: make sure the default base image is in the shared test image store, so each
 * test daemon starts sandboxes without rebuilding it, and at the end drop what is left of test daemons'
 * address pool claims (prismd-harness.ts). (.ci/run builds it before `npm test`; this covers
 * a developer running `npm test` directly.)
 */
export default async function setup(): Promise<(() => void) | undefined> {
  if (integrationSkipReason()) return undefined;
  await warmAcceleratorVerdict();
  execFileSync(process.execPath, [join(REPO_ROOT, 'bin', 'prismd.js'), 'build-base-image', '--images-dir', TEST_IMAGES_DIR], {
    stdio: 'inherit',
  });
  // After the run: test daemons' address pool claims whose daemons are gone.
  return dropStalePoolClaims;
}

/**
 * The microvm driver probes once per host whether KVM really boots a guest (here it does not) and
 * caches the verdict in the guest dir; doing it here keeps test daemons from probing in parallel.
 */
async function warmAcceleratorVerdict(): Promise<void> {
  const guestDir = process.env.PRISM_GUEST_DIR ?? DEFAULT_GUEST_DIR;
  if (!existsSync(join(guestDir, 'initramfs.cpio'))) return;
  const dir = mkdtempSync(join(tmpdir(), 'prism-probe-'));
  try {
    const driver = new MicrovmDriver({ stateDir: dir, guestDir, imageDiskCache: dir, accelCacheDir: guestDir });
    const probe = await driver.probe();
    console.log(`microvm runtime: ${probe.usable ? JSON.stringify(probe.details) : probe.reason}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
