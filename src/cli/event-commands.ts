import type { Command } from 'commander';
import type { LifecycleEvent, LifecycleEventType } from '../sdk/index.js';
import type { CliContext } from './context.js';

/** `prismctl events [--sandbox S] [--type T,...] [--count N]`: lifecycle events as they happen. */
export function registerEventCommands(program: Command, ctx: CliContext): void {
  program
    .command('events')
    .description('stream lifecycle events as they happen (a sandbox created, each new status, deleted; a node dead) until Ctrl-C')
    .option('-s, --sandbox <sandbox>', 'only this sandbox (id or name)')
    .option('-t, --type <types>', 'only these types, comma-separated (created, running, stopped, paused, failed, lost, deleted, node-dead, ...)')
    .option('-n, --count <n>', 'stop after this many events', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new Error(`--count must be a positive whole number, got '${v}'`);
      return n;
    })
    .action(async (opts: { sandbox?: string; type?: string; count?: number }, cmd: Command) => {
      const stop = new AbortController();
      const onInt = () => stop.abort();
      process.once('SIGINT', onInt);
      try {
        const types = opts.type?.split(',').map((t) => t.trim()).filter(Boolean) as LifecycleEventType[] | undefined;
        let seen = 0;
        for await (const e of ctx.client(cmd).events({ ...(opts.sandbox ? { sandbox: opts.sandbox } : {}), ...(types?.length ? { types } : {}), signal: stop.signal })) {
          if (ctx.format(cmd) === 'json') ctx.io.stdout.write(`${JSON.stringify(e)}\n`);
          else ctx.out(eventLine(e));
          if (opts.count && ++seen >= opts.count) break;
        }
      } finally {
        process.off('SIGINT', onInt);
        stop.abort();
      }
    });
}

/** `TIME  TYPE  NAME (ID)  on NODE  [CODE: message]`; a node's event: `TIME  node-dead  node NAME (ID)`. */
export function eventLine(e: LifecycleEvent): string {
  if (e.sandboxId === undefined) return `${e.time}  ${e.type.padEnd(9)} node ${e.nodeName ? `${e.nodeName} (${e.node})` : e.node}`;
  const who = e.name ? `${e.name} (${e.sandboxId})` : e.sandboxId;
  const where = e.node ? ` on ${e.node}` : '';
  const why = e.error ? `  ${e.error.code}: ${e.error.message}` : '';
  return `${e.time}  ${e.type.padEnd(9)} ${who}${where}${why}`;
}
