import { defineConfig } from 'vitest/config';
import HostVmFirst from './test/sequencer.js';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts', 'console/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 300_000,
    // Integration tests start real daemons and containers. Three on 2 cores: one worker holds the host
    // VM file for most of the run (its CPU is QEMU's), the other two share the rest.
    maxWorkers: 3,
    globalSetup: ['test/global-setup.ts'],
    // Each file's duration, kept after a run (the suite should stay under 20 minutes on CI: find the long ones here).
    reporters: ['default', 'json'],
    outputFile: { json: '.test-output/vitest-report.json' },
    // The host VM run (most of the suite's length, in one worker) starts first.
    sequence: { sequencer: HostVmFirst },
  },
});
