import { defineConfig } from 'vitest/config';

/**
 * The suite run inside the host VM (test/hostvm/inside.sh): the systemd + cgroup v2 checks against the
 * prismd service the quick start left (limits, OOM, pids, restarts), the oci driver conformance suite,
 * and the network policies a stock kernel could break. Every prismd start costs a minute under TCG,
 * so the checks reuse the service where they can.
 */
export default defineConfig({
  test: {
    include: [
      'test/hostvm/**/*.vmtest.ts',
      'test/integration/oci-driver.test.ts',
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
