import type { Command } from 'commander';
import type { CreateSandboxOptions, Volume } from '../sdk/index.js';
import { UsageError, parseNumber, printError, type CliContext } from './context.js';
import { age, renderFields, renderTable } from './output.js';

/** `--volume NAME:/path[:ro|:rw]` (repeatable) of `sandbox create`. */
export function volumesFromFlags(flags: string[] | undefined): CreateSandboxOptions['volumes'] {
  if (!flags?.length) return undefined;
  return flags.map((f) => {
    const m = /^([^:]+):(\/[^:]*)(?::(ro|rw))?$/.exec(f);
    if (!m) throw new UsageError(`--volume expects NAME:/path[:ro], got '${f}'`);
    return { name: m[1]!, mountPath: m[2]!, ...(m[3] === 'ro' ? { readOnly: true } : {}) };
  });
}

function describeAttachments(v: Volume): string {
  return v.attachments.map((a) => `${a.sandboxId}:${a.mountPath}${a.readOnly ? ':ro' : ''}`).join(', ') || '-';
}

/** `volume` (alias `vol`) and its subcommands: create, ls, inspect, rm. */
export function registerVolumeCommands(program: Command, ctx: CliContext): void {
  const volume = program.command('volume').alias('vol').description('create, list, inspect and remove volumes (persistent storage for sandboxes)');

  volume
    .command('create <name>')
    .description('create a volume on a node (--node, else the one prismctl talks to); sandboxes that mount it run there')
    .requiredOption('--size <mb>', 'size in MiB: writes past it fail with ENOSPC', parseNumber('int'))
    .option('--multi-attach', 'let several sandboxes mount it read-write at once (containers only)')
    .option('--node <node>', 'the node (id or name, see `prismctl node ls`) to make it on')
    .action(async (name: string, f: { size: number; multiAttach?: boolean; node?: string }, cmd: Command) => {
      const v = await ctx.client(cmd).volumes.create({ name, sizeMb: f.size, ...(f.multiAttach ? { multiAttach: true } : {}), ...(f.node ? { node: f.node } : {}) });
      if (ctx.format(cmd) === 'json') return ctx.json(v);
      ctx.out(`created volume ${v.name} (${v.sizeMb} MiB on node ${v.node})`);
    });

  volume
    .command('ls')
    .alias('list')
    .description('list volumes')
    .action(async (_f: unknown, cmd: Command) => {
      const volumes = await ctx.client(cmd).volumes.list();
      if (ctx.format(cmd) === 'json') return ctx.json({ volumes });
      const now = new Date();
      ctx.out(renderTable(['NAME', 'SIZE', 'NODE', 'MULTI-ATTACH', 'ATTACHED TO', 'AGE'], volumes.map((v) => [
        v.name, `${v.sizeMb} MiB`, v.node, v.multiAttach ? 'yes' : 'no', describeAttachments(v), age(v.createdAt, now),
      ])));
    });

  volume
    .command('inspect <name>')
    .alias('info')
    .description('show one volume and the sandboxes that hold it')
    .action(async (name: string, _f: unknown, cmd: Command) => {
      const v = await ctx.client(cmd).volumes.get(name);
      if (ctx.format(cmd) === 'json') return ctx.json(v);
      ctx.out(renderFields([
        ['Name', v.name], ['Size', `${v.sizeMb} MiB`], ['Node', v.node], ['Multi-attach', v.multiAttach ? 'yes' : 'no'], ['Created', v.createdAt],
      ]) + (v.attachments.length ? renderTable(['SANDBOX', 'MOUNT PATH', 'MODE', 'RUNTIME'], v.attachments.map((a) => [
        a.sandboxId, a.mountPath, a.readOnly ? 'ro' : 'rw', a.runtime,
      ])) : 'Attached to no sandbox\n'));
    });

  volume
    .command('rm <names...>')
    .alias('delete')
    .description('delete volumes and their data (refused while a sandbox has one attached)')
    .action(async (names: string[], _f: unknown, cmd: Command) => {
      const client = ctx.client(cmd);
      const deleted: string[] = [];
      for (const name of names) {
        try {
          await client.volumes.delete(name);
          deleted.push(name);
          if (ctx.format(cmd) === 'table') ctx.out(`deleted volume ${name}`);
        } catch (e) {
          printError(ctx.io, e);
          ctx.exitCode = 1;
        }
      }
      if (ctx.format(cmd) === 'json') ctx.json({ deleted });
    });
}
