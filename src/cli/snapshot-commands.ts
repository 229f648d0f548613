import type { Command } from 'commander';
import { PrismApiError } from '../sdk/index.js';
import { parseNumber, printError, type CliContext } from './context.js';
import { age, humanBytes, renderTable } from './output.js';

/** `sandbox snapshot`, `sandbox fork` (under `sandbox`), and `snapshot ls|rm`. */
export function registerSnapshotCommands(program: Command, sandbox: Command, ctx: CliContext): void {
  sandbox
    .command('snapshot')
    .description("take a snapshot of a sandbox's files (create sandboxes from it with 'sandbox create --snapshot ID')")
    .argument('<sandbox>', 'sandbox id or name')
    .option('--name <name>', 'a label for the snapshot')
    .action(async (ref: string, f: { name?: string }, cmd: Command) => {
      const snap = await (await ctx.client(cmd).sandboxes.get(ref)).snapshot(f.name ? { name: f.name } : {});
      if (ctx.format(cmd) === 'json') return ctx.json(snap);
      ctx.out(`${snap.id} (${snap.name}): ${humanBytes(snap.size)} of changes over ${snap.sandboxName}'s image, on node ${snap.node}`);
    });

  sandbox
    .command('fork')
    .description('new sandboxes with the files, resources, environment and network of a sandbox')
    .argument('<sandbox>', 'sandbox id or name')
    .option('--count <n>', 'how many (1-16, default 1)', parseNumber('int'))
    .action(async (ref: string, f: { count?: number }, cmd: Command) => {
      const r = await (await ctx.client(cmd).sandboxes.get(ref)).fork(f.count ?? 1);
      if (ctx.format(cmd) === 'json') return ctx.json({ sandboxes: r.sandboxes.map((s) => s.info), snapshot: r.snapshot, memory: r.memory });
      for (const s of r.sandboxes) ctx.out(`${s.name} (${s.id}): ${s.status}`);
      ctx.out(`from snapshot ${r.snapshot.id}; files only, not running processes`);
    });

  const snapshot = program.command('snapshot').alias('snap').description('list and remove snapshots');
  snapshot
    .command('ls')
    .alias('list')
    .description('list snapshots')
    .action(async (_f: unknown, cmd: Command) => {
      const list = await ctx.client(cmd).snapshots.list();
      if (ctx.format(cmd) === 'json') return ctx.json({ snapshots: list });
      const now = new Date();
      ctx.out(renderTable(['ID', 'NAME', 'FROM', 'NODE', 'SIZE', 'AGE'], list.map((s) => [s.id, s.name, s.sandboxName, s.node, humanBytes(s.size), age(s.createdAt, now)])));
    });
  snapshot
    .command('rm')
    .alias('delete')
    .description('remove snapshots (refused while a sandbox created from one exists)')
    .argument('<id...>', 'snapshot ids')
    .action(async (ids: string[], _f: unknown, cmd: Command) => {
      const client = ctx.client(cmd);
      for (const id of ids) {
        try {
          await client.snapshots.delete(id);
          if (ctx.format(cmd) === 'table') ctx.out(`deleted ${id}`);
        } catch (e) {
          if (!(e instanceof PrismApiError)) throw e;
          printError(ctx.io, e);
          ctx.exitCode = 1;
        }
      }
    });
}
