import { defineConfig } from 'vitest/config';

/**
 * The suite run inside the host VM (test/hostvm/inside.sh): the systemd + cgroup v2 checks, and the
 * existing tests that exercise cgroups, limits and networks on that kind of host.
 */
export default defineConfig({
  test: {
    include: [
      'test/hostvm/**/*.vmtest.ts',
      'test/integration/oci-driver.test.ts',
      'test/integration/sandbox-limits.test.ts',
      'test/integration/network-policy.test.ts',
    ],
    testTimeout: 300_000,
    hookTimeout: 600_000,
    maxWorkers: 1,
    fileParallelism: false,
    // The service-side checks first: they read the state the quick start left.
    sequence: { shuffle: false },
    globalSetup: ['test/global-setup.ts'],
  },
});
