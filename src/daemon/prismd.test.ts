import { describe, expect, it } from 'vitest';
import type { Command } from 'commander';
import { doctorFlags, prismdProgram } from './prismd.js';

describe('prismd command line', () => {
  it('builds (no flag defined twice) and documents every flag group in --help', () => {
    const program = prismdProgram();
    const help = program.helpInformation();
    for (const flag of ['--store', '--tls', '--auth', '--metrics-auth', '--default-user', '--warm-pool', '--no-microvm-snapshots', '--docker-host', '--vmm', '--firecracker-bin', '--sandbox-cidr', '--label']) {
      expect(help).toContain(flag);
    }
    const names = program.options.map((o) => o.long);
    expect(new Set(names).size).toBe(names.length);
  });

  it('gives `prismd doctor` the same flags as prismd, before or after `doctor`: typed beats environment, after beats before', async () => {
    const flagsOf = async (argv: string[], env: Record<string, string> = {}) => {
      const saved = { ...process.env };
      Object.assign(process.env, env);
      try {
        const program = prismdProgram();
        let got: ReturnType<typeof doctorFlags> | undefined;
        const doctor = program.commands.find((c) => c.name() === 'doctor')!;
        doctor.action((_o: unknown, cmd: Command) => {
          got = doctorFlags(cmd);
        });
        await program.parseAsync(['node', 'prismd', ...argv]);
        return got!;
      } finally {
        process.env = saved;
      }
    };
    expect(await flagsOf(['doctor', '--runtime', 'oci', '--data-dir', '/d', '--json'])).toMatchObject({ runtime: 'oci', dataDir: '/d', json: true });
    expect(await flagsOf(['--runtime', 'docker', '--api', '127.0.0.1:9', 'doctor'])).toMatchObject({ runtime: 'docker', api: '127.0.0.1:9' });
    expect(await flagsOf(['--runtime', 'docker', 'doctor', '--runtime', 'oci'])).toMatchObject({ runtime: 'oci' });
    expect(await flagsOf(['doctor', '--runtime', 'oci'], { PRISM_RUNTIME: 'docker' })).toMatchObject({ runtime: 'oci' });
    expect(await flagsOf(['--runtime', 'oci', 'doctor'], { PRISM_RUNTIME: 'docker' })).toMatchObject({ runtime: 'oci' });
    expect(await flagsOf(['doctor'], { PRISM_RUNTIME: 'microvm' })).toMatchObject({ runtime: 'microvm' });
  });
});
