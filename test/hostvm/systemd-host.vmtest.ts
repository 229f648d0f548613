/**
 * Runs inside the host VM (scripts/host-vm.sh): a stock Debian 12 server with systemd as PID 1 and
 * cgroup v2 only, after the README's quick start ran there (test/hostvm/inside.sh). Checks what a user
 * of such a server relies on: prismd is a systemd service, restarting it keeps sandboxes and their
 * files, the sandboxes are systemd scopes outside prismd's unit, and deletes leave no cgroup behind.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const API = `http://${process.env.PRISM_API ?? '127.0.0.1:8008'}`;
const DATA_DIR = process.env.PRISM_DATA_DIR ?? '/var/lib/prism';
const token = () => readFileSync(`${DATA_DIR}/admin-token`, 'utf8').trim();

async function api<T = any>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const r = await fetch(`${API}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token()}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await r.text();
  return { status: r.status, body: (text ? JSON.parse(text) : undefined) as T };
}

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' }).trim();

async function waitHealthy(timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await fetch(`${API}/api/v1/health`).then((r) => r.ok, () => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`prismd not healthy within ${timeoutMs} ms: ${spawnSync('journalctl', ['-u', 'prismd', '-n', '30', '--no-pager'], { encoding: 'utf8' }).stdout}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Scopes (sandboxes and VMs) systemd holds for Prism. */
function prismScopes(): string[] {
  const slice = '/sys/fs/cgroup/prism.slice';
  if (!existsSync(slice)) return [];
  return readdirSync(slice).filter((n) => n.endsWith('.scope'));
}

