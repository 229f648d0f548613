import type { Command } from 'commander';
import type { NodeInfo } from '../sdk/index.js';
import type { CliContext } from './context.js';
import { age, humanBytes, humanDuration, renderFields, renderTable } from './output.js';

/** `info`, `node ls`, `node info NODE`. */
export function registerNodeCommands(program: Command, ctx: CliContext): void {
  program
    .command('info')
    .description('show cluster information')
    .action(async (_opts: unknown, cmd: Command) => {
      const info = await ctx.client(cmd).clusterInfo();
      if (ctx.format(cmd) === 'json') return ctx.json(info);
      const byStatus = Object.entries(info.sandboxes.byStatus)
        .filter(([, n]) => (n ?? 0) > 0)
        .map(([s, n]) => `${s} ${n}`)
        .join(', ');
      ctx.out(
        renderFields([
          ['Version', info.version],
          ['Leader', info.leader || '-'],
          ['Nodes', `${info.nodes} (${info.nodesAlive} alive)`],
          ['Uptime', humanDuration(info.uptimeSec)],
          ['Sandboxes', byStatus ? `${info.sandboxes.total} (${byStatus})` : String(info.sandboxes.total)],
        ]),
      );
    });

  const node = program.command('node').description('inspect the nodes of the cluster');

  node
    .command('ls')
    .alias('list')
    .description('list nodes')
    .action(async (_opts: unknown, cmd: Command) => {
      const nodes = await ctx.client(cmd).nodes.list();
      if (ctx.format(cmd) === 'json') return ctx.json({ nodes });
      const now = new Date();
      ctx.out(
        renderTable(
          ['NAME', 'ID', 'STATUS', 'ADDRESS', 'RUNTIMES', 'CPUS', 'MEMORY', 'LOAD', 'SANDBOXES', 'SEEN', 'AGE'],
          nodes.map((n) => [
            n.name,
            n.id,
            n.status,
            n.address,
            n.runtimes.join(','),
            String(n.resources.cpus),
            `${humanBytes(n.resources.memoryUsedBytes)}/${humanBytes(n.resources.memoryBytes)}`,
            n.resources.load1.toFixed(2),
            String(n.sandboxes),
            `${age(n.heartbeatAt, now)} ago`,
            age(n.startedAt, now),
          ]),
        ),
      );
    });

  node
    .command('info')
    .alias('inspect')
    .description('show one node')
    .argument('<node>', 'node id or name')
    .action(async (idOrName: string, _opts: unknown, cmd: Command) => {
      const n = await ctx.client(cmd).nodes.get(idOrName);
      if (ctx.format(cmd) === 'json') return ctx.json(n);
      ctx.out(renderNode(n));
    });
}

function renderNode(n: NodeInfo): string {
  const r = n.resources;
  const now = new Date();
  return renderFields([
    ['Name', n.name],
    ['ID', n.id],
    ['Status', n.status],
    ['Address', n.address],
    ['Version', n.version],
    ['Runtimes', `${n.runtimes.join(', ')} (default ${n.defaultRuntime})`],
    ...(n.runtimeInfo ?? []).map((r): [string, string] => [
      `  ${r.name}`,
      r.usable
        ? `usable${r.details && Object.keys(r.details).length ? ` (${Object.entries(r.details).map(([k, v]) => `${k}: ${v}`).join('; ')})` : ''}`
        : `not usable: ${r.reason ?? 'unknown'}`,
    ]),
    ['CPUs', String(r.cpus)],
    ['Memory', `${humanBytes(r.memoryUsedBytes)} used of ${humanBytes(r.memoryBytes)}`],
    ['Disk', `${humanBytes(r.diskUsedBytes)} used of ${humanBytes(r.diskBytes)}`],
    ['Load (1m)', r.load1.toFixed(2)],
    ['Sandboxes', String(n.sandboxes)],
    ['Started', `${n.startedAt} (${age(n.startedAt, now)} ago)`],
    ['Heartbeat', `${n.heartbeatAt} (${age(n.heartbeatAt, now)} ago)`],
  ]);
}
