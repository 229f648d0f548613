import { describe, expect, it } from 'vitest';
import { prismdProgram } from './prismd.js';

describe('prismd command line', () => {
  it('builds (no flag defined twice) and documents every flag group in --help', () => {
    const program = prismdProgram();
    const help = program.helpInformation();
    for (const flag of ['--store', '--tls', '--auth', '--default-user', '--warm-pool', '--no-microvm-snapshots', '--docker-host', '--vmm', '--firecracker-bin', '--sandbox-cidr', '--label']) {
      expect(help).toContain(flag);
    }
    const names = program.options.map((o) => o.long);
    expect(new Set(names).size).toBe(names.length);
  });
});
