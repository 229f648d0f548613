import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AgentConnection } from './agent-connection.js';
import { bootVm, taskPaths, type VmShape } from './vm-boot.js';
import type { Vmm, VmmStart } from './vmm.js';

/** A VMM that records how it was started and whose guest answers `booted` at once. */
function recordingVmm(starts: VmmStart[]): Vmm {
  return {
    name: 'qemu',
    start: async (o: VmmStart) => {
      starts.push(o);
      return { pid: 1, exited: new Promise<string>(() => undefined) };
    },
  } as unknown as Vmm;
}

const conn = { connect: async () => 'booted' } as unknown as AgentConnection;
const shape = {} as VmShape;

describe('bootVm', () => {
  let dir: string;
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'prism-vm-boot-')); });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('hands the caller\'s restore deadline to the VMM with a restore, and none with a boot', async () => {
    const starts: VmmStart[] = [];
    const vmm = recordingVmm(starts);
    const paths = taskPaths(dir, 't1');
    await bootVm({ shape, paths, vmm, conn, bootTimeoutMs: 1_000, incoming: join(dir, 'state'), restoreTimeoutMs: 30_000 });
    await bootVm({ shape, paths, vmm, conn, bootTimeoutMs: 1_000, restoreTimeoutMs: 30_000 });
    expect(starts.map((s) => s.restoreTimeoutMs)).toEqual([30_000, undefined]);
    expect(starts.map((s) => s.incoming)).toEqual([join(dir, 'state'), undefined]);
  });
});
