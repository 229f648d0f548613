import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { expect } from 'vitest';
import type { RuntimeName } from '../../src/core/types.js';
import { call, type Prismd } from '../integration/prismd-harness.js';
import { ociCgroups, taskCpuNs, taskPidsCurrent, vmCgroups } from '../fixtures/host-cgroups.js';

/**
 * The hostile-code cases, as a table: each case says per runtime what must happen, so a new runtime
 * is one more entry in RUNTIMES plus one more key in each case's `expect` (a missing key skips the
 * case for that runtime with the reason printed).
 *
 * - `deny`: the attempt fails inside the sandbox (EPERM/EROFS/ECONNREFUSED, or the limit holds).
 * - `guest`: the sandbox has its own kernel (a VM): the attempt may succeed *inside* the guest, and
 *   the case only checks that nothing changed on the host.
 * - a string: the case does not run on that runtime, for that reason.
 */
export type Expectation = 'deny' | 'guest' | string;

export interface VictimLimits {
  memoryMb: number;
  pidsLimit: number;
  cpus: number;
  diskMb: number;
  maxOpenFiles: number;
}

export interface RuntimeTarget {
  name: RuntimeName;
  /** Limits of the victim sandbox that every case runs in: small, so the cases hit them quickly. */
  victim: VictimLimits;
  /** Bytes of output the output case sends (at least 16 MiB, so a plain reply is cut). */
  outputBytes: number;
}

const VICTIM_LIMITS: VictimLimits = { memoryMb: 128, pidsLimit: 64, cpus: 0.5, diskMb: 256, maxOpenFiles: 256 };

export const RUNTIMES: RuntimeTarget[] = [
  { name: 'oci', victim: VICTIM_LIMITS, outputBytes: 100e6 },
  // Under TCG the guest writes its disk at ~20 MB/s and its output at ~2 MB/s: a smaller disk and
  // 20 MB of output keep the suite within minutes; the daemon's side of both is the same code.
  { name: 'microvm', victim: { ...VICTIM_LIMITS, diskMb: 128 }, outputBytes: 20e6 },
  // Each docker exec relays output through the engine's attach stream: 50 MB is still past the cut.
  { name: 'docker', victim: VICTIM_LIMITS, outputBytes: 50e6 },
];

export interface ExecReply {
  id: string;
  exitCode: number;
  signal?: string;
  timedOut: boolean;
  oomKilled: boolean;
  diskFull: boolean;
  limitExceeded?: string;
  durationMs: number;
  stdout: string;
  stderr: string;
  encoding: string;
}

export interface CaseContext {
  d: Prismd;
  runtime: RuntimeName;
  target: RuntimeTarget;
  /** The sandbox the hostile code runs in (one per runtime, shared by all cases). */
  victim: { id: string; name: string };
  /** An oci sandbox that must keep working whatever the victim does. */
  bystander: { id: string; name: string };
  /** A TCP listener on the host's 127.0.0.1 (standing in for etcd); counts accepted connections. */
  hostListener: { port: number; accepted(): number };
  /** A port the bystander listens on inside its own sandbox. */
  bystanderPort: number;
  exec(sandboxId: string, body: Record<string, unknown>): Promise<ExecReply>;
  /** Runs a Python snippet in the victim. */
  py(code: string, extra?: Record<string, unknown>): Promise<ExecReply>;
  /** Planted on the host before the cases run; its content never appears in a sandbox. */
  marker: { path: string; secret: string };
}

export interface HostileCase {
  name: string;
  expect: Partial<Record<RuntimeName, Expectation>>;
  timeoutMs?: number;
  /**
   * Per runtime, a reason this node cannot run the case although the runtime can (e.g. an engine
   * without container size limits), from the runtime's probe details; undefined runs it.
   */
  unsupported?: Partial<Record<RuntimeName, (details: Record<string, string>) => string | undefined>>;
  /** The case ends its victim's processes (e.g. a fork bomb's timeout); the victim must still work. */
  run(ctx: CaseContext, expectation: Expectation): Promise<void>;
}

