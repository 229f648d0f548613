/**
 * scripts/host-vm.sh: one command through the stock-server VM. It must run under systemd on cgroup v2
 * with the host's node, stream its output while it runs, come back with its exit status, and leave
 * nothing behind, while it proves that Prism runs on such a server: test/hostvm/inside.sh (the README's
 * quick start as a user runs it, then the v2 + systemd suite) must pass there. Under TCG a boot takes a minute or more; the first run on a machine also builds the
 * image (.ci/run builds it before the tests). Needs root, QEMU and debootstrap, else skipped.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from './prismd-harness.js';

function skipReason(): string | null {
  if (process.getuid?.() !== 0) return 'not running as root';
  for (const tool of ['qemu-system-x86_64', 'debootstrap']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} is not installed (scripts/setup.sh installs it)`;
    }
  }
  return null;
}

interface Chunk {
  at: number;
  text: string;
}

function runHostVm(args: string[], tmp: string): Promise<{ code: number | null; out: Chunk[]; err: string; endedAt: number }> {
  return new Promise((resolve, reject) => {
    // The VM's run is the suite's longest file by far, and the other files share the same cores with
    // time to spare: a higher CPU share for QEMU (CFS weight ~3x at nice -5) shortens the whole run.
    const child = spawn('nice', ['-n', '-5', 'bash', join(REPO_ROOT, 'scripts/host-vm.sh'), ...args], { cwd: REPO_ROOT, env: { ...process.env, TMPDIR: tmp } });
    const out: Chunk[] = [];
    let err = '';
    child.stdout.on('data', (b: Buffer) => out.push({ at: Date.now(), text: b.toString() }));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, out, err, endedAt: Date.now() }));
  });
}

/** QEMU processes whose command line mentions `dir` (the run's temp dir lives under it). */
async function qemuUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.startsWith('qemu-system') && cmdline.includes(dir)) found.push(pid);
  }
  return found;
}

const reason = skipReason();
if (reason) console.warn(`skipping host-vm tests: ${reason}`);

/** What the VM's command exits with once the in-VM suite passed: proof the status comes back (any other is a failure). */
const PASSED = 77;

describe.skipIf(!!reason)('scripts/host-vm.sh', () => {
  // One boot (a minute or more under TCG) carries both: the script's own behaviour (systemd, cgroup v2,
  // the checkout, output streamed while the command runs, stderr apart, the exit status returned) and
  // the quick start and the v2 + systemd suite inside.
  it('runs the quick start and the cgroup v2 + systemd suite on a stock Debian 12 server, under systemd, streaming their output and returning their status', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'hostvm-test-'));
    try {
      const script = [
        'cat /proc/1/comm',
        'stat -fc %T /sys/fs/cgroup',
        'node --version',
        'test -f /prism/package.json && test -d /prism/node_modules && echo checkout-ok',
        'echo to-stderr >&2',
        `bash test/hostvm/inside.sh && exit ${PASSED}`,
      ].join('; ');
      // ~15 min here beside the suite's other files; a CI machine was seen running everything 2.5-3.5x
      // slower, which a 40 min cap did not cover. The quick start inside has a bound of its own.
      const r = await runHostVm(['run', '--timeout', '3300', '--', 'bash', '-c', script], tmp);
      const out = r.out.map((c) => c.text).join('');
      // Kept for reading after the run: the in-VM suite's own report, with each test's duration.
      await mkdir(join(REPO_ROOT, '.test-output'), { recursive: true });
      await writeFile(join(REPO_ROOT, '.test-output', 'host-vm.log'), `${out}\n--- stderr ---\n${r.err}`);
      // On failure the VM's own vitest report says what failed; keep its tail in the message.
      const tail = `${out.slice(-6000)}\n${r.err.slice(-2000)}`;
      expect(r.code, tail).toBe(PASSED);
      expect(out, tail).toMatch(/^systemd\ncgroup2fs\nv20\.\d+\.\d+\ncheckout-ok\n/);
      expect(r.err).toContain('to-stderr');
      expect(out, tail).toMatch(/^42$/m);
      expect(out, tail).toMatch(/host-vm: quick start took \d+ s/);
      expect(out, tail).toMatch(/Test Files\s+.*\d+ passed/);
      expect(out, tail).not.toMatch(/Test Files\s+.*failed/);
      // Streamed: the quick start's report reached us long before the command ended, not all at the end.
      const quickStart = r.out.find((c) => c.text.includes('host-vm: quick start took'));
      expect(quickStart, tail).toBeDefined();
      expect(r.endedAt - quickStart!.at, 'the output arrived only at the end').toBeGreaterThan(10_000);
      expect(await readdir(tmp)).toEqual([]);
      expect(await qemuUnder(tmp)).toEqual([]);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }, 3_600_000);
});