describe('a cgroup v2 + systemd server', () => {
  it('is what users run: systemd as PID 1, only the unified cgroup hierarchy', () => {
    expect(readFileSync('/proc/1/comm', 'utf8').trim()).toBe('systemd');
    expect(sh('stat', ['-fc', '%T', '/sys/fs/cgroup'])).toBe('cgroup2fs');
    const v1 = readFileSync('/proc/mounts', 'utf8').split('\n').filter((l) => l.split(' ')[2] === 'cgroup');
    expect(v1).toEqual([]);
  });

  it('the quick start left prismd running as an enabled systemd service, with prismd and prismctl on PATH', () => {
    expect(sh('systemctl', ['is-active', 'prismd'])).toBe('active');
    expect(sh('systemctl', ['is-enabled', 'prismd'])).toBe('enabled');
    expect(sh('bash', ['-lc', 'command -v prismd && command -v prismctl']).split('\n')).toHaveLength(2);
    const out = readFileSync('/tmp/quickstart.out', 'utf8');
    expect(out).toMatch(/^42$/m);
    // Its start blocks the event loop for longer than the member TTL under emulation: the store credits
    // its leases that time, so the lone node never loses its own membership or leadership.
    const journal = sh('journalctl', ['-u', 'prismd', '--no-pager', '-o', 'cat']);
    expect(journal).toContain('prismd ready');
    expect(journal).not.toMatch(/membership lease expired|no longer the scheduler leader/);
  });

  it('prismd doctor passes', () => {
    const r = spawnSync('bash', ['-lc', 'prismd doctor'], { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/cgroup/i);
  });

  it('sandboxes are systemd scopes outside prismd.service, limited as asked', async () => {
    const sb = (await api('POST', '/sandboxes', { name: 'scoped', memoryMb: 96, cpus: 0.5, pidsLimit: 40 })).body;
    try {
      expect(sb.status).toBe('running');
      const dir = `/sys/fs/cgroup/prism.slice/prism-${sb.id}.scope`;
      expect(readFileSync(`${dir}/memory.max`, 'utf8').trim()).toBe(String(96 * 1024 * 1024));
      expect(readFileSync(`${dir}/pids.max`, 'utf8').trim()).toBe('40');
      expect(readFileSync(`${dir}/cpu.max`, 'utf8').trim()).toBe('50000 100000');
      const service = sh('systemctl', ['show', '-p', 'ControlGroup', '--value', 'prismd']);
      const procs = readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n').filter(Boolean);
      expect(procs.length).toBeGreaterThan(0);
      for (const pid of procs) expect(readFileSync(`/proc/${pid}/cgroup`, 'utf8')).not.toContain(service);
      // The sandbox sees its own cgroup as the root (a cgroup namespace), not the host's tree.
      const seen = await api('POST', `/sandboxes/${sb.id}/exec`, { command: 'cat /proc/self/cgroup' });
      expect(seen.body.stdout).toBe('0::/\n');
    } finally {
      await api('DELETE', `/sandboxes/${sb.id}`);
    }
  });

  it('kills a memory hog at its limit and reports it as OOM (memory.events), the sandbox living on', async () => {
    const sb = (await api('POST', '/sandboxes', { name: 'hog', memoryMb: 64 })).body;
    try {
      const r = await api('POST', `/sandboxes/${sb.id}/exec`, { cmd: ['python3', '-c', 'b = []\nwhile True: b.append(bytearray(16 << 20))'], timeoutSec: 120 });
      expect(r.body).toMatchObject({ oomKilled: true, timedOut: false, exitCode: 137, signal: 'SIGKILL', limitExceeded: 'OOM_KILLED' });
      const dir = `/sys/fs/cgroup/prism.slice/prism-${sb.id}.scope`;
      expect(readFileSync(`${dir}/memory.events`, 'utf8')).toMatch(/^oom_kill [1-9]/m);
      expect((await api('POST', `/sandboxes/${sb.id}/exec`, { command: 'echo alive' })).body.stdout).toBe('alive\n');
    } finally {
      await api('DELETE', `/sandboxes/${sb.id}`);
    }
  });

  it('holds a fork storm at pidsLimit (pids.max), and stats come from the v2 files', async () => {
    const sb = (await api('POST', '/sandboxes', { name: 'storm', pidsLimit: 48 })).body;
    try {
      const dir = `/sys/fs/cgroup/prism.slice/prism-${sb.id}.scope`;
      const storm = api('POST', `/sandboxes/${sb.id}/exec`, { cmd: ['python3', '-c', 'import os\nwhile True:\n  try: os.fork()\n  except OSError: pass'], timeoutSec: 8 });
      let peak = 0;
      for (const deadline = Date.now() + 6000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 200))) {
        peak = Math.max(peak, Number(readFileSync(`${dir}/pids.current`, 'utf8')));
      }
      expect(peak).toBeGreaterThan(10);
      expect(peak).toBeLessThanOrEqual(48);
      expect(Number(readFileSync(`${dir}/pids.events`, 'utf8').match(/^max (\d+)/m)?.[1])).toBeGreaterThan(0);
      expect((await storm).body.timedOut).toBe(true);
      // Node info reads the host's usage; the sandbox's memory is what its cgroup says.
      expect(Number(readFileSync(`${dir}/memory.current`, 'utf8'))).toBeGreaterThan(0);
      expect(readFileSync(`${dir}/cpu.stat`, 'utf8')).toMatch(/^usage_usec [1-9]/m);
      const node = (await api('GET', '/nodes')).body.nodes[0];
      expect(node.resources.memoryUsedBytes).toBeGreaterThan(0);
    } finally {
      await api('DELETE', `/sandboxes/${sb.id}`);
    }
  });

  it('systemctl restart prismd keeps a running sandbox, its processes and its files', async () => {
    const sb = (await api('POST', '/sandboxes', { name: 'survivor' })).body;
    try {
      await api('POST', `/sandboxes/${sb.id}/exec`, { command: 'echo kept > /tmp/marker' });
      const initBefore = readFileSync(`/sys/fs/cgroup/prism.slice/prism-${sb.id}.scope/cgroup.procs`, 'utf8').split('\n')[0];
      const mainBefore = sh('systemctl', ['show', '-p', 'MainPID', '--value', 'prismd']);
      execFileSync('systemctl', ['restart', 'prismd']);
      await waitHealthy();
      expect(sh('systemctl', ['show', '-p', 'MainPID', '--value', 'prismd'])).not.toBe(mainBefore);
      const after = await api('GET', `/sandboxes/${sb.id}`);
      expect(after.body.status).toBe('running');
      expect(readFileSync(`/sys/fs/cgroup/prism.slice/prism-${sb.id}.scope/cgroup.procs`, 'utf8').split('\n')[0]).toBe(initBefore);
      const r = await api('POST', `/sandboxes/${sb.id}/exec`, { command: 'cat /tmp/marker' });
      expect(r.body.stdout).toBe('kept\n');
    } finally {
      await api('DELETE', `/sandboxes/${sb.id}`);
    }
  });

  it('deleting sandboxes leaves nothing under /sys/fs/cgroup and no scope unit', async () => {
    const before = prismScopes();
    const ids: string[] = [];
    for (const name of ['gone-1', 'gone-2']) ids.push((await api('POST', '/sandboxes', { name })).body.id);
    expect(prismScopes().length).toBe(before.length + 2);
    for (const id of ids) expect((await api('DELETE', `/sandboxes/${id}`)).status).toBeLessThan(300);
    for (const id of ids) {
      expect(existsSync(`/sys/fs/cgroup/prism.slice/prism-${id}.scope`)).toBe(false);
      // Not merely inactive: gone from systemd (a unit left `failed` would stay listed until reset).
      const unit = () => spawnSync('systemctl', ['show', '-p', 'LoadState', '--value', `prism-${id}.scope`], { encoding: 'utf8' }).stdout.trim();
      for (const deadline = Date.now() + 20_000; unit() !== 'not-found' && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 200));
      expect(unit()).toBe('not-found');
    }
    expect(prismScopes()).toEqual(before);
  });
});
