import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PrismError } from '../../../core/errors.js';
import { FirecrackerVmm, isFirecrackerAlive, type LaunchedVm, type LaunchOptions } from './firecracker-vmm.js';
import { isQemuAlive } from '../qemu-process.js';
import { taskPaths, type VmShape } from '../vm-boot.js';
import { connectVsock } from './vsock-connect.js';

/**
 * A stand-in for the firecracker binary: serves the API on --api-sock, records every request (one
 * JSON line each in requests.jsonl beside the socket), writes a "serial console" line to stdout and a
 * log line to stderr, binds the vsock socket at InstanceStart (failing if the path exists, as
 * Firecracker does) and answers CONNECT there, and exits on SendCtrlAltDel like a guest reset.
 * fake.json beside the socket changes its behaviour: { failOn: "PUT /path", exitAtStart, ignoreCad }.
 */
const FAKE = `#!${process.execPath}
const http = require('node:http'), net = require('node:net'), fs = require('node:fs'), path = require('node:path');
const sock = process.argv[process.argv.indexOf('--api-sock') + 1];
const dir = path.dirname(sock);
const opts = fs.existsSync(path.join(dir, 'fake.json')) ? JSON.parse(fs.readFileSync(path.join(dir, 'fake.json'), 'utf8')) : {};
fs.writeFileSync(path.join(dir, 'fake.pid'), String(process.pid));
process.stdout.write('fake serial console\\n');
process.stderr.write('fake firecracker: starting\\n');
if (opts.exitAtStart) { process.stderr.write('fake firecracker: cannot open /dev/kvm\\n'); process.exit(1); }
let vsockPath;
http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    const parsed = body ? JSON.parse(body) : undefined;
    fs.appendFileSync(path.join(dir, 'requests.jsonl'), JSON.stringify({ method: req.method, path: req.url, body: parsed }) + '\\n');
    if (opts.failOn === req.method + ' ' + req.url) {
      res.writeHead(400, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify({ fault_message: 'fake refusal of ' + req.url }));
    }
    if (req.url === '/vsock') vsockPath = parsed.uds_path;
    if (req.url === '/snapshot/load' && parsed.vsock_override) vsockPath = parsed.vsock_override.uds_path;
    const start = (req.url === '/actions' && parsed.action_type === 'InstanceStart') || (req.url === '/snapshot/load');
    if (start && vsockPath) {
      try {
        net.createServer((c) => c.once('data', () => { c.write('OK 1073741824\\n'); c.on('data', (d) => c.write(d)); })).listen(vsockPath);
      } catch (e) { res.writeHead(400); return res.end(JSON.stringify({ fault_message: String(e) })); }
    }
    res.writeHead(204);
    res.end();
    if (req.url === '/actions' && parsed.action_type === 'SendCtrlAltDel' && !opts.ignoreCad) setTimeout(() => process.exit(0), 20);
  });
}).listen(sock);
`;

interface Recorded {
  method: string;
  path: string;
  body?: Record<string, unknown>;
}

