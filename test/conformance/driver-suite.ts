/**
 * The RuntimeDriver contract (src/runtime/driver.ts) as tests. Every driver runs this suite from its
 * own integration test with a rootfs that has a POSIX shell at /bin/sh and the usual utilities
 * (cat, echo, printf, sleep, dd, head). What only one driver can check (its mounts, its cgroups) it
 * reports through the fixture's `leaks`, so "nothing left behind" is asserted here for every driver.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrismError, type ErrorCode } from '../../src/core/errors.js';
import type { ExecOptions, RuntimeDriver, TaskHandle, TaskSpec } from '../../src/runtime/driver.js';

export interface DriverFixture {
  driver: RuntimeDriver;
  /** Image layers, lowest first, of a rootfs with /bin/sh. */
  layers: string[];
  cleanup(): Promise<void>;
  /** A second driver instance on the same node state, as after a daemon restart. */
  reopen?(): Promise<RuntimeDriver>;
  /** Whatever of task `id` still exists on the host (mounts, cgroups, processes, files); [] when none. */
  leaks?(id: string): Promise<string[]>;
}

const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

async function expectCode(p: Promise<unknown>, ...codes: ErrorCode[]): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err, `expected a PrismError ${codes.join('|')}`).toBeInstanceOf(PrismError);
  expect(codes).toContain((err as PrismError).code);
}

