import type { Command } from 'commander';
import type { CliContext } from './context.js';
import { exitCodeOf } from './exec-command.js';

/** The terminal's end-of-input character (^D): what a piped stdin's EOF becomes. */
const EOT = '\x04';
/** Output silence after which the remote side is taken to be waiting for input. */
const QUIET_MS = 300;

/**
 * `sandbox shell SB [-- argv...]`: an interactive terminal in the sandbox (the user's login shell
 * unless a command is given). On a terminal, stdin goes raw so every key (Ctrl-C included) reaches
 * the sandbox, and window size changes follow; the terminal is restored on the way out. A piped
 * stdin is typed in as is; once it ends, ^D is typed each time the terminal falls quiet after output
 * (a ^D typed ahead is lost when a line editor such as bash's switches the terminal to raw mode, so
 * one sent at the end could be ignored). Exits with the remote command's exit code.
 */
export function registerShellCommand(sandbox: Command, ctx: CliContext): void {
  sandbox
    .command('shell')
    .description('open an interactive terminal in a sandbox (a login shell unless a command is given)')
    .argument('<sandbox>', 'sandbox id or name')
    .argument('[argv...]', 'command and arguments, after --; default the login shell')
    .addHelpText('after', `\nExamples:\n  prismctl sandbox shell my-sb\n  prismctl sandbox shell my-sb -- python3\n  echo 'uname -a; exit' | prismctl sandbox shell my-sb`)
    .action(async (ref: string, argv: string[], _flags: object, cmd: Command) => {
      const io = ctx.io;
      const term = io.terminal;
      const sb = await ctx.client(cmd).sandboxes.get(ref);
      let lastOutput = Date.now();
      let outputSinceEot = true;
      const onData = (c: Uint8Array) => {
        lastOutput = Date.now();
        outputSinceEot = true;
        io.stdout.write(c);
      };
      const pty = await sb.pty({ ...(term?.size() ?? { cols: 80, rows: 24 }), ...(argv.length ? { cmd: argv } : {}), onData });
      term?.setRaw(true);
      const stopResize = term?.onResize(() => {
        const s = term.size();
        pty.resize(s.cols, s.rows);
      });
      let eotTimer: NodeJS.Timeout | undefined;
      void (async () => {
        for await (const chunk of io.stdin) pty.write(typeof chunk === 'string' ? chunk : new Uint8Array(chunk));
        if (term) return;
        eotTimer = setInterval(() => {
          if (!outputSinceEot || Date.now() - lastOutput < QUIET_MS) return;
          outputSinceEot = false;
          pty.write(EOT);
        }, QUIET_MS / 3);
      })().catch(() => pty.close());
      try {
        ctx.exitCode = exitCodeOf(await pty.wait());
      } finally {
        clearInterval(eotTimer);
        stopResize?.();
        term?.setRaw(false);
      }
    });
}