describe('FirecrackerVmm against a fake firecracker', () => {
  let dir: string;
  let binary: string;
  let opts: LaunchOptions;
  const vmm = new FirecrackerVmm({ startTimeoutMs: 5_000, shutdownGraceMs: 300 });
  const started: LaunchedVm[] = [];

  const requests = async (): Promise<Recorded[]> =>
    (await readFile(join(dir, 'task', 'requests.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Recorded);
  const fakePid = async () => Number(await readFile(join(dir, 'task', 'fake.pid'), 'utf8'));
  const behave = (o: object) => writeFile(join(dir, 'task', 'fake.json'), JSON.stringify(o));

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prism-fc-vmm-'));
    binary = join(dir, 'firecracker');
    await writeFile(binary, FAKE);
    await chmod(binary, 0o755);
    const task = join(dir, 'task');
    await mkdir(task);
    opts = {
      binary, taskDir: task, kernel: '/k/vmlinux', initramfs: '/k/initramfs.cpio', cmdline: 'console=ttyS0 quiet',
      memoryMb: 256, vcpus: 2, imageDisk: join(task, 'image.ext4'), writableDisk: join(task, 'rw.ext4'),
      vsockUds: join(task, 'vsock.sock'), consoleLog: join(task, 'console.log'),
    };
  });
  afterEach(async () => {
    for (const vm of started.splice(0)) {
      if (await isFirecrackerAlive(vm)) process.kill(vm.pid, 'SIGKILL');
    }
    const pid = await fakePid().catch(() => 0);
    if (pid > 1) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await rm(dir, { recursive: true, force: true });
  });

  async function launch(o: LaunchOptions = opts): Promise<LaunchedVm> {
    const vm = await vmm.launch(o);
    started.push(vm);
    return vm;
  }

  it('configures in order, starts the guest, and wires console, log and vsock', async () => {
    await writeFile(opts.vsockUds, 'stale'); // Firecracker cannot bind over an existing path
    const vm = await launch();
    expect(vm.apiSocket).toBe(join(opts.taskDir, 'fc.sock'));
    expect(await isFirecrackerAlive(vm)).toBe(true);
    expect(await requests()).toEqual([
      { method: 'PUT', path: '/machine-config', body: { vcpu_count: 2, mem_size_mib: 256, smt: false } },
      { method: 'PUT', path: '/boot-source', body: { kernel_image_path: '/k/vmlinux', initrd_path: '/k/initramfs.cpio', boot_args: 'console=ttyS0 quiet reboot=k panic=1 pci=off' } },
      { method: 'PUT', path: '/drives/image', body: { drive_id: 'image', path_on_host: opts.imageDisk, is_root_device: false, is_read_only: true } },
      { method: 'PUT', path: '/drives/rw', body: { drive_id: 'rw', path_on_host: opts.writableDisk, is_root_device: false, is_read_only: false } },
      { method: 'PUT', path: '/vsock', body: { guest_cid: 3, uds_path: opts.vsockUds } },
      { method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } },
    ]);
    expect(await readFile(opts.consoleLog, 'utf8')).toBe('fake serial console\n');
    expect(await readFile(join(opts.taskDir, 'firecracker.log'), 'utf8')).toContain('fake firecracker: starting');

    const sock = await connectVsock(opts.vsockUds, 1024, 2_000);
    const echoed = new Promise<string>((r) => sock.once('data', (c: Buffer) => r(c.toString())));
    sock.write('H');
    expect(await echoed).toBe('H');
    sock.destroy();

    await vmm.shutdown(vm);
    expect(await isFirecrackerAlive(vm)).toBe(false);
    expect((await requests()).at(-1)).toEqual({ method: 'PUT', path: '/actions', body: { action_type: 'SendCtrlAltDel' } });
    await vmm.shutdown(vm); // idempotent
  });

  it('kills a VM that ignores Ctrl-Alt-Del after the grace period', async () => {
    await behave({ ignoreCad: true });
    const vm = await launch();
    const t0 = Date.now();
    await vmm.shutdown(vm);
    expect(await isFirecrackerAlive(vm)).toBe(false);
    expect(await vm.exited).toBe('signal SIGKILL');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
  });

  it("fails with Firecracker's fault message and kills the process when a request is refused", async () => {
    await behave({ failOn: 'PUT /drives/rw' });
    const err = await vmm.launch(opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrismError);
    expect(err).toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect((err as Error).message).toContain('Firecracker PUT /drives/rw failed (HTTP 400): fake refusal of /drives/rw');
    expect(await isFirecrackerAlive({ pid: await fakePid(), apiSocket: join(opts.taskDir, 'fc.sock') })).toBe(false);
    expect((await requests()).map((r) => r.path)).not.toContain('/actions');
  });

  it('reports an exit during start-up with the tail of its log', async () => {
    await behave({ exitAtStart: true });
    await expect(vmm.launch(opts)).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringMatching(/exited during start-up \(exit code 1\).*cannot open \/dev\/kvm/) });
  });

  it('a binary that cannot run is FAILED_PRECONDITION', async () => {
    await expect(vmm.launch({ ...opts, binary: join(dir, 'missing') })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
  });

  it('pauses, snapshots, resumes, and restores into a new process', async () => {
    const vm = await launch();
    await vmm.pause(vm);
    await vmm.snapshot(vm, join(dir, 'vm.state'), join(dir, 'vm.mem'));
    await vmm.resumeVm(vm);
    expect((await requests()).slice(6)).toEqual([
      { method: 'PATCH', path: '/vm', body: { state: 'Paused' } },
      { method: 'PUT', path: '/snapshot/create', body: { snapshot_type: 'Full', snapshot_path: join(dir, 'vm.state'), mem_file_path: join(dir, 'vm.mem') } },
      { method: 'PATCH', path: '/vm', body: { state: 'Resumed' } },
    ]);
    await vmm.shutdown(vm);
    await rm(join(opts.taskDir, 'requests.jsonl'));

    const restored = await vmm.restore({ binary, taskDir: opts.taskDir, consoleLog: opts.consoleLog }, join(dir, 'vm.state'), join(dir, 'vm.mem'));
    started.push(restored);
    expect(restored.pid).not.toBe(vm.pid);
    expect(await requests()).toEqual([
      { method: 'PUT', path: '/snapshot/load', body: { snapshot_path: join(dir, 'vm.state'), mem_backend: { backend_type: 'File', backend_path: join(dir, 'vm.mem') }, resume_vm: true } },
    ]);
    await vmm.shutdown(restored);
  });

  it('restores with a fresh writable disk and another vsock socket: load paused, repoint, resume', async () => {
    await writeFile(join(opts.taskDir, 'other.sock'), 'stale');
    const vm = await vmm.restore(
      { binary, taskDir: opts.taskDir, consoleLog: opts.consoleLog, writableDisk: join(dir, 'fresh.ext4'), vsockUds: join(opts.taskDir, 'other.sock') },
      join(dir, 'vm.state'), join(dir, 'vm.mem'),
    );
    started.push(vm);
    expect(await requests()).toEqual([
      {
        method: 'PUT', path: '/snapshot/load',
        body: { snapshot_path: join(dir, 'vm.state'), mem_backend: { backend_type: 'File', backend_path: join(dir, 'vm.mem') }, resume_vm: false, vsock_override: { uds_path: join(opts.taskDir, 'other.sock') } },
      },
      { method: 'PATCH', path: '/drives/rw', body: { drive_id: 'rw', path_on_host: join(dir, 'fresh.ext4') } },
      { method: 'PATCH', path: '/vm', body: { state: 'Resumed' } },
    ]);
    const sock = await connectVsock(join(opts.taskDir, 'other.sock'), 1024, 2_000);
    sock.destroy();
  });

  it('serves as the driver Vmm: boots, dials the agent over vsock, saves beside the state file, restores, quits', async () => {
    const seam = new FirecrackerVmm({ binary, startTimeoutMs: 5_000, shutdownGraceMs: 300 });
    const p = taskPaths(dir, 'task');
    const shape: VmShape = {
      files: { kernel: '/k/vmlinux', initramfs: '/k/initramfs.cpio', kernelVersion: '6.1', pvh: true }, accel: 'kvm',
      imageDisk: join(p.task, 'image.ext4'), memoryMb: 256, cpus: 2, cmdline: 'console=ttyS0 quiet', writableDiskMb: 256,
    };
    const vm = await seam.start({ shape, paths: p });
    started.push({ ...vm, apiSocket: seam.marker(p) });
    expect(Number(await readFile(p.pidFile, 'utf8'))).toBe(vm.pid);
    expect(seam.marker(p)).toBe(join(p.task, 'fc.sock'));
    expect(await isQemuAlive(vm.pid, seam.marker(p))).toBe(true);
    expect((await requests()).at(-2)).toEqual({ method: 'PUT', path: '/vsock', body: { guest_cid: 3, uds_path: p.agentSocket } });
    const sock = await seam.dialAgent(p.agentSocket, 2_000);
    const echoed = new Promise<string>((r) => sock.once('data', (c: Buffer) => r(c.toString())));
    sock.write('H');
    expect(await echoed).toBe('H');
    sock.destroy();

    const state = join(dir, 'template', 'state');
    await seam.save(p, state, 5_000);
    expect((await requests()).slice(-2)).toEqual([
      { method: 'PATCH', path: '/vm', body: { state: 'Paused' } },
      { method: 'PUT', path: '/snapshot/create', body: { snapshot_type: 'Full', snapshot_path: state, mem_file_path: join(dir, 'template', 'mem') } },
    ]);
    await seam.quit(p);
    expect(await vm.exited).toBe('signal SIGKILL');
    await rm(join(p.task, 'requests.jsonl'));

    const restored = await seam.start({ shape, paths: p, incoming: state });
    started.push({ ...restored, apiSocket: seam.marker(p) });
    expect(await requests()).toEqual([
      {
        method: 'PUT', path: '/snapshot/load',
        body: { snapshot_path: state, mem_backend: { backend_type: 'File', backend_path: join(dir, 'template', 'mem') }, resume_vm: false, vsock_override: { uds_path: p.agentSocket } },
      },
      { method: 'PATCH', path: '/drives/rw', body: { drive_id: 'rw', path_on_host: p.rwDisk } },
      { method: 'PATCH', path: '/vm', body: { state: 'Resumed' } },
    ]);
    await seam.quit(p);
    expect(await isQemuAlive(restored.pid, seam.marker(p))).toBe(false);
  });

  it('describes itself as untested, and fails to describe a binary that cannot run', async () => {
    const versioned = join(dir, 'fc-version');
    await writeFile(versioned, '#!/bin/sh\necho "Firecracker v1.7.0"\n');
    await chmod(versioned, 0o755);
    expect(await new FirecrackerVmm({ binary: versioned }).describe()).toEqual({
      vmm: expect.stringContaining('UNTESTED') as string, firecracker: 'Firecracker v1.7.0',
    });
    await expect(new FirecrackerVmm({ binary: join(dir, 'missing') }).describe()).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
  });

  it('refuses the jailer until the chroot is wired', async () => {
    await expect(vmm.launch({ ...opts, jailer: '/usr/bin/jailer' })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
  });
});

