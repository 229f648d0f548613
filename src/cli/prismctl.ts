import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { CliContext, DEFAULT_API, printError, UsageError, type CliIo } from './context.js';
import { registerImageCommands } from './image-commands.js';
import { registerNodeCommands } from './node-commands.js';
import { registerEventCommands } from './event-commands.js';
import { registerSandboxCommands } from './sandbox-commands.js';
import { registerTokenCommands } from './token-commands.js';
import { registerVolumeCommands } from './volume-commands.js';

const VERSION = '0.1.0';

function buildProgram(ctx: CliContext): Command {
  const program = new Command('prismctl')
    .description('Control a Prism sandbox cluster')
    .version(VERSION, '-v, --version')
    .addOption(
      new Option('--api <host:port>', `daemon address (env PRISM_API, default ${DEFAULT_API})`),
    )
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
    .addOption(new Option('--ca <file>', 'trust this CA certificate (PEM) for an https:// daemon (env PRISM_CA)'))
    .addOption(new Option('--token <token>', "API token (env PRISM_TOKEN; default: the one 'prismctl login' saved)"))
    // Settings copied into every subcommand, so they must come before the commands are added.
    .exitOverride()
    .configureOutput({
      writeOut: (s) => ctx.io.stdout.write(s),
      writeErr: (s) => ctx.io.stderr.write(s),
    })
    .showHelpAfterError('(run with --help for usage)');
  registerNodeCommands(program, ctx);
  registerEventCommands(program, ctx);
  registerSandboxCommands(program, ctx);
  registerImageCommands(program, ctx);
  registerVolumeCommands(program, ctx);
  registerTokenCommands(program, ctx);
  return program;
}

/**
 * Runs prismctl with `argv` as in `process.argv` (node, script, args...) and resolves to the exit code:
 * 0 ok, 1 an API or connection error, 2 a usage error, or the remote command's code for `sandbox exec`.
 */
export async function main(argv: string[], io: CliIo = processIo()): Promise<number> {
  const ctx = new CliContext(io);
  try {
    await buildProgram(ctx).parseAsync(argv, { from: 'node' });
    return ctx.exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander already printed its message; help and version requests are not failures.
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? 0 : 2;
    }
    printError(io, e);
    return e instanceof UsageError ? 2 : 1;
  }
}

function processIo(): CliIo {
  const io: CliIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env };
  if (process.stdin.isTTY && process.stdout.isTTY) {
    const stdin = process.stdin;
    io.terminal = {
      setRaw: (on) => stdin.setRawMode(on),
      size: () => ({ cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 }),
      onResize: (cb) => {
        process.on('SIGWINCH', cb);
        return () => process.off('SIGWINCH', cb);
      },
    };
  }
  return io;
}

/** True when node was started on this file (directly or through a symlink), not when it is imported. */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  const code = await main(process.argv);
  process.exitCode = code;
}
