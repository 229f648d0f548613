import { constants } from 'node:os';
import type { Command } from 'commander';
import type { ExecResult } from '../sdk/index.js';
import { collect, parseEnvPairs, parseNumber, UsageError, type CliContext, type CliIo } from './context.js';
import { humanMs, wireOutput } from './output.js';

interface ExecFlags {
  command?: string;
  env?: string[];
  cwd?: string;
  timeout?: number;
  stdin?: boolean;
  background?: boolean;
}

/** `sandbox exec SB --command "sh string"` or `sandbox exec SB -- argv...`; exits with the command's code. */
export function registerExecCommand(sandbox: Command, ctx: CliContext): void {
  sandbox
    .command('exec')
    .description('run a command in a sandbox, streaming its output')
    .argument('<sandbox>', 'sandbox id or name')
    .argument('[argv...]', 'command and arguments, after --; run without a shell')
    .option('-c, --command <sh>', 'command line run by the sandbox shell')
    .option('--env <key=value>', 'environment variable (repeatable)', collect)
    .option('--cwd <dir>', 'working directory')
    .option('--timeout <sec>', 'kill the command after this many seconds', parseNumber('int'))
    .option('-i, --stdin', 'send piped stdin to the command')
    .option('-b, --background', 'start it as a background process and print its id (see sandbox ps/output/kill/wait)')
    .addHelpText('after', `\nExamples:\n  prismctl sandbox exec my-sb --command "python3 -c 'print(42)'"\n  prismctl sandbox exec my-sb -- python3 -c 'print(42)'\n  echo hi | prismctl sandbox exec my-sb -i -- cat`)
    .action(async (ref: string, argv: string[], f: ExecFlags, cmd: Command) => {
      if (f.command !== undefined && argv.length > 0) {
        throw new UsageError('give the command either with --command or after --, not both');
      }
      if (f.command === undefined && argv.length === 0) {
        throw new UsageError("no command: use --command \"...\" or put the command after '--'");
      }
      const stdin = f.stdin ? await readStdin(ctx.io) : undefined;
      const sb = await ctx.client(cmd).sandboxes.get(ref);
      const json = ctx.format(cmd) === 'json';
      if (f.background) {
        const p = await sb.processes.start(f.command ?? argv, { env: parseEnvPairs(f.env), cwd: f.cwd, timeoutSec: f.timeout, stdin });
        if (json) ctx.json(p.info);
        else ctx.out(p.id);
        return;
      }
      const result = await sb.exec(f.command ?? argv, {
        env: parseEnvPairs(f.env),
        cwd: f.cwd,
        timeoutSec: f.timeout,
        stdin,
        // JSON output needs the whole result, so stream only for people.
        ...(json
          ? {}
          : {
              onStdout: (chunk: Uint8Array) => ctx.io.stdout.write(chunk),
              onStderr: (chunk: Uint8Array) => ctx.io.stderr.write(chunk),
            }),
      });
      if (json) {
        const { text: _text, ...rest } = result;
        ctx.json({ ...rest, ...wireOutput(result.stdout, result.stderr) });
      }
      if (result.timedOut) {
        ctx.io.stderr.write(`prismctl: command timed out after ${humanMs(result.durationMs)} and was killed\n`);
      }
      if (result.oomKilled) {
        ctx.io.stderr.write('prismctl: command was killed for running out of memory (sandbox memory limit)\n');
      }
      ctx.exitCode = exitCodeOf(result);
    });
}

/** A terminal on stdin is not forwarded: there is no EOF to wait for, and exec is not interactive. */
async function readStdin(io: CliIo): Promise<Uint8Array | undefined> {
  if (io.stdin.isTTY) {
    io.stderr.write('prismctl: --stdin ignored: stdin is a terminal, not a pipe or file\n');
    return undefined;
  }
  const chunks: Buffer[] = [];
  for await (const chunk of io.stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk));
  return new Uint8Array(Buffer.concat(chunks));
}

/** Shell convention: the command's code when it is one, 128+N when a signal killed it. */
export function exitCodeOf(r: Pick<ExecResult, 'exitCode' | 'signal'>): number {
  if (Number.isInteger(r.exitCode) && r.exitCode >= 0 && r.exitCode <= 255) return r.exitCode;
  const n = r.signal ? constants.signals[r.signal as keyof typeof constants.signals] : undefined;
  return n !== undefined ? 128 + n : 1;
}