describe('FirecrackerVmm.findBinary', () => {
  let dir: string;
  const savedPath = process.env.PATH;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prism-fc-bin-'));
  });
  afterEach(async () => {
    process.env.PATH = savedPath;
    await rm(dir, { recursive: true, force: true });
  });

  it('an explicit path only if it is an executable file, else the first firecracker on PATH', async () => {
    const bin = join(dir, 'b');
    await Promise.all([mkdir(join(dir, 'a')), mkdir(bin)]);
    await writeFile(join(dir, 'a', 'firecracker'), 'not executable');
    await writeFile(join(bin, 'firecracker'), '#!/bin/sh\n');
    await chmod(join(bin, 'firecracker'), 0o755);
    process.env.PATH = [join(dir, 'a'), join(dir, 'missing'), bin].join(delimiter);
    expect(await FirecrackerVmm.findBinary()).toBe(join(bin, 'firecracker'));
    expect(await FirecrackerVmm.findBinary(join(bin, 'firecracker'))).toBe(join(bin, 'firecracker'));
    expect(await FirecrackerVmm.findBinary(join(dir, 'a', 'firecracker'))).toBeUndefined();
    expect(await FirecrackerVmm.findBinary(bin)).toBeUndefined(); // a directory
    process.env.PATH = join(dir, 'a');
    expect(await FirecrackerVmm.findBinary()).toBeUndefined();
  });
});
