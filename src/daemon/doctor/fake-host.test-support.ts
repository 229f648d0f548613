import { resolveConfig, type DaemonFlags } from '../config.js';
import type { DoctorContext } from './check.js';
import type { CommandResult, FileInfo, HostSystem } from './host-system.js';

/**
 * A host for the doctor's unit tests: files, stats and command answers from tables; every command
 * run is recorded. Anything not in a table is absent (file missing, command not installed).
 */
export interface FakeHost extends HostSystem {
  files: Record<string, string>;
  stats: Record<string, FileInfo>;
  /** Keyed by `cmd arg1 arg2...`. */
  commands: Record<string, Partial<CommandResult>>;
  ran: string[];
}

export function fakeHost(o: Partial<Pick<FakeHost, 'files' | 'stats' | 'commands'>> & Partial<HostSystem> = {}): FakeHost {
  const files = o.files ?? {};
  const stats = o.stats ?? {};
  const commands = o.commands ?? {};
  const ran: string[] = [];
  return {
    uid: () => 0,
    nodeVersion: '20.19.0',
    readFile: async (p) => files[p],
    stat: async (p) => stats[p] ?? (p in files ? { kind: 'file', mtimeMs: 0 } : undefined),
    writable: async () => true,
    openError: async () => 'ENOENT',
    async run(cmd, args) {
      const key = [cmd, ...args].join(' ');
      ran.push(key);
      const r = commands[key];
      return r ? { code: 0, stdout: '', stderr: '', ...r } : { code: null, stdout: '', stderr: '', error: 'ENOENT' };
    },
    freeBytes: async () => 100 * 1024 ** 3,
    tryListen: async () => 'free',
    health: async () => undefined,
    processAlive: () => false,
    ...o,
    files, stats, commands, ran,
  };
}

export function fakeContext(o: { flags?: DaemonFlags; sys?: HostSystem } & Partial<Omit<DoctorContext, 'cfg' | 'sys'>> = {}): DoctorContext {
  const { flags, sys, ...rest } = o;
  return {
    cfg: resolveConfig({ dataDir: '/var/lib/prism', sandboxDns: '10.0.0.53', ...flags }, {}),
    env: {},
    sys: sys ?? fakeHost(),
    cgroups: { version: 1, systemd: false, controllers: ['blkio', 'cpu', 'cpuacct', 'cpuset', 'memory', 'pids'] },
    runtimes: [],
    accelerator: async () => ({ accel: 'tcg', reason: 'kvm unusable: /dev/kvm: ENOENT' }),
    packageRoot: '/opt/prism',
    ...rest,
  };
}
