import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT, TEST_IMAGES_DIR, integrationSkipReason } from './integration/prismd-harness.js';

/**
 * Once per test run: make sure the default base image is in the shared test image store, so each
 * test daemon starts sandboxes without rebuilding it. (.ci/run builds it before `npm test`; this covers
 * a developer running `npm test` directly.)
 */
export default async function setup(): Promise<void> {
  if (integrationSkipReason()) return;
  execFileSync(process.execPath, [join(REPO_ROOT, 'bin', 'prismd.js'), 'build-base-image', '--images-dir', TEST_IMAGES_DIR], {
    stdio: 'inherit',
  });
}
