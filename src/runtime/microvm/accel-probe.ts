import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, constants } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AgentConnection } from './agent-connection.js';
import { buildQemuArgs, type Accelerator } from './qemu-args.js';

/**
 * Chooses KVM or TCG for this host. /dev/kvm opening is not enough: nested or paravirtual KVMs
 * (e.g. kvm_pvm) accept `-accel kvm` and then fail to emulate an instruction early in boot. So a probe
 * VM boots with KVM and must get far enough (agent hello, or the console showing the kernel ran /init)
 * within a short timeout; anything else falls back to TCG with the reason. The verdict is cached per
 * kernel (sha256) and host (kernel release, CPU model), since a probe costs seconds.
 */

export interface AccelVerdict {
  accel: Accelerator;
  reason: string;
}

export interface AccelProbeOptions {
  /** The cache file and the probe VM's scratch directory live here. */
  stateDir: string;
  qemuBinary: string;
  /** The kernel command line for a KVM boot (no root disk, no hostname needed). */
  cmdline: string;
  timeoutMs?: number;
  /** Ignore a cached verdict. */
  force?: boolean;
}

export interface AccelProbeFiles {
  kernel: string;
  initramfs: string;
}

const CACHE_FILE = 'accel-probe.json';
const REACHED_INIT = /Run \/init as init process|prism-agent/;

export async function probeAccelerator(files: AccelProbeFiles, opts: AccelProbeOptions): Promise<AccelVerdict> {
  try {
    const fh = await open('/dev/kvm', constants.O_RDWR);
    await fh.close();
  } catch (e) {
    return { accel: 'tcg', reason: `kvm unusable: /dev/kvm: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` };
  }
  const key = await cacheKey(files.kernel);
  const cacheFile = join(opts.stateDir, CACHE_FILE);
  if (!opts.force) {
    const cached = await readFile(cacheFile, 'utf8').then((t) => JSON.parse(t) as AccelVerdict & { key: string }, () => null);
    if (cached?.key === key && (cached.accel === 'kvm' || cached.accel === 'tcg')) return { accel: cached.accel, reason: cached.reason };
  }
  const failure = await bootWithKvm(files, opts);
  const verdict: AccelVerdict = failure === null ? { accel: 'kvm', reason: 'kvm boots the guest' } : { accel: 'tcg', reason: `kvm unusable: ${failure}` };
  await mkdir(opts.stateDir, { recursive: true });
  await writeFile(cacheFile, JSON.stringify({ key, ...verdict }, null, 2));
  return verdict;
}

async function cacheKey(kernel: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(kernel)) hash.update(chunk as Buffer);
  const release = (await readFile('/proc/sys/kernel/osrelease', 'utf8').catch(() => '')).trim();
  const cpu = /^model name\s*:\s*(.*)$/m.exec(await readFile('/proc/cpuinfo', 'utf8').catch(() => ''))?.[1] ?? '';
  return `${hash.digest('hex')} ${release} ${cpu}`;
}

/** Boots a throw-away VM with KVM; null when it reached userspace, else why not. */
async function bootWithKvm(files: AccelProbeFiles, opts: AccelProbeOptions): Promise<string | null> {
  const timeoutMs = opts.timeoutMs ?? 8_000;
  await mkdir(opts.stateDir, { recursive: true });
  const dir = await mkdtemp(join(opts.stateDir, 'accel-probe-'));
  const consoleLog = join(dir, 'console.log');
  const agentSocket = join(dir, 'agent.sock');
  const args = buildQemuArgs({
    accel: 'kvm', memoryMb: 128, cpus: 1, kernel: files.kernel, initramfs: files.initramfs, cmdline: opts.cmdline,
    agentSocket, consoleLog, pidFile: join(dir, 'qemu.pid'),
  });
  const child = spawn(opts.qemuBinary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-2000)));
  const exited = new Promise<string>((resolve) => {
    child.once('error', (e) => resolve(`qemu did not start: ${e.message}`));
    child.once('exit', (code, sig) => resolve(`qemu exited (${sig ?? code}) during boot: ${lastLine(stderr) || 'no message'}`));
  });
  let conn: AgentConnection | null = null;
  let timer: NodeJS.Timeout | undefined;
  let poll: NodeJS.Timeout | undefined;
  try {
    const hello = AgentConnection.open(agentSocket, { timeoutMs }).then((c) => ((conn = c), null));
    const consoleShowsInit = new Promise<null>((resolve) => {
      poll = setInterval(() => {
        void readFile(consoleLog, 'utf8').then((t) => REACHED_INIT.test(t) && resolve(null), () => undefined);
      }, 200);
    });
    const timeout = new Promise<string>((resolve) => {
      timer = setTimeout(async () => {
        const console = await readFile(consoleLog, 'utf8').catch(() => '');
        resolve(`no sign of life within ${timeoutMs} ms (console: ${lastLine(console) || 'empty'}${stderr ? `; qemu: ${lastLine(stderr)}` : ''})`);
      }, timeoutMs);
    });
    return await Promise.race([hello.catch(() => timeout), consoleShowsInit, exited, timeout]);
  } finally {
    clearTimeout(timer);
    clearInterval(poll);
    (conn as AgentConnection | null)?.close();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  }
}

function lastLine(text: string): string {
  return text.trim().split('\n').filter(Boolean).at(-1)?.trim().slice(0, 300) ?? '';
}
