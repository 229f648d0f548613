/**
 * The official E2B SDKs, unchanged (npm e2b@2.51.0 and e2b@2.50.0, pinned test fixtures), against a
 * real prismd on the oci runtime through its E2B gateway: what a program written for E2B does after
 * setting E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY.
 */
import { Sandbox, CommandExitError, AuthenticationError, NotFoundError, SandboxNotFoundError, FileNotFoundError } from 'e2b';
import { Sandbox as Sandbox250 } from 'e2b-2-50';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, integrationSkipReason, startPrismd, type Prismd } from '../integration/prismd-harness.js';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping E2B SDK tests: ${skip}`);

describe.skipIf(!!skip)('the official e2b SDK against prismd (oci)', () => {
  let d: Prismd;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string; requestTimeoutMs: number };

  beforeAll(async () => {
    d = await startPrismd({ extraArgs: ['--metrics-interval', '1'] });
    opts = { apiKey: d.token, apiUrl: `${d.url}/e2b`, sandboxUrl: `${d.url}/e2b/envd`, requestTimeoutMs: 60_000 };
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('creates, gets info, lists, sets the timeout and kills; the sandbox is a Prism sandbox', async () => {
    const sbx = await Sandbox.create({ ...opts, metadata: { user: 'u 1', run: 'a' }, envs: { FOO: 'bar' }, timeoutMs: 120_000 });
    try {
      expect(sbx.sandboxId).toMatch(/^[a-z0-9]/);
      const prism = await call(d.url, 'GET', `/sandboxes/${sbx.sandboxId}`);
      expect(prism.body).toMatchObject({ status: 'running', runtime: 'oci', metadata: { user: 'u 1', run: 'a' }, onTimeout: 'delete', timeoutSec: 120 });
      const info = await sbx.getInfo();
      expect(info).toMatchObject({ sandboxId: sbx.sandboxId, templateId: 'base', metadata: { user: 'u 1', run: 'a' }, state: 'running' });
      expect(info.endAt.getTime() - info.startedAt.getTime()).toBe(120_000);
      expect(await sbx.isRunning()).toBe(true);

      const listed = await Sandbox.list({ ...opts, query: { metadata: { user: 'u 1' } } }).nextItems();
      expect(listed.map((s) => s.sandboxId)).toEqual([sbx.sandboxId]);
      expect(await Sandbox.list({ ...opts, query: { metadata: { user: 'nobody' } } }).nextItems()).toEqual([]);

      await sbx.setTimeout(600_000);
      const after = await sbx.getInfo();
      expect(after.endAt.getTime()).toBeGreaterThan(Date.now() + 590_000);

      const again = await Sandbox.connect(sbx.sandboxId, opts);
      expect((await again.commands.run('echo $FOO')).stdout).toBe('bar\n');
    } finally {
      expect(await sbx.kill()).toBe(true);
    }
    expect(await Sandbox.kill(sbx.sandboxId, opts)).toBe(false);
    expect((await call(d.url, 'GET', `/sandboxes/${sbx.sandboxId}`)).status).toBe(404);
    await expect(Sandbox.getInfo(sbx.sandboxId, opts)).rejects.toBeInstanceOf(SandboxNotFoundError);
    expect(await sbx.isRunning()).toBe(false);
  });

  it('refuses a wrong API key with AuthenticationError, and envd calls without the access token', async () => {
    await expect(Sandbox.create({ ...opts, apiKey: 'prism_nope_nope' })).rejects.toBeInstanceOf(AuthenticationError);
    const sbx = await Sandbox.create(opts);
    try {
      const r = await fetch(`${d.url}/e2b/envd/filesystem.Filesystem/Stat`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'e2b-sandbox-id': sbx.sandboxId, 'x-api-key': d.token },
        body: JSON.stringify({ path: '/' }),
      });
      expect(r.status).toBe(401);
    } finally {
      await sbx.kill();
    }
  });

  describe('in one sandbox', () => {
    let sbx: Sandbox;
    beforeAll(async () => {
      sbx = await Sandbox.create(opts);
    });
    afterAll(async () => {
      await sbx?.kill();
    });

    it('runs commands: output, exit codes as CommandExitError, cwd, envs, root', async () => {
      const r = await sbx.commands.run('echo out; echo err >&2');
      expect(r).toMatchObject({ exitCode: 0, stdout: 'out\n', stderr: 'err\n' });
      const failed = await sbx.commands.run('exit 3').catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(CommandExitError);
      expect(failed).toMatchObject({ exitCode: 3 });
      expect((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout).toBe('/tmp\n');
      expect((await sbx.commands.run('echo $A-$B', { envs: { A: '1', B: '2' } })).stdout).toBe('1-2\n');
      expect((await sbx.commands.run('id -u', { user: 'root' })).stdout).toBe('0\n');
      expect((await sbx.commands.run('id -u')).stdout).not.toBe('0\n');
    });

    it('streams output as it comes', async () => {
      const chunks: Array<{ at: number; text: string }> = [];
      await sbx.commands.run('echo one; sleep 2; echo two', { onStdout: (t) => void chunks.push({ at: Date.now(), text: t }) });
      expect(chunks.map((c) => c.text).join('')).toBe('one\ntwo\n');
      expect(chunks.length).toBeGreaterThanOrEqual(2);
      expect(chunks[chunks.length - 1]!.at - chunks[0]!.at).toBeGreaterThan(1000);
    });

    it('keeps a background command past its client, lists it, takes stdin, connects again and kills it', async () => {
      const h = await sbx.commands.run('read line; echo got:$line; sleep 600', { background: true, stdin: true, timeoutMs: 0 });
      expect(h.pid).toBeGreaterThan(0);
      const listed = await sbx.commands.list();
      expect(listed.map((p) => p.pid)).toContain(h.pid);
      expect(listed.find((p) => p.pid === h.pid)).toMatchObject({ cmd: '/bin/bash', args: ['-l', '-c', 'read line; echo got:$line; sleep 600'] });
      await h.disconnect();
      await sbx.commands.sendStdin(h.pid, 'hello\n');
      const seen: string[] = [];
      const again = await sbx.commands.connect(h.pid, { onStdout: (t) => void seen.push(t), timeoutMs: 0 });
      // The echo came before the connect or after it; either way the process still runs.
      expect((await sbx.commands.list()).map((p) => p.pid)).toContain(h.pid);
      expect(await sbx.commands.kill(h.pid)).toBe(true);
      const end = await again.wait().catch((e: unknown) => e);
      expect(end).toBeInstanceOf(CommandExitError);
      expect(end).toMatchObject({ exitCode: -1, error: 'signal: killed' });
      expect((await sbx.commands.list()).map((p) => p.pid)).not.toContain(h.pid);
      expect(await sbx.commands.kill(h.pid)).toBe(false);
    });

    it('runs a PTY that outlives its stream: input, resize, reconnect, kill', async () => {
      let screen = '';
      const onData = (d: Uint8Array) => void (screen += Buffer.from(d).toString());
      const term = await sbx.pty.create({ cols: 80, rows: 24, onData, timeoutMs: 0 });
      const waitFor = async (re: RegExp) => {
        for (const deadline = Date.now() + 20_000; !re.test(screen) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 50));
        expect(screen).toMatch(re);
      };
      await sbx.pty.sendInput(term.pid, new TextEncoder().encode('tty; echo sum=$((6*7))\n'));
      await waitFor(/sum=42/);
      expect(screen).toMatch(/\/dev\/pts\//);
      await sbx.pty.resize(term.pid, { cols: 100, rows: 30 });
      await term.disconnect();
      screen = '';
      const again = await sbx.pty.connect(term.pid, { onData, timeoutMs: 0 });
      await sbx.pty.sendInput(term.pid, new TextEncoder().encode('stty size\n'));
      await waitFor(/30 100/);
      expect(await sbx.pty.kill(term.pid)).toBe(true);
      await again.wait().catch(() => undefined);
      expect((await sbx.commands.list()).map((p) => p.pid)).not.toContain(term.pid);
    });

    it('writes and reads files, text and binary byte-exact, several at once, relative to home', async () => {
      await sbx.files.write('/tmp/a.txt', 'héllo\n');
      expect(await sbx.files.read('/tmp/a.txt')).toBe('héllo\n');
      const bytes = new Uint8Array(70_000).map((_, i) => (i * 7919) % 256);
      await sbx.files.write('/tmp/b.bin', bytes.buffer);
      expect(Buffer.from(await sbx.files.read('/tmp/b.bin', { format: 'bytes' })).equals(Buffer.from(bytes))).toBe(true);
      const many = await sbx.files.write([
        { path: '/tmp/m/one.txt', data: '1' },
        { path: 'rel/two.txt', data: '2' },
      ]);
      expect(many.map((w) => w.name)).toEqual(['one.txt', 'two.txt']);
      expect(await sbx.files.read('/tmp/m/one.txt')).toBe('1');
      expect(await sbx.files.read('rel/two.txt')).toBe('2');
      expect((await sbx.commands.run('cat rel/two.txt')).stdout).toBe('2');
      await expect(sbx.files.read('/tmp/none')).rejects.toBeInstanceOf(FileNotFoundError);
      // Raw uploads: gzip-compressed, and a stream.
      await sbx.files.write('/tmp/g.txt', 'zipped '.repeat(1000), { gzip: true });
      expect(await sbx.files.read('/tmp/g.txt', { gzip: true })).toBe('zipped '.repeat(1000));
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          for (let i = 0; i < 5; i++) c.enqueue(new TextEncoder().encode(`chunk${i};`));
          c.close();
        },
      });
      await sbx.files.write('/tmp/s.txt', stream);
      expect(await sbx.files.read('/tmp/s.txt')).toBe('chunk0;chunk1;chunk2;chunk3;chunk4;');
    });

    it('lists, stats, makes dirs, renames and removes', async () => {
      expect(await sbx.files.makeDir('/tmp/d/e')).toBe(true);
      expect(await sbx.files.makeDir('/tmp/d/e')).toBe(false);
      await sbx.files.write('/tmp/d/e/f.txt', 'abc');
      const list = await sbx.files.list('/tmp/d', { depth: 2 });
      expect(list.map((e) => [e.name, e.type, e.path])).toEqual([
        ['e', 'dir', '/tmp/d/e'],
        ['f.txt', 'file', '/tmp/d/e/f.txt'],
      ]);
      const info = await sbx.files.getInfo('/tmp/d/e/f.txt');
      expect(info).toMatchObject({ name: 'f.txt', type: 'file', size: 3, permissions: '-rw-r--r--' });
      expect(info.modifiedTime?.getTime()).toBeGreaterThan(Date.now() - 120_000);
      expect(await sbx.files.exists('/tmp/d/e/f.txt')).toBe(true);
      expect(await sbx.files.exists('/tmp/d/nope')).toBe(false);
      const moved = await sbx.files.rename('/tmp/d/e/f.txt', '/tmp/d/g.txt');
      expect(moved).toMatchObject({ name: 'g.txt', path: '/tmp/d/g.txt' });
      await sbx.files.remove('/tmp/d');
      expect(await sbx.files.exists('/tmp/d')).toBe(false);
      await sbx.files.remove('/tmp/d'); // missing: no error, as envd
      await expect(sbx.files.getInfo('/tmp/d')).rejects.toBeInstanceOf(NotFoundError);
    });

    it('watches a directory, recursively, until stopped', async () => {
      await sbx.files.makeDir('/tmp/w');
      const seen: Array<{ name: string; type: string }> = [];
      let exited: unknown = 'not yet';
      const handle = await sbx.files.watchDir('/tmp/w', (e) => void seen.push({ name: e.name, type: e.type }), {
        recursive: true,
        timeoutMs: 0,
        onExit: (err) => void (exited = err),
      });
      await sbx.files.write('/tmp/w/a.txt', 'x');
      // A new subdirectory is watched once its create event is read: what is written in it before then
      // is not seen (inotify, as envd's fsnotify). Under a loaded CI run that took over the 0 ms the
      // write used to follow the mkdir, so the test leaves the watcher time first.
      await sbx.commands.run('mkdir -p /tmp/w/sub && sleep 0.3 && echo y > /tmp/w/sub/b.txt && sleep 0.2 && mv /tmp/w/a.txt /tmp/w/c.txt && rm /tmp/w/sub/b.txt');
      for (const deadline = Date.now() + 10_000; !seen.some((e) => e.name === 'sub/b.txt' && e.type === 'remove') && Date.now() < deadline; ) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(seen).toContainEqual({ name: 'a.txt', type: 'create' });
      expect(seen).toContainEqual({ name: 'sub', type: 'create' });
      expect(seen).toContainEqual({ name: 'sub/b.txt', type: 'write' });
      expect(seen).toContainEqual({ name: 'a.txt', type: 'rename' });
      expect(seen).toContainEqual({ name: 'c.txt', type: 'create' });
      expect(seen).toContainEqual({ name: 'sub/b.txt', type: 'remove' });
      // No watch helper is left running in the sandbox once stopped (one runs until then).
      const processes = async () => (await sbx.commands.run('for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline; echo; done', { user: 'root' })).stdout;
      expect(await processes()).toContain('fs watch');
      await handle.stop();
      for (const deadline = Date.now() + 5000; Date.now() < deadline; ) {
        if (!(await processes()).includes('fs watch')) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await processes()).toContain('tr');
      expect(await processes()).not.toContain('fs watch');
      await expect(sbx.files.watchDir('/tmp/none', () => undefined)).rejects.toBeInstanceOf(NotFoundError);
      void exited;
    });

    it('serves the signed upload and download URLs the SDK builds at the server root', async () => {
      const up = await sbx.uploadUrl('/tmp/signed.txt');
      expect(new URL(up).pathname).toBe('/files');
      const form = new FormData();
      form.append('file', new Blob(['signed body']), '/tmp/signed.txt');
      expect((await fetch(up, { method: 'POST', body: form })).status).toBe(200);
      const down = await sbx.downloadUrl('/tmp/signed.txt', { useSignatureExpiration: 60_000 });
      const got = await fetch(down);
      expect(got.status).toBe(200);
      expect(await got.text()).toBe('signed body');
      // The signature binds path and operation: another path, or an upload with a download URL, is refused.
      expect((await fetch(down.replace('signed.txt', 'other.txt'))).status).toBe(401);
      expect((await fetch(down, { method: 'POST', body: form })).status).toBe(401);
      expect((await fetch(`${d.url}/files?path=/tmp/signed.txt`)).status).toBe(401);
    });

    it('routes <port>-<id>.<domain> hosts: envd with its token, other ports with the traffic token', async () => {
      const info = await call(d.url, 'GET', `/sandboxes/${sbx.sandboxId}`);
      expect(info.body.network).toEqual({ egress: 'all' });
      // Only the server goes to the background (a trailing `&` would take the whole list, the file's write with it).
      await sbx.commands.run('mkdir -p /tmp/site && echo served > /tmp/site/index.txt && cd /tmp/site && { setsid python3 -m http.server 8000 >/dev/null 2>&1 < /dev/null & }');
      const host = (port: number) => `${port}-${sbx.sandboxId}.sandbox.test`;
      const envdToken = (sbx as unknown as { envdAccessToken?: string }).envdAccessToken;
      const stat = await rawRequest(d.url, { method: 'POST', path: '/filesystem.Filesystem/Stat', host: host(49983), headers: { 'content-type': 'application/json', 'x-access-token': envdToken ?? '' }, body: '{"path":"/tmp/site/index.txt"}' });
      expect(stat.status, stat.body).toBe(200);
      expect(JSON.parse(stat.body).entry).toMatchObject({ name: 'index.txt', type: 'FILE_TYPE_FILE' });
      expect((await rawRequest(d.url, { method: 'POST', path: '/filesystem.Filesystem/Stat', host: host(49983), headers: { 'content-type': 'application/json' }, body: '{"path":"/"}' })).status).toBe(401);
      const traffic = (sbx as unknown as { trafficAccessToken?: string }).trafficAccessToken ?? '';
      expect(traffic).not.toBe('');
      let page = { status: 0, body: '' };
      for (const deadline = Date.now() + 30_000; page.status !== 200 && Date.now() < deadline; ) {
        page = await rawRequest(d.url, { method: 'GET', path: '/index.txt', host: host(8000), headers: { 'e2b-traffic-access-token': traffic } });
        if (page.status !== 200) await new Promise((r) => setTimeout(r, 200));
      }
      expect(page).toEqual({ status: 200, body: 'served\n' });
      expect((await rawRequest(d.url, { method: 'GET', path: '/index.txt', host: host(8000), headers: {} })).status).toBe(401);
      expect((await rawRequest(d.url, { method: 'GET', path: '/index.txt', host: `8000-sb-000000000000.sandbox.test`, headers: { 'e2b-traffic-access-token': traffic } })).status).toBe(502);
    });

    it('reports metrics: CPU of a busy loop, memory, disk written, bounded by start/end', async () => {
      const before = Date.now();
      await sbx.commands.run('dd if=/dev/zero of=/tmp/blob bs=1M count=24 status=none; timeout 2 sh -c "while :; do :; done" || true');
      await new Promise((r) => setTimeout(r, 1200));
      const metrics = await sbx.getMetrics();
      expect(metrics.length).toBeGreaterThan(1);
      const last = metrics.at(-1)!;
      expect(last.timestamp).toBeInstanceOf(Date);
      expect(last).toMatchObject({ cpuCount: 1, memTotal: 512 * 2 ** 20, diskTotal: expect.any(Number) });
      expect(last.memUsed).toBeGreaterThan(0);
      expect(last.diskTotal).toBeGreaterThan(1024 * 2 ** 20); // the 2 GiB writable layer
      expect(last.diskUsed).toBeGreaterThan(24 * 2 ** 20);
      const busy = metrics.filter((m) => m.timestamp.getTime() >= before);
      // An idle sandbox shows ~0 %; the loop gets its fair share of the host's cores, which on a loaded
      // 2-core machine running the suite's other files is well under its 100 % of one CPU.
      expect(Math.max(...busy.map((m) => m.cpuUsedPct))).toBeGreaterThan(10);
      const windowed = await sbx.getMetrics({ start: new Date(before), end: new Date(before + 1500) });
      expect(windowed.length).toBeGreaterThan(0);
      expect(windowed.every((m) => m.timestamp.getTime() >= Math.floor(before / 1000) * 1000 && m.timestamp.getTime() <= before + 2000)).toBe(true);
      await expect(Sandbox.getMetrics('sb-000000000000', opts)).rejects.toBeInstanceOf(SandboxNotFoundError);
    });

    it('serves sandbox logs (v1 and v2) from the commands the sandbox ran', async () => {
      await expect(sbx.commands.run('echo logged; exit 4')).rejects.toBeInstanceOf(CommandExitError);
      const get = async (path: string) => {
        const r = await fetch(`${d.url}/e2b${path}`, { headers: { 'x-api-key': d.token } });
        expect(r.status, path).toBe(200);
        return r.json() as Promise<any>;
      };
      const v1 = await get(`/sandboxes/${sbx.sandboxId}/logs`);
      expect(v1.logs.some((l: { line: string }) => l.line.includes('echo logged; exit 4'))).toBe(true);
      expect(v1.logEntries.at(-1)).toMatchObject({ level: 'warn', message: 'exited with code 4', fields: { event: 'end', exitCode: '4' } });
      const v2 = await get(`/v2/sandboxes/${sbx.sandboxId}/logs?direction=backward&limit=1&level=warn`);
      expect(v2.logs).toEqual([expect.objectContaining({ message: 'exited with code 4' })]);
      expect((await fetch(`${d.url}/e2b/v2/sandboxes/${sbx.sandboxId}/logs?level=loud`, { headers: { 'x-api-key': d.token } })).status).toBe(400);
    });

    it('takes snapshots, lists them, creates from one (files, not memory) and deletes it', async () => {
      await sbx.files.write('snapped.txt', 'from the snapshot');
      const snap = await sbx.createSnapshot({ name: 'e2b-snap' });
      expect(snap).toMatchObject({ snapshotId: expect.stringMatching(/^snap-/), names: ['e2b-snap'] });
      const listed = await sbx.listSnapshots().nextItems();
      expect(listed.map((s) => s.snapshotId)).toContain(snap.snapshotId);
      const child = await Sandbox.create(snap.snapshotId, opts);
      try {
        expect(await child.files.read('snapped.txt')).toBe('from the snapshot');
        await expect(Sandbox.deleteSnapshot(snap.snapshotId, opts)).rejects.toThrow(/in use/);
      } finally {
        await child.kill();
      }
      expect(await Sandbox.deleteSnapshot(snap.snapshotId, opts)).toBe(true);
      expect(await Sandbox.deleteSnapshot(snap.snapshotId, opts)).toBe(false);
      await expect(Sandbox.createSnapshot('sb-000000000000', opts)).rejects.toBeInstanceOf(SandboxNotFoundError);
    });

    it('pauses (memory kept) and resumes on connect; a running command continues', async () => {
      // The loop writes the time (ms) of each tick: a frozen sandbox leaves a hole in the times as long as
      // the pause, however slowly the calls around it go on a loaded host (a tick count did not).
      const h = await sbx.commands.run('while :; do date +%s%3N >> /tmp/ticks; sleep 0.05; done', { background: true, timeoutMs: 0 });
      const ticks = async (s: Sandbox) => (await s.commands.run('cat /tmp/ticks')).stdout.trim().split('\n').map(Number);
      for (const deadline = Date.now() + 10_000; (await ticks(sbx).catch(() => [])).length < 3 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 100));
      expect(await sbx.pause()).toBe(true);
      const pausedAt = Date.now();
      expect(await sbx.pause()).toBe(false); // already paused: E2B's 409
      expect((await sbx.getInfo()).state).toBe('paused');
      expect((await Sandbox.list({ ...opts, query: { state: ['paused'] } }).nextItems()).map((s) => s.sandboxId)).toContain(sbx.sandboxId);
      await new Promise((r) => setTimeout(r, 1000));
      const resumeAt = Date.now();
      const again = await Sandbox.connect(sbx.sandboxId, opts);
      expect((await again.getInfo()).state).toBe('running');
      // (Once seen killed under a loaded CI run, cause unknown: the prismd log says what ended it.)
      let times: number[] = [];
      for (const deadline = Date.now() + 10_000; !(times.at(-1)! > resumeAt) && Date.now() < deadline; ) {
        times = await ticks(again).catch((e: unknown) => {
          throw new Error(`${String(e)}; prismd log: ${d.logs().split('\n').filter((l) => l.includes(sbx.sandboxId) || /"level":[45]/.test(l)).slice(-15).join('\n')}`);
        });
      }
      expect(times.filter((t) => t < pausedAt).length).toBeGreaterThan(2);
      expect(times.filter((t) => t > pausedAt && t < resumeAt), 'ticks while paused').toEqual([]);
      expect(times.at(-1), 'ticks after the resume').toBeGreaterThan(resumeAt);
      expect((await again.commands.list()).map((p) => p.pid)).toContain(h.pid);
      await again.commands.kill(h.pid);
    });
  });

  it('e2b 2.50 (the /sandboxes create and connect paths) works the same', async () => {
    const sbx = await Sandbox250.create({ ...opts, metadata: { sdk: '2.50' } });
    try {
      expect((await sbx.commands.run('echo hi')).stdout).toBe('hi\n');
      const again = await Sandbox250.connect(sbx.sandboxId, opts);
      expect((await again.getInfo()).metadata).toEqual({ sdk: '2.50' });
    } finally {
      expect(await sbx.kill()).toBe(true);
    }
  });
});

/** HTTP with a Host of our choosing (fetch may not set one): what wildcard DNS would send. */
function rawRequest(base: string, o: { method: string; path: string; host: string; headers: Record<string, string>; body?: string }): Promise<{ status: number; body: string }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method: o.method, path: o.path, headers: { ...o.headers, host: o.host } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
    req.end(o.body);
  });
}
