import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CgroupsV2 } from './cgroups-v2.js';

/** A directory tree shaped like cgroup2 files (no kernel behind it: only what this class writes and reads). */
let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'cgv2-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('CgroupsV2 under systemd', () => {
  const oci = () => new CgroupsV2('prism', root, 'systemd');
  const vm = () => new CgroupsV2('prism-vm', root, 'systemd');

  it('names each task a scope in prism.slice (VMs in prism-vm.slice) and asks runc for the systemd driver', () => {
    expect(oci().runcPath('sb1')).toBe('prism.slice:prism:sb1');
    expect(oci().runcFlags()).toEqual(['--systemd-cgroup']);
    expect(oci().dirs('sb1')).toEqual([join(root, 'prism.slice', 'prism-sb1.scope')]);
    expect(vm().dirs('sb1')).toEqual([join(root, 'prism.slice', 'prism-vm.slice', 'prism-vm-sb1.scope')]);
  });

  it('starts a process inside its scope with its limits through systemd-run, which execs it', () => {
    expect(vm().launchCommand('sb1', { memoryBytes: 1024, pids: 64 }, ['qemu', '-m', '1'])).toEqual([
      'systemd-run', '--scope', '--quiet', '--collect', '--unit=prism-vm-sb1.scope', '--slice=prism-vm.slice',
      '--property=MemoryMax=1024', '--property=TasksMax=64', '--', 'qemu', '-m', '1',
    ]);
  });

  it('enter only verifies: a process outside its scope is FAILED_PRECONDITION', async () => {
    await expect(vm().enter('sb1', process.pid, { memoryBytes: 1, pids: 1 })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
  });

  it('lists the tasks of its own kind only', async () => {
    await mkdir(join(root, 'prism.slice', 'prism-vm.slice', 'prism-vm-b.scope'), { recursive: true });
    await mkdir(join(root, 'prism.slice', 'prism-a.scope'), { recursive: true });
    expect(await oci().list()).toEqual(['a']);
    expect(await vm().list()).toEqual(['b']);
  });

  it('reads usage from memory.current, memory.max, memory.stat, cpu.stat and pids.current; NOT_FOUND without a cgroup', async () => {
    const dir = join(root, 'prism.slice', 'prism-a.scope');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'memory.current'), '4096\n');
    await writeFile(join(dir, 'memory.max'), 'max\n');
    await writeFile(join(dir, 'memory.stat'), 'anon 2048\nfile 1024\nkernel 0\n');
    await writeFile(join(dir, 'cpu.stat'), 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n');
    await writeFile(join(dir, 'pids.current'), '3\n');
    await writeFile(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n');
    expect(await oci().usage('a')).toEqual({ memoryBytes: 4096, memoryLimitBytes: 0, memoryCacheBytes: 1024, cpuUsageNs: 1_500_000, pids: 3 });
    expect(await oci().oomKills('a')).toBe(1);
    expect(await oci().oomKills('missing')).toBe(-1);
    await expect(oci().usage('missing')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('CgroupsV2 without systemd (cgroupfs)', () => {
  it('enables memory, cpu and pids on the way down, writes the limits and moves the process in', async () => {
    await writeFile(join(root, 'cgroup.subtree_control'), 'memory\n');
    const cg = new CgroupsV2('prism-vm', root, 'cgroupfs');
    // The fake tree has no kernel to create the child's files: make the kind's control file first.
    await mkdir(join(root, 'prism-vm'));
    await writeFile(join(root, 'prism-vm', 'cgroup.subtree_control'), '');
    await cg.enter('t1', 4242, { memoryBytes: 1 << 20, pids: 32 });
    expect(await readFile(join(root, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu +pids');
    expect(await readFile(join(root, 'prism-vm', 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu +pids');
    const dir = join(root, 'prism-vm', 't1');
    expect(await readFile(join(dir, 'memory.max'), 'utf8')).toBe(String(1 << 20));
    expect(await readFile(join(dir, 'pids.max'), 'utf8')).toBe('32');
    expect(await readFile(join(dir, 'cgroup.procs'), 'utf8')).toBe('4242');
    expect(cg.runcPath('t1')).toBe('/prism-vm/t1');
    expect(cg.runcFlags()).toEqual([]);
    expect(cg.launchCommand('t1', { memoryBytes: 1, pids: 1 }, ['qemu'])).toEqual(['qemu']);
  });

  it('a limit that cannot be written fails enter with FAILED_PRECONDITION and leaves no cgroup', async () => {
    const cg = new CgroupsV2('prism-vm', root, 'cgroupfs'); // no cgroup.subtree_control: not a cgroup tree
    await expect(cg.enter('t1', 4242, { memoryBytes: 1, pids: 1 })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
  });
});