/** Python that calls one raw syscall through ctypes and prints `errno=<n>` (0 on success). */
export function syscallPy(nr: number, args: string[] = [], setup = ''): string {
  return [
    'import ctypes, os',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'libc.syscall.restype = ctypes.c_long',
    setup,
    `r = libc.syscall(${[nr, ...args].join(', ')})`,
    'print("errno=%d" % (ctypes.get_errno() if r < 0 else 0))',
  ].join('\n');
}

const EPERM = 1;

/** x86_64 syscall numbers. */
const NR = { mount: 165, init_module: 175, finit_module: 313, keyctl: 250, bpf: 321, ptrace: 101, kexec_load: 246, unshare: 272 };

function expectErrno(r: ExecReply, errno: number, what: string): void {
  expect(r.exitCode, `${what}: ${r.stderr}`).toBe(0);
  expect(r.stdout.trim(), what).toBe(`errno=${errno}`);
}

const hostMounts = () => readFileSync('/proc/mounts', 'utf8');

/** Connects to each address (host, port) from inside the sandbox; prints one `host:port -> result` line each. */
function connectPy(targets: Array<[string, number]>): string {
  return [
    'import socket, errno',
    `for h, p in ${JSON.stringify(targets)}:`,
    '    s = socket.socket(); s.settimeout(2)',
    '    try:',
    '        s.connect((h, p)); print("%s:%d -> CONNECTED" % (h, p))',
    '    except OSError as e:',
    '        print("%s:%d -> %s" % (h, p, errno.errorcode.get(e.errno, str(e))))',
    '    finally: s.close()',
  ].join('\n');
}

/** Reads the victim's CPU time (ns) as the host counts it. */
function cpuUsage(ctx: CaseContext): () => number {
  if (ctx.runtime === 'oci') return () => taskCpuNs(ociCgroups, ctx.victim.id);
  if (ctx.runtime === 'microvm') return () => taskCpuNs(vmCgroups, ctx.victim.id);
  // docker with the cgroupfs driver (the test engine's): /docker/<container id>; the container is prism-<sandbox id>.
  const cid = execFileSync('docker', ['inspect', '-f', '{{.Id}}', `prism-${ctx.victim.id}`], { encoding: 'utf8' }).trim();
  const file = existsSync('/sys/fs/cgroup/cpuacct') ? `/sys/fs/cgroup/cpuacct/docker/${cid}/cpuacct.usage` : `/sys/fs/cgroup/docker/${cid}/cpu.stat`;
  return () => (file.endsWith('cpu.stat') ? Number(/^usage_usec (\d+)$/m.exec(readFileSync(file, 'utf8'))?.[1] ?? 0) * 1000 : Number(readFileSync(file, 'utf8')));
}

function hostAddresses(): string[] {
  // The host's own non-loopback IPv4 addresses, from the kernel's local routing table.
  const text = readFileSync('/proc/net/fib_trie', 'utf8');
  const out = new Set<string>();
  const re = /\|-- (\d+\.\d+\.\d+\.\d+)\n\s+\/32 host LOCAL/g;
  for (let m = re.exec(text); m; m = re.exec(text)) if (!m[1]!.startsWith('127.')) out.add(m[1]!);
  return [...out];
}

/** connectPy's lines, all targets at once: a dropped SYN costs its whole timeout, one per target. */
function connectAllPy(targets: Array<[string, number]>): string {
  return [
    'import socket, errno, concurrent.futures as cf',
    'def one(t):',
    '    h, p = t',
    '    s = socket.socket(); s.settimeout(3)',
    '    try:',
    '        s.connect((h, p)); return "%s:%d -> CONNECTED" % (h, p)',
    '    except OSError as e:',
    '        return "%s:%d -> %s" % (h, p, errno.errorcode.get(e.errno, str(e)))',
    '    finally: s.close()',
    `for line in cf.ThreadPoolExecutor(16).map(one, ${JSON.stringify(targets)}): print(line)`,
  ].join('\n');
}