/** Fails instead of hanging until the test timeout, so the failure says what did not happen. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export function driverConformanceSuite(name: string, make: () => Promise<DriverFixture>): void {
  describe(`RuntimeDriver conformance: ${name}`, () => {
    let fx: DriverFixture;
    let driver: RuntimeDriver;
    let shared: TaskHandle;
    const created = new Map<string, TaskHandle>();

    const spec = (over: Partial<TaskSpec> = {}): TaskSpec => ({
      id: `conf-${randomBytes(4).toString('hex')}`,
      hostname: 'sandbox',
      layers: fx.layers,
      env: { PATH, HOME: '/root', SPEC_ONLY: 'from-spec' },
      workdir: '/',
      cpus: 1,
      memoryMb: 256,
      pidsLimit: 256,
      diskMb: 512,
      maxOpenFiles: 1024,
      ...over,
    });

    async function create(over: Partial<TaskSpec> = {}): Promise<TaskHandle> {
      const s = spec(over);
      created.set(s.id, { id: s.id, runtime: driver.name, spec: s, data: {} });
      const handle = await driver.create(s);
      created.set(s.id, handle);
      return handle;
    }

    async function destroy(handle: TaskHandle): Promise<void> {
      await driver.destroy(handle);
      created.delete(handle.id);
    }

    /** Runs a command to completion, reading both streams while it runs. */
    async function run(handle: TaskHandle, argv: string[], opts: Partial<ExecOptions> & { input?: Buffer } = {}, d = driver) {
      const proc = await d.exec(handle, { argv, env: { PATH, ...opts.env }, cwd: opts.cwd ?? '/', stdin: opts.input !== undefined });
      const collect = async (s: NodeJS.ReadableStream) => {
        const chunks: Buffer[] = [];
        for await (const c of s) chunks.push(Buffer.from(c as Buffer));
        return Buffer.concat(chunks);
      };
      const out = collect(proc.stdout);
      const err = collect(proc.stderr);
      if (opts.input !== undefined) proc.stdin!.end(opts.input);
      const result = await proc.result;
      return { ...result, stdout: await out, stderr: await err };
    }

    const sh = (handle: TaskHandle, script: string, opts: Partial<ExecOptions> & { input?: Buffer } = {}) =>
      run(handle, ['/bin/sh', '-c', script], opts);

    async function expectNoLeaks(id: string): Promise<void> {
      expect(await driver.listTasks()).not.toContain(id);
      expect(await driver.inspect({ id, runtime: driver.name, spec: spec({ id }), data: {} })).toBe('gone');
      if (fx.leaks) expect(await fx.leaks(id)).toEqual([]);
    }

    beforeAll(async () => {
      fx = await make();
      driver = fx.driver;
      shared = await create();
    });

    afterAll(async () => {
      for (const handle of created.values()) await driver?.destroy(handle).catch(() => {});
      await fx?.cleanup();
    });

    it('runs a command and returns its output and exit code 0', async () => {
      const r = await run(shared, ['echo', 'hello', 'world']);
      expect(r.stdout.toString()).toBe('hello world\n');
      expect(r.stderr.length).toBe(0);
      expect(r.exitCode).toBe(0);
      expect(r.signal).toBeUndefined();
      expect(r.oomKilled).toBe(false);
      expect(await driver.inspect(shared)).toBe('running');
    });

    it('reaps orphans: a finished background child leaves no zombie', async () => {
      await sh(shared, 'sleep 0.2 >/dev/null 2>&1 & exit 0');
      await sleep(500);
      const r = await sh(shared, 'for s in /proc/[0-9]*/stat; do cat $s; echo; done');
      const states = r.stdout.toString().trim().split('\n').map((l) => l.slice(l.lastIndexOf(')') + 2, l.lastIndexOf(')') + 3));
      expect(states).not.toContain('Z');
    });

    it('propagates exit codes and signals', async () => {
      expect((await sh(shared, 'exit 3')).exitCode).toBe(3);
      const killed = await sh(shared, 'kill -9 $$');
      expect(killed.exitCode).toBe(137);
      expect(killed.signal).toBe('SIGKILL');
      expect(killed.oomKilled).toBe(false);
    });

    it('keeps stdout and stderr separate and byte-exact', async () => {
      const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const script = 'i=0; while [ $i -lt 256 ]; do printf "\\\\$(printf %o $i)"; i=$((i+1)); done; echo err-line >&2';
      const r = await sh(shared, script);
      expect(r.stdout.equals(all)).toBe(true);
      expect(r.stderr.toString()).toBe('err-line\n');
      const rev = await sh(shared, 'echo out-line; ' + script.replace('echo err-line >&2', '').replace('done;', 'done >&2;'));
      expect(rev.stderr.equals(all)).toBe(true);
      expect(rev.stdout.toString()).toBe('out-line\n');
    });

    it('delivers stdin and 10 MiB of output completely', async () => {
      const blob = randomBytes(10 * 1024 * 1024);
      const out = await sh(shared, 'cat', { input: blob });
      expect(out.stdout.length).toBe(blob.length);
      expect(sha256(out.stdout)).toBe(sha256(blob));
      const err = await sh(shared, 'cat >&2', { input: blob });
      expect(sha256(err.stderr)).toBe(sha256(blob));
      expect(err.stdout.length).toBe(0);
    });

    it('holds a command back while its output is not read, then delivers every byte (back-pressure)', async () => {
      // Far more than every buffer between the command and the reader: its pipe, the exec agent's
      // buffers and flow-control window, the transport (unix sockets, a virtio queue, the engine's stream).
      const size = 16 * 2 ** 20;
      const made = await sh(shared, `head -c ${size} /dev/urandom > /tmp/bp.bin && sha256sum /tmp/bp.bin; rm -f /tmp/bp.pid /tmp/bp.done`);
      expect(made.exitCode).toBe(0);
      const want = made.stdout.toString().split(' ')[0];
      const proc = await driver.exec(shared, {
        argv: ['/bin/sh', '-c', 'cat /tmp/bp.bin & echo $! > /tmp/bp.pid; wait; echo done > /tmp/bp.done; echo done >&2'],
        env: { PATH }, cwd: '/', stdin: false,
      });
      let err = '';
      proc.stderr.on('data', (c: Buffer) => (err += c.toString()));
      try {
        // stdout has no reader. Seen from inside: the writer's byte count (wchar) and whether it finished.
        const probe = async () => {
          const r = await sh(shared, 'test -f /tmp/bp.done && echo done; sed -n "s/^wchar: //p" /proc/$(cat /tmp/bp.pid)/io');
          const [first = '', second] = r.stdout.toString().trim().split('\n');
          return first === 'done' ? { done: true, wchar: Number(second) } : { done: false, wchar: Number(first) };
        };
        await waitFor('the writer to start', async () => (await sh(shared, 'test -s /tmp/bp.pid')).exitCode === 0);
        // A writer held back stops moving; one that is not runs on until it is done. Which is first?
        let last = await probe();
        for (let i = 0; i < 60; i++) {
          await sleep(1000);
          const now = await probe();
          if (now.done || now.wchar === last.wchar) {
            last = now;
            break;
          }
          last = now;
        }
        expect(last.done, 'the command finished although nobody read its output').toBe(false);
        expect(last.wchar).toBeLessThan(size);
        const chunks: Buffer[] = [];
        proc.stdout.on('data', (c: Buffer) => chunks.push(c));
        const r = await within(proc.result, 60_000, 'the result once the output is read');
        expect(r.exitCode).toBe(0);
        const got = Buffer.concat(chunks);
        expect(got.length).toBe(size);
        expect(sha256(got)).toBe(want);
        expect(err).toBe('done\n');
      } finally {
        proc.stdout.resume();
        proc.kill();
        await proc.result;
        await sh(shared, 'rm -f /tmp/bp.bin /tmp/bp.pid /tmp/bp.done');
      }
    }, 180_000);

    it('gives stdin EOF when no input is requested', async () => {
      const r = await sh(shared, 'cat; echo done');
      expect(r.stdout.toString()).toBe('done\n');
    });

    it('applies the exec environment (complete, not merged) and cwd', async () => {
      const r = await sh(shared, 'echo "$FOO|${SPEC_ONLY-unset}|$(pwd)"', { env: { FOO: 'b a r' }, cwd: '/tmp' });
      expect(r.stdout.toString()).toBe('b a r|unset|/tmp\n');
    });

    it('creates the task workdir and sets the hostname', async () => {
      const h = await create({ workdir: '/home/work/dir', hostname: 'conf-host' });
      try {
        const r = await sh(h, 'pwd; hostname', { cwd: '/home/work/dir' });
        expect(r.stdout.toString()).toBe('/home/work/dir\nconf-host\n');
      } finally {
        await destroy(h);
      }
    });

    it('reports a missing executable as exit 126/127 with a message', async () => {
      const r = await run(shared, ['/no/such/binary', 'x']);
      expect([126, 127]).toContain(r.exitCode);
      expect(r.stderr.toString()).toMatch(/no such file|not found/i);
      const badCwd = await run(shared, ['true'], { cwd: '/no/such/dir' });
      expect(badCwd.exitCode).not.toBe(0);
      expect(badCwd.stderr.toString()).toMatch(/no such file|not found/i);
      expect((await run(shared, ['true'])).exitCode).toBe(0);
    });

    it('has no network but an up loopback', async () => {
      const r = await sh(shared, 'cat /proc/net/dev; cat /sys/class/net/lo/flags');
      const lines = r.stdout.toString().trim().split('\n');
      const ifaces = lines.slice(2, -1).map((l) => l.split(':')[0]!.trim());
      expect(ifaces).toEqual(['lo']);
      expect(Number(lines.at(-1)) & 1).toBe(1);
    });

    it('kill() ends the command and every process it started', async () => {
      // The trailing echo stops shells from exec'ing the last command in place of themselves.
      const proc = await driver.exec(shared, { argv: ['/bin/sh', '-c', 'sleep 1000 & sleep 1000; echo unreachable'], env: { PATH }, cwd: '/', stdin: false });
      proc.stderr.resume();
      await waitFor('sh and both sleeps', async () => (await driver.stats(shared)).pids >= 4);
      const chunks: Buffer[] = [];
      proc.stdout.on('data', (c: Buffer) => chunks.push(c));
      proc.kill();
      // A surviving child would keep stdout open, and the result would never come.
      const r = await within(proc.result, 10_000, 'the result after kill()');
      expect(Buffer.concat(chunks).toString()).toBe('');
      expect(r.signal).toBe('SIGKILL');
      expect(r.exitCode).toBe(137);
      await waitFor('only init left', async () => (await driver.stats(shared)).pids === 1, 5000);
      const ps = await sh(shared, 'for p in /proc/[0-9]*; do cat $p/cmdline; echo; done');
      expect(ps.stdout.toString()).not.toContain('sleep');
    });

    it('runs a shell on a terminal: isatty, window size, resize, Ctrl-C, signals, exit code', async () => {
      const proc = await driver.exec(shared, { argv: ['/bin/sh'], env: { PATH, PS1: '$ ' }, cwd: '/', stdin: true, tty: { cols: 80, rows: 24 } });
      let out = '';
      let err = '';
      proc.stdout.on('data', (c: Buffer) => (out += c.toString('latin1')));
      proc.stderr.on('data', (c: Buffer) => (err += c.toString('latin1')));
      // Markers are computed by the shell, so the terminal's echo of what we type never matches them.
      const expectOut = (re: RegExp, what: string) =>
        waitFor(what, () => re.test(out), 20_000).catch((e: Error) => {
          throw new Error(`${e.message}; output so far: ${JSON.stringify(out.slice(-400))}`);
        });
      const type = (s: string) => proc.stdin!.write(s);
      try {
        expect(proc.resize).toBeTypeOf('function');
        type('test -t 0 && test -t 1 && test -t 2 && echo "TT""Y-$((1+1))"; echo "TERM=[$TERM]"; stty size\n');
        await expectOut(/TTY-2/, 'isatty on fds 0-2');
        await expectOut(/TERM=\[xterm-256color\]/, 'TERM set');
        await expectOut(/[\r\n]24 80\r\n/, 'the initial size');
        // A foreground job waiting for SIGWINCH (an interactive shell's line editor may keep it to itself).
        type(`sh -c 'trap "echo W\\"\\"INCH-\\$(stty size); exit 0" WINCH; echo "RE""ADY-$((1+1))"; while :; do sleep 1; done'\n`);
        await expectOut(/READY-2/, 'the job waiting for SIGWINCH');
        proc.resize!(100, 30);
        await expectOut(/WINCH-30 100/, 'SIGWINCH to the foreground job, with the new size');
        type('stty size\n');
        await expectOut(/[\r\n]30 100\r\n/, 'the new size in the shell');
        // 0x03 through the line discipline interrupts the foreground job, not the shell.
        // Whether a live (not zombie) `sleep` runs in the sandbox. (Counting pids raced: a command the
        // shell had not reaped yet, or one exiting, made the count before `sleep 100` as high as after.)
        const sleepRuns = async () =>
          (await sh(shared, 'for p in /proc/[0-9]*; do read c < $p/comm && [ "$c" = sleep ] && read s < $p/stat && case "$s" in *") Z "*) ;; *) exit 0 ;; esac; done 2>/dev/null; exit 1')).exitCode === 0;
        const sleeping = async (what: string, marker: string, re: RegExp) => {
          type(`echo "${marker.slice(0, 2)}""${marker.slice(2)}"; sleep 100\n`);
          await expectOut(re, what);
          await waitFor(what, sleepRuns);
        };
        // The new pid can show before the shell made sleep the terminal's foreground job; an interrupt
        // sent in that window reaches the interactive shell, which ignores it. So interrupt until the
        // shell answers: each try either ends sleep or is ignored, and the shell must survive all.
        // (The line is typed after each interrupt: a ^C flushes what was typed before it.)
        const interruptUntil = async (interrupt: () => void, line: string, re: RegExp, what: string) => {
          for (let i = 0; i < 10 && !re.test(out); i++) {
            interrupt();
            type(line);
            await waitFor(what, () => re.test(out), 2000).catch(() => undefined);
          }
          await expectOut(re, what);
        };
        await sleeping('sleep 100 started', 'START-$((1+2))', /START-3/);
        await interruptUntil(() => type('\x03'), 'echo "ALI""VE-$((2+3))"\n', /ALIVE-5/, 'the shell after Ctrl-C');
        // A signal by kill() goes to the foreground job too.
        await sleeping('sleep 100 started again', 'START-$((3+4))', /START-7/);
        await interruptUntil(() => proc.kill('SIGINT'), 'echo "AGA""IN-$((4+5))"\n', /AGAIN-9/, 'the shell after SIGINT by kill()');
        type('exit 7\n');
        const r = await within(proc.result, 20_000, 'the exit of the shell');
        expect(r.exitCode).toBe(7);
        expect(err).toBe('');
      } finally {
        proc.kill();
        await proc.result;
      }
      // A background writer that outlives the command and keeps the terminal busy does not hold back its exit.
      const bg = await driver.exec(shared, {
        argv: ['/bin/sh', '-c', "(trap '' HUP; while :; do echo y; done) & echo $! > /tmp/tty-writer.pid; sleep 0.2; exit 3"],
        env: { PATH }, cwd: '/', stdin: true, tty: { cols: 80, rows: 24 },
      });
      bg.stdout.resume(); // stderr is left unread: on a tty it is empty and needs no reader
      try {
        expect((await within(bg.result, 10_000, 'the exit despite a background writer')).exitCode).toBe(3);
      } finally {
        await sh(shared, 'kill -9 $(cat /tmp/tty-writer.pid); rm /tmp/tty-writer.pid');
      }
    });

    it('reports usage: memory, page cache, CPU time, and the writable layer by its size and use', async () => {
      const before = await driver.stats(shared);
      expect(before.diskTotalBytes).toBeGreaterThan(0.8 * 512 * 2 ** 20);
      expect(before.diskTotalBytes).toBeLessThanOrEqual(512 * 2 ** 20);
      expect((await sh(shared, 'dd if=/dev/zero of=/usage.bin bs=1048576 count=16 && sync')).exitCode).toBe(0);
      const after = await driver.stats(shared);
      await sh(shared, 'rm -f /usage.bin');
      expect(after.diskUsedBytes - before.diskUsedBytes).toBeGreaterThanOrEqual(15 * 2 ** 20);
      expect(after.memoryBytes).toBeGreaterThan(0);
      expect(after.memoryCacheBytes).toBeLessThanOrEqual(after.memoryBytes);
      expect(after.cpuUsageNs).toBeGreaterThan(before.cpuUsageNs);
    });

    it('enforces the memory limit and reports an OOM kill', async () => {
      const h = await create({ memoryMb: 64 });
      try {
        expect((await driver.stats(h)).memoryLimitBytes).toBe(64 * 1024 * 1024);
        // dd allocates one block of bs bytes and fills it: 256 MiB of really touched memory.
        const r = await sh(h, 'dd if=/dev/zero of=/dev/null bs=268435456 count=1');
        expect(r.oomKilled).toBe(true);
        expect(r.signal).toBe('SIGKILL');
        expect((await run(h, ['echo', 'alive'])).stdout.toString()).toBe('alive\n');
        expect((await sh(h, 'exit 0')).oomKilled).toBe(false);
      } finally {
        await destroy(h);
      }
    });

    it('contains a fork flood within pidsLimit and stays usable', async () => {
      const h = await create({ pidsLimit: 64 });
      try {
        const proc = await driver.exec(h, {
          argv: ['/bin/sh', '-c', 'i=0; while [ $i -lt 300 ]; do sleep 3 & i=$((i+1)); done; wait'],
          env: { PATH }, cwd: '/', stdin: false,
        });
        proc.stdout.resume();
        proc.stderr.resume();
        let peak = 0;
        let finished = false;
        void proc.result.then(() => (finished = true));
        // The sleeps outlive the shell (it may die of its first failed fork), so sample for a while.
        const until = Date.now() + 1000;
        while (!finished || Date.now() < until) {
          peak = Math.max(peak, (await driver.stats(h).catch(() => ({ pids: 0 }))).pids);
          await sleep(20);
        }
        expect(peak).toBeGreaterThan(32);
        expect(peak).toBeLessThanOrEqual(64);
        await waitFor('the flood to end', async () => (await driver.stats(h)).pids === 1);
        expect((await run(h, ['echo', 'alive'])).stdout.toString()).toBe('alive\n');
      } finally {
        await destroy(h);
      }
    });

    it('keeps files across execs and across stop/start; stop and start are idempotent', async () => {
      const h = await create();
      try {
        await sh(h, 'echo persisted > /root-file.txt; mkdir -p /data && echo deep > /data/f');
        expect((await sh(h, 'cat /root-file.txt')).stdout.toString()).toBe('persisted\n');
        await driver.stop(h);
        await driver.stop(h);
        expect(await driver.inspect(h)).toBe('stopped');
        await expectCode(driver.exec(h, { argv: ['true'], env: { PATH }, cwd: '/', stdin: false }), 'FAILED_PRECONDITION');
        await expectCode(driver.stats(h), 'FAILED_PRECONDITION');
        await driver.start(h);
        await driver.start(h);
        expect(await driver.inspect(h)).toBe('running');
        expect((await sh(h, 'cat /root-file.txt /data/f')).stdout.toString()).toBe('persisted\ndeep\n');
      } finally {
        await destroy(h);
      }
    });

    it('reports the end of a watched task once, and nothing after an unwatch (watchExit)', async (ctx) => {
      if (!driver.watchExit) return ctx.skip();
      const h = await create();
      try {
        const ends: string[] = [];
        expect(await driver.watchExit(h, (why) => ends.push(why))).toBe(true);
        await sh(h, 'true');
        expect(ends).toEqual([]);
        await driver.stop(h);
        await within((async () => { while (ends.length === 0) await new Promise((r) => setTimeout(r, 10)); })(), 10_000, 'the exit event');
        expect(ends).toEqual(['exited']);
        await driver.start(h);
        const later: string[] = [];
        expect(await driver.watchExit(h, (why) => later.push(why))).toBe(true);
        driver.unwatchExit?.(h);
        await driver.stop(h);
        await new Promise((r) => setTimeout(r, 200));
        expect(later).toEqual([]);
        expect(ends).toEqual(['exited']);
      } finally {
        await destroy(h);
      }
    });

    it('pauses keeping the processes and their memory, stays paused across a new driver instance, resumes where it was', async (ctx) => {
      if (!driver.capabilities().pause || !driver.pause || !driver.resume) return ctx.skip();
      const h = await create();
      try {
        // A counter kept in the shell's memory, written out every 50 ms.
        const loop = await driver.exec(h, { argv: ['/bin/sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done'], env: { PATH }, cwd: '/', stdin: false });
        loop.stdout.resume();
        loop.stderr.resume();
        const count = async () => Number((await sh(h, 'cat /tmp/count')).stdout.toString());
        // The loop's shell (the pattern does not match this finder's own command line).
        const pid = async () => (await sh(h, "for p in /proc/[0-9]*; do grep -q 'do [i]=' $p/cmdline 2>/dev/null && echo ${p#/proc/}; done")).stdout.toString().trim();
        await waitFor('the counter', async () => (await count()) > 3);
        const pidBefore = await pid();
        // The loop's own pace on this host (slow under emulation), to tell a frozen counter from a running one.
        const c0 = await count();
        const r0 = Date.now();
        await sleep(500);
        const before = await count();
        const tBefore = Date.now();
        const perMs = (before - c0) / (tBefore - r0);
        await driver.pause(h);
        await driver.pause(h); // idempotent
        expect(await driver.inspect(h)).toBe('paused');
        const d2 = fx.reopen ? await fx.reopen() : driver;
        expect(await d2.recover(h)).toBe('paused');
        expect(await driver.inspect(h)).toBe('paused');
        await sleep(1500);
        await driver.resume(h);
        await driver.resume(h); // idempotent
        expect(await driver.inspect(h)).toBe('running');
        // Frozen for 1.5 s of the time since `before`: the counter went on from where it was (not from
        // 0), short of where it would be had it run all along.
        const after = await count();
        const elapsed = Date.now() - tBefore;
        expect(after).toBeGreaterThanOrEqual(before);
        expect(after - before).toBeLessThan(Math.max(1, perMs * (elapsed - 1000)) + 2);
        expect(await pid()).toBe(pidBefore);
        await waitFor('the counter to go on', async () => (await count()) > after + 3);
        // A paused task stops like any other.
        await driver.pause(h);
        await driver.stop(h);
        expect(await driver.inspect(h)).toBe('stopped');
        await expectCode(driver.pause(h), 'FAILED_PRECONDITION');
      } finally {
        await driver.destroy(h);
      }
    });

    it('recovers running and stopped tasks from a new driver instance', async () => {
      const stopped = await create();
      try {
        await driver.stop(stopped);
        const d2 = fx.reopen ? await fx.reopen() : driver;
        expect(await d2.recover(shared)).toBe('running');
        expect(await d2.recover(stopped)).toBe('stopped');
        const r = await run(shared, ['echo', 'after restart'], {}, d2);
        expect(r.stdout.toString()).toBe('after restart\n');
        expect(await d2.listTasks()).toEqual(expect.arrayContaining([shared.id, stopped.id]));
        await d2.start(stopped);
        expect((await run(stopped, ['echo', 'restarted'], {}, d2)).exitCode).toBe(0);
        // The "restarted daemon" hands back, as a daemon shutting down would.
        if (d2 !== driver) await d2.close();
      } finally {
        await destroy(stopped);
      }
      expect(await driver.recover(stopped)).toBe('gone');
    });

    it('lists tasks and rejects a duplicate id without harming the original', async () => {
      expect(await driver.listTasks()).toContain(shared.id);
      await expectCode(driver.create({ ...shared.spec }), 'ALREADY_EXISTS');
      expect((await run(shared, ['echo', 'still here'])).stdout.toString()).toBe('still here\n');
    });

    it('destroy removes everything, is idempotent, and works on running tasks', async () => {
      const h = await create();
      const bg = await driver.exec(h, { argv: ['/bin/sh', '-c', 'sleep 1000'], env: { PATH }, cwd: '/', stdin: false });
      bg.stdout.resume();
      bg.stderr.resume();
      await destroy(h);
      // The command ran, so its result resolves (killed) rather than rejects.
      expect((await bg.result).exitCode).not.toBe(0);
      await expectNoLeaks(h.id);
      await driver.destroy(h);
      await driver.destroy({ ...h, id: 'conf-never-created' });
      await expectCode(driver.exec(h, { argv: ['true'], env: { PATH }, cwd: '/', stdin: false }), 'NOT_FOUND', 'FAILED_PRECONDITION');
    });

    it('a failed create throws a PrismError and leaves nothing behind', async () => {
      const s = spec({ layers: [...fx.layers, `/nonexistent-layer-${randomBytes(4).toString('hex')}`] });
      await expectCode(driver.create(s), 'FAILED_PRECONDITION', 'INVALID_ARGUMENT', 'NOT_FOUND', 'INTERNAL');
      await expectNoLeaks(s.id);
      // Fails late (the workdir cannot be created under a file), after layers, mounts and cgroups exist.
      const late = spec({ workdir: '/bin/sh/sub' });
      await expectCode(driver.create(late), 'FAILED_PRECONDITION', 'INVALID_ARGUMENT', 'INTERNAL');
      await expectNoLeaks(late.id);
    });
  });
}
