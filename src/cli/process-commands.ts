import { constants } from 'node:os';
import type { Command } from 'commander';
import { PROCESS_SIGNALS } from '../core/types.js';
import type { ProcessInfo, ProcessSignal } from '../sdk/index.js';
import { UsageError, parseNumber, type CliContext } from './context.js';
import { age, humanBytes, humanMs, renderTable, shellJoin, wireOutput } from './output.js';

/** `TERM`, `sigterm`, `SIGTERM` all name SIGTERM; only the signals the API takes. */
export function parseSignal(s: string): ProcessSignal {
  const name = s.toUpperCase().startsWith('SIG') ? s.toUpperCase() : `SIG${s.toUpperCase()}`;
  if (!(PROCESS_SIGNALS as readonly string[]).includes(name)) {
    throw new UsageError(`unknown signal '${s}' (one of ${PROCESS_SIGNALS.map((x) => x.slice(3)).join(', ')})`);
  }
  return name as ProcessSignal;
}

/** The shell's convention for a process that ended: its code, or 128+N for signal N. */
export function processExitCode(p: ProcessInfo): number {
  if (p.exitCode !== undefined && p.exitCode >= 0 && p.exitCode <= 255) return p.exitCode;
  const n = p.signal ? constants.signals[p.signal as keyof typeof constants.signals] : undefined;
  return n !== undefined ? 128 + n : 1;
}

function outcome(p: ProcessInfo): string {
  if (p.status === 'running') return 'running';
  const why = p.error?.code ?? (p.limitExceeded ? p.limitExceeded : undefined);
  const how = p.signal ? p.signal : `exit ${p.exitCode}`;
  return why ? `${how} (${why})` : how;
}

/** `sandbox ps|output|kill|wait`: background processes, started with `sandbox exec --background`. */
export function registerProcessCommands(sandbox: Command, ctx: CliContext): void {
  sandbox
    .command('ps')
    .description('list background processes of a sandbox (running and recently exited)')
    .argument('<sandbox>', 'sandbox id or name')
    .action(async (ref: string, _o: unknown, cmd: Command) => {
      const procs = (await (await ctx.client(cmd).sandboxes.get(ref)).processes.list()).map((p) => p.info);
      if (ctx.format(cmd) === 'json') return ctx.json({ processes: procs });
      const now = new Date();
      ctx.out(
        renderTable(
          ['ID', 'STATUS', 'AGE', 'OUTPUT', 'COMMAND'],
          procs.map((p) => [p.id, outcome(p), age(p.startedAt, now), humanBytes(p.stdoutBytes + p.stderrBytes), shellJoin(p.cmd)]),
        ),
      );
    });

  sandbox
    .command('output')
    .description("print a background process's output (what the daemon still holds), or follow it until it exits")
    .argument('<sandbox>', 'sandbox id or name')
    .argument('<process>', 'process id (from exec --background or ps)')
    .option('-f, --follow', 'keep printing output as it comes, until the process exits (then exit with its code)')
    .action(async (ref: string, pid: string, f: { follow?: boolean }, cmd: Command) => {
      const p = await (await ctx.client(cmd).sandboxes.get(ref)).processes.get(pid);
      const warnDropped = (stream: string, n: number) => {
        if (n > 0) ctx.io.stderr.write(`prismctl: ${humanBytes(n)} of ${stream} were dropped before this point (the daemon keeps only the last part)\n`);
      };
      if (!f.follow) {
        const o = await p.output({ since: 0 });
        if (ctx.format(cmd) === 'json') return ctx.json({ ...wireOutput(o.stdout, o.stderr), next: o.next, dropped: o.dropped, process: o.process });
        warnDropped('stdout', o.dropped.stdout);
        warnDropped('stderr', o.dropped.stderr);
        ctx.io.stdout.write(o.stdout);
        ctx.io.stderr.write(o.stderr);
        return;
      }
      for await (const ev of p.stream({ since: 0 })) {
        if (ev.type === 'exit') {
          if (ctx.format(cmd) === 'json') ctx.json(ev.process);
          ctx.exitCode = processExitCode(ev.process);
          return;
        }
        warnDropped(ev.type, ev.dropped);
        (ev.type === 'stdout' ? ctx.io.stdout : ctx.io.stderr).write(ev.data);
      }
    });

  sandbox
    .command('kill')
    .description('send a signal to a background process')
    .argument('<sandbox>', 'sandbox id or name')
    .argument('<process>', 'process id')
    .option('-s, --signal <signal>', 'TERM, KILL, INT, HUP, USR1, ... (default TERM)', 'TERM')
    .action(async (ref: string, pid: string, f: { signal: string }, cmd: Command) => {
      const sig = parseSignal(f.signal);
      const p = await (await ctx.client(cmd).sandboxes.get(ref)).processes.get(pid);
      const info = await p.signal(sig);
      if (ctx.format(cmd) === 'json') return ctx.json(info);
      ctx.out(`sent ${sig} to ${pid}`);
    });

  sandbox
    .command('wait')
    .description('wait for a background process to exit; exits with its code')
    .argument('<sandbox>', 'sandbox id or name')
    .argument('<process>', 'process id')
    .option('--timeout <sec>', 'give up after this many seconds (exit 124, the process keeps running)', parseNumber('float'))
    .action(async (ref: string, pid: string, f: { timeout?: number }, cmd: Command) => {
      if (f.timeout !== undefined && f.timeout <= 0) throw new UsageError('--timeout must be more than 0');
      const p = await (await ctx.client(cmd).sandboxes.get(ref)).processes.get(pid);
      let info: ProcessInfo;
      try {
        info = await p.wait(f.timeout === undefined ? {} : { timeoutMs: f.timeout * 1000 });
      } catch (e) {
        if ((e as { code?: string }).code !== 'DEADLINE_EXCEEDED') throw e;
        ctx.io.stderr.write(`prismctl: ${pid} still runs after ${f.timeout}s\n`);
        ctx.exitCode = 124; // timeout(1)'s code
        return;
      }
      if (ctx.format(cmd) === 'json') ctx.json(info);
      else ctx.out(`${pid}: ${outcome(info)}${info.durationMs !== undefined ? ` after ${humanMs(info.durationMs)}` : ''}`);
      ctx.exitCode = processExitCode(info);
    });
}