export const CASES: HostileCase[] = [
  {
    name: 'fork bomb: pids limit holds, exec times out, nothing survives it',
    expect: { oci: 'deny', microvm: 'deny', docker: 'deny' },
    timeoutMs: 60_000,
    async run(ctx) {
      const bomb = ctx.py('import os\nwhile True:\n  try: os.fork()\n  except OSError: pass', { timeoutSec: 4 });
      await new Promise((r) => setTimeout(r, 1500));
      if (ctx.runtime === 'oci') {
        const pids = taskPidsCurrent(ociCgroups, ctx.victim.id);
        expect(pids).toBeLessThanOrEqual(ctx.target.victim.pidsLimit);
        expect(pids).toBeGreaterThan(ctx.target.victim.pidsLimit / 2); // the bomb really ran
      }
      const r = await bomb;
      expect(r).toMatchObject({ timedOut: true, limitExceeded: 'TIMEOUT' });
      // Killing the exec takes every process it forked: the sandbox is quiet again.
      // User processes only: a VM's /proc also lists its kernel threads (empty cmdline).
      await new Promise((r) => setTimeout(r, 1000));
      const left = await ctx.py(
        'import os\nn = 0\nfor p in filter(str.isdigit, os.listdir("/proc")):\n  try: n += bool(open("/proc/%s/cmdline" % p, "rb").read())\n  except OSError: pass\nprint(n)',
      );
      // docker runs each command under a `prism-init relay` (docker exec), one more process than oci.
      expect(Number(left.stdout.trim()), left.stderr).toBeLessThanOrEqual(ctx.runtime === 'docker' ? 5 : 4);
    },
  },
  {
    name: 'memory bomb: OOM-killed and reported as oomKilled',
    expect: { oci: 'deny', microvm: 'deny', docker: 'deny' },
    async run(ctx) {
      const r = await ctx.py('b = []\nwhile True: b.append(bytearray(8 << 20))', { timeoutSec: 60 });
      expect(r).toMatchObject({ oomKilled: true, timedOut: false, exitCode: 137, signal: 'SIGKILL', limitExceeded: 'OOM_KILLED' });
    },
  },
  {
    name: 'disk fill of the writable layer: ENOSPC at diskMb, reported as DISK_FULL, space comes back',
    expect: { oci: 'deny', microvm: 'deny', docker: 'deny' },
    unsupported: {
      // The engine's storage driver decides (docs/runtimes.md): overlay2 needs XFS with pquota.
      docker: (details) => (details.diskLimit?.startsWith('enforced') ? undefined : `this Docker engine cannot limit a container's size: ${details.diskLimit ?? 'not probed'}`),
    },
    timeoutMs: 90_000,
    async run(ctx) {
      const r = await ctx.exec(ctx.victim.id, { command: 'dd if=/dev/zero of=/var/tmp/fill bs=1M 2>&1', timeoutSec: 60 });
      expect(r.exitCode).not.toBe(0);
      // A btrfs qgroup (the docker runtime on a btrfs engine) says EDQUOT where the others say ENOSPC.
      expect(r.stdout).toMatch(ctx.runtime === 'docker' ? /No space left on device|Disk quota exceeded/ : /No space left on device/);
      expect(r).toMatchObject({ diskFull: true, limitExceeded: 'DISK_FULL', timedOut: false });
      const written = Number(/(\d+) bytes/.exec(r.stdout)?.[1]);
      expect(written).toBeLessThanOrEqual(ctx.target.victim.diskMb * 1024 * 1024);
      expect(written).toBeGreaterThan(ctx.target.victim.diskMb * 1024 * 1024 * 0.5);
      const after = await ctx.exec(ctx.victim.id, { command: 'rm /var/tmp/fill && echo ok > /var/tmp/x && cat /var/tmp/x' });
      expect(after).toMatchObject({ stdout: 'ok\n', diskFull: false });
      expect(after.limitExceeded).toBeUndefined();
    },
  },
  {
    name: 'CPU spin beyond the quota: usage stays at the quota',
    expect: { oci: 'deny', microvm: 'deny', docker: 'deny' },
    async run(ctx) {
      const usage = cpuUsage(ctx);
      const rate = async (ms: number) => {
        const u0 = usage();
        const t0 = process.hrtime.bigint();
        await new Promise((res) => setTimeout(res, ms));
        return (usage() - u0) / Number(process.hrtime.bigint() - t0);
      };
      // What the sandbox uses doing nothing (a VM's own ticks), beside what it uses spinning.
      const idle = await rate(1000);
      // Two spinning processes ask for two cores. Each says when it spins, so the window measured holds
      // only the spin, not python's start-up (slow under TCG and under a loaded CI host).
      const spin = (n: number) => `python3 -c "open('/tmp/spin${n}', 'w').close()
while 1: pass"`;
      await ctx.exec(ctx.victim.id, { command: 'rm -f /tmp/spin1 /tmp/spin2' });
      const running = ctx.exec(ctx.victim.id, { command: `${spin(1)} & ${spin(2)}`, timeoutSec: 12 });
      const deadline = Date.now() + 8000;
      while ((await ctx.exec(ctx.victim.id, { command: 'test -e /tmp/spin1 -a -e /tmp/spin2' })).exitCode !== 0) {
        if (Date.now() > deadline) throw new Error('the two spinners did not start within 8 s');
        await new Promise((res) => setTimeout(res, 100));
      }
      const cores = await rate(2000);
      const r = await running;
      expect(r.timedOut).toBe(true);
      // oci: the CFS quota (cpus). microvm: vCPUs = ceil(cpus) plus QEMU's own threads (docs/runtimes.md).
      const limit = ctx.runtime === 'microvm' ? Math.ceil(ctx.target.victim.cpus) : ctx.target.victim.cpus;
      console.log(`[${ctx.runtime}] cpu spin used ${cores.toFixed(2)} cores (limit ${limit}, idle ${idle.toFixed(2)})`);
      expect(cores).toBeLessThanOrEqual(limit * 1.15 + 0.05);
      // It did spin: well above idle. Not a share of the limit: on a loaded host (CI, a host VM at a
      // higher priority on 2 cores) a microVM got 0.28 of its core while spinning.
      expect(cores).toBeGreaterThan(idle + limit * 0.1);
    },
  },
  {
    name: 'open-file exhaustion: stops at maxOpenFiles, the hard limit cannot be raised',
    expect: { oci: 'deny', microvm: 'deny', docker: 'deny' },
    async run(ctx) {
      const r = await ctx.py(
        [
          'import os, resource',
          'print("limit", *resource.getrlimit(resource.RLIMIT_NOFILE))',
          'try:\n  resource.setrlimit(resource.RLIMIT_NOFILE, (100000, 100000)); print("raised")',
          'except (ValueError, OSError) as e: print("raise refused")',
          'fds = []',
          'try:\n  while True: fds.append(os.open("/dev/null", os.O_RDONLY))',
          'except OSError as e: print("opened", len(fds), e.strerror)',
        ].join('\n'),
      );
      const lim = ctx.target.victim.maxOpenFiles;
      expect(r.stdout).toContain(`limit ${lim} ${lim}`);
      expect(r.stdout).toContain('raise refused');
      const opened = Number(/opened (\d+) Too many open files/.exec(r.stdout)?.[1]);
      expect(opened, r.stdout + r.stderr).toBeLessThanOrEqual(lim);
      expect(opened).toBeGreaterThan(lim - 16);
    },
  },
  {
    name: 'reaching the prismd API, a host loopback service, the host address and another sandbox: all fail',
    expect: { oci: 'deny', microvm: 'deny', docker: 'deny' },
    async run(ctx) {
      const apiPort = Number(new URL(ctx.d.url).port);
      const targets: Array<[string, number]> = [
        ['127.0.0.1', apiPort],
        ['127.0.0.1', ctx.hostListener.port],
        ['127.0.0.1', ctx.bystanderPort],
        ...hostAddresses().flatMap((a): Array<[string, number]> => [[a, apiPort], [a, ctx.hostListener.port]]),
        [ctx.bystander.name, ctx.bystanderPort],
        ['169.254.169.254', 80],
      ];
      const before = ctx.hostListener.accepted();
      const r = await ctx.py(connectPy(targets), { timeoutSec: 60 });
      expect(r.exitCode, r.stderr).toBe(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines).toHaveLength(targets.length);
      for (const l of lines) expect(l).not.toMatch(/CONNECTED/);
      expect(ctx.hostListener.accepted()).toBe(before);
      // The same check is not vacuous: the bystander reaches its own listener.
      const own = await ctx.exec(ctx.bystander.id, { cmd: ['python3', '-c', connectPy([['127.0.0.1', ctx.bystanderPort]])] });
      expect(own.stdout).toContain('CONNECTED');
    },
  },
  {
    // The victim has no network (egress none); a sandbox with one must not reach the host either.
    name: 'with egress all: the prismd API, host services, the host and its gateway address, the metadata address: all fail',
    expect: { oci: 'deny', microvm: 'deny', docker: 'deny' },
    timeoutMs: 120_000,
    async run(ctx) {
      const r = await call(ctx.d.url, 'POST', '/sandboxes', { runtime: ctx.runtime, user: 'root', cpus: 0.25, memoryMb: 128, network: { egress: 'all' } });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      const id = r.body.id as string;
      // On every host address (the victim's listener is on loopback only): only the policy stands between.
      let accepted = 0;
      const wide = createServer((c) => {
        accepted++;
        c.destroy();
      });
      await new Promise<void>((res) => wide.listen(0, '0.0.0.0', res));
      const port = (wide.address() as AddressInfo).port;
      try {
        const apiPort = Number(new URL(ctx.d.url).port);
        const me = await ctx.exec(id, { cmd: ['python3', '-c', "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('198.51.100.2', 9)); print(s.getsockname()[0])"] });
        const gateway = me.stdout.trim().replace(/\.(\d+)$/, (_m, n) => `.${Number(n) - 1}`);
        expect(gateway).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
        const targets: Array<[string, number]> = [
          ['127.0.0.1', apiPort], ['127.0.0.1', ctx.hostListener.port], [gateway, apiPort], [gateway, port], [gateway, 22],
          ...hostAddresses().map((a): [string, number] => [a, port]),
          ['169.254.169.254', 80],
        ];
        const before = ctx.hostListener.accepted();
        const out = await ctx.exec(id, { cmd: ['python3', '-c', connectAllPy(targets)], timeoutSec: 90 });
        expect(out.exitCode, out.stderr).toBe(0);
        expect(out.stdout.trim().split('\n')).toHaveLength(targets.length);
        expect(out.stdout).not.toMatch(/CONNECTED/);
        expect(ctx.hostListener.accepted()).toBe(before);
        expect(accepted).toBe(0);
        // Not vacuous: the listener answers on the sandbox's gateway address, from the host.
        await new Promise<void>((res, rej) => connect(port, gateway).once('connect', function (this: Socket) { this.destroy(); res(); }).once('error', rej));
        for (let i = 0; i < 50 && accepted === 0; i++) await new Promise((res) => setTimeout(res, 20));
        expect(accepted).toBe(1);
      } finally {
        wide.close();
        await call(ctx.d.url, 'DELETE', `/sandboxes/${id}`);
      }
    },
  },
  {
    name: 'reading a marker file planted on the host: not visible by path, /proc/1/root or ../',
    expect: { oci: 'deny', microvm: 'deny', docker: 'deny' },
    async run(ctx) {
      const p = ctx.marker.path;
      const r = await ctx.exec(ctx.victim.id, {
        command: `cat ${p} /proc/1/root${p} /proc/self/root${p} ../../../../../..${p} /proc/1/cwd/../../..${p} 2>&1; grep -rl ${ctx.marker.secret} /root /proc/1/root/root 2>/dev/null; true`,
      });
      expect(r.stdout).not.toContain(ctx.marker.secret);
      expect(r.stdout).toMatch(/No such file or directory/);
    },
  },
  {
    name: 'writing /proc/sys (kernel/hostname, vm/drop_caches)',
    expect: { oci: 'deny', microvm: 'guest', docker: 'deny' },
    async run(ctx, e) {
      const host = hostname();
      const r = await ctx.exec(ctx.victim.id, {
        command: 'echo pwned > /proc/sys/kernel/hostname; echo "hostname=$?"; echo 3 > /proc/sys/vm/drop_caches; echo "drop=$?"',
      });
      if (e === 'deny') {
        expect(r.stdout).toMatch(/hostname=[1-9]/);
        expect(r.stdout).toMatch(/drop=[1-9]/);
        expect(r.stderr).toMatch(/Read-only file system/);
      }
      expect(hostname()).toBe(host);
      expect(readFileSync('/proc/sys/kernel/hostname', 'utf8').trim()).toBe(host);
    },
  },
  {
    name: 'mount (command and raw syscall)',
    expect: { oci: 'deny', microvm: 'deny', docker: 'deny' },
    async run(ctx, e) {
      const before = hostMounts();
      const cmd = await ctx.exec(ctx.victim.id, { command: 'mkdir -p /mnt/x && mount -t tmpfs hostile /mnt/x; echo "rc=$?"' });
      const raw = await ctx.py(syscallPy(NR.mount, ['b"hostile2"', 'b"/mnt"', 'b"tmpfs"', '0', 'None']));
      if (e === 'deny') {
        expect(cmd.stdout).toContain('rc=32');
        expectErrno(raw, EPERM, 'mount(2)');
      }
      const after = hostMounts();
      expect(after).not.toMatch(/hostile/);
      expect(after.split('\n').length).toBeLessThanOrEqual(before.split('\n').length + 20); // others' tests mount too
      if (e === 'guest') await ctx.exec(ctx.victim.id, { command: 'umount /mnt/x /mnt 2>/dev/null; true' });
    },
  },
  {
    name: 'loading a kernel module (init_module, finit_module)',
    expect: { oci: 'deny', microvm: 'deny', docker: 'deny' },
    async run(ctx) {
      // A kernel without module support has no /proc/modules; the syscalls must fail all the same.
      const modules = () => (existsSync('/proc/modules') ? readFileSync('/proc/modules', 'utf8') : '');
      const modsBefore = modules();
      expectErrno(await ctx.py(syscallPy(NR.finit_module, ['fd', 'b""', '0'], 'fd = os.open("/bin/true", os.O_RDONLY)')), EPERM, 'finit_module');
      expectErrno(await ctx.py(syscallPy(NR.init_module, ['buf', 'len(data)', 'b""'], 'data = open("/bin/true","rb").read(); buf = ctypes.create_string_buffer(data)')), EPERM, 'init_module');
      expect(modules()).toBe(modsBefore);
    },
  },
  {
    name: 'keyctl, bpf, ptrace of PID 1, kexec_load, unshare(CLONE_NEWUSER): EPERM',
    expect: { oci: 'deny', microvm: 'deny', docker: 'deny' },
    async run(ctx) {
      const KEYCTL_JOIN_SESSION_KEYRING = 1;
      const PTRACE_ATTACH = 16;
      const CLONE_NEWUSER = 0x10000000;
      expectErrno(await ctx.py(syscallPy(NR.keyctl, [String(KEYCTL_JOIN_SESSION_KEYRING), 'b"hostile"'])), EPERM, 'keyctl');
      expectErrno(await ctx.py(syscallPy(NR.bpf, ['0', 'buf', '128'], 'buf = ctypes.create_string_buffer(128)')), EPERM, 'bpf');
      expectErrno(await ctx.py(syscallPy(NR.ptrace, [String(PTRACE_ATTACH), '1', '0', '0'])), EPERM, 'ptrace(ATTACH, 1)');
      expectErrno(await ctx.py(syscallPy(NR.kexec_load, ['0', '0', 'None', '0'])), EPERM, 'kexec_load');
      expectErrno(await ctx.py(syscallPy(NR.unshare, [String(CLONE_NEWUSER)])), EPERM, 'unshare(CLONE_NEWUSER)');
      // Also as a non-root user, the way most code would try it.
      expectErrno(await ctx.py(syscallPy(NR.unshare, [String(CLONE_NEWUSER)], 'os.setuid(1000)')), EPERM, 'unshare as uid 1000');
    },
  },
  {
    name: '100 MB of output (20 MB on TCG microvm): delivered by streaming, cut in a plain reply, daemon RSS bounded',
    expect: { oci: 'deny', microvm: 'deny', docker: 'deny' },
    timeoutMs: 120_000,
    async run(ctx) {
      const pid = ctx.d.proc.pid!;
      const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
      const size = ctx.target.outputBytes;
      const command = (n: number) => `head -c ${n} /dev/zero | tr '\\0' a`;
      // Whether the producer (`tr`) still runs: blocked on a full pipe while nobody reads the stream.
      const producing = async () =>
        (await ctx.exec(ctx.victim.id, { command: 'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = tr ] && exit 0; done; exit 1' })).exitCode === 0;
      let peak = 0;
      const sampler = setInterval(() => (peak = Math.max(peak, rss())), 25);
      const base = rss();
      try {
        // Streaming: every byte arrives. The reader stops for 1.5 s after the first chunk: the daemon
        // must hold the command back (back-pressure) rather than read the rest into a buffer.
        const res = await fetch(`${ctx.d.url}/api/v1/sandboxes/${ctx.victim.id}/exec`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/x-ndjson', authorization: `Bearer ${ctx.d.token}` },
          body: JSON.stringify({ command: command(size), timeoutSec: 90 }),
        });
        expect(res.status).toBe(200);
        const reader = res.body!.getReader();
        let got = 0;
        let exit: Record<string, unknown> | undefined;
        let rest = '';
        let paused = false;
        const decoder = new TextDecoder();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          const lines = (rest + decoder.decode(value, { stream: true })).split('\n');
          rest = lines.pop()!;
          for (const l of lines) {
            const ev = JSON.parse(l) as { type: string; data?: string };
            if (ev.type === 'stdout') got += ev.data!.length;
            if (ev.type === 'exit') exit = ev;
          }
          // Not on docker yet: this case has not run against it since its driver test showed the hold.
          if (!paused && got > 0 && ctx.runtime !== 'docker') {
            paused = true;
            await new Promise((r) => setTimeout(r, 1500));
            expect(await producing(), 'the command ran on while nobody read its output').toBe(true);
          }
        }
        expect(got).toBe(size);
        expect(exit).toMatchObject({ exitCode: 0, timedOut: false });
        // Plain JSON: cut at the reply cap and marked truncated, not held whole in the daemon.
        const plain = await ctx.exec(ctx.victim.id, { command: command(size), timeoutSec: 90 });
        expect(plain.exitCode).toBe(0);
        expect((plain as unknown as { truncated: boolean }).truncated).toBe(true);
        expect(plain.stdout.length).toBeLessThan(size);
        expect(plain.stdout.length).toBeGreaterThan(0);
      } finally {
        clearInterval(sampler);
      }
      console.log(`[${ctx.runtime}] ${size / 1e6} MB output: daemon RSS ${(base / 2 ** 20).toFixed(0)} MiB -> peak ${(peak / 2 ** 20).toFixed(0)} MiB`);
      // A sanity bound: the check above is the back-pressure itself. Growth measured 86-121 MiB on an
      // idle host and 173 MiB in a loaded CI run (the garbage of 100 MB through JSON, collected late).
      expect(peak - base).toBeLessThan(256 * 2 ** 20);
      expect((await call(ctx.d.url, 'GET', '/health')).status).toBe(200);
    },
  },
];

/** The setuid case needs its own non-root sandbox; it runs on oci only (see RUNTIME notes in docs/security.md). */
export const SETUID_RUNTIMES: Partial<Record<RuntimeName, Expectation>> = {
  oci: 'deny',
  microvm: 'deny',
  docker: 'deny',
};
