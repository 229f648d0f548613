import { InvalidArgumentError, type Command } from 'commander';
import { PrismApiError, type ClusterInfo, type EtcdMember, type NodeInfo, type Prism } from '../sdk/index.js';
import { allocatable, DEFAULT_CPU_OVERCOMMIT, DEFAULT_MEMORY_OVERCOMMIT } from '../core/types.js';
import { printError, type CliContext } from './context.js';
import { age, humanBytes, humanCpus, humanDuration, labelList, percent, renderFields, renderTable, usedOf } from './output.js';

const MiB = 2 ** 20;

/** `info`, `node ls`, `node info NODE`, `node top [--watch]`, `node rm NODE...`. */
export function registerNodeCommands(program: Command, ctx: CliContext): void {
  program
    .command('info')
    .description('show the cluster: nodes alive and dead, leader, sandboxes by status')
    .action(async (_opts: unknown, cmd: Command) => {
      const client = ctx.client(cmd);
      const [info, nodes, members] = await Promise.all([client.clusterInfo(), client.nodes.list(), client.cluster.members().catch(() => [])]);
      if (ctx.format(cmd) === 'json') return ctx.json(members.length ? { ...info, etcdMembers: members } : info);
      ctx.out(renderClusterInfo(info, nodes, members));
    });

  const cluster = program.command('cluster').description('form the cluster: join tokens, etcd members');

  cluster
    .command('join-token')
    .description('print the token a new node gives prismd --join (--join-token or PRISM_JOIN_TOKEN)')
    .option('--rotate', 'replace it first: the old token stops working at once')
    .action(async (opts: { rotate?: boolean }, cmd: Command) => {
      const client = ctx.client(cmd);
      const token = opts.rotate ? await client.cluster.rotateJoinToken() : await client.cluster.joinToken();
      if (ctx.format(cmd) === 'json') return ctx.json({ token });
      ctx.out(token);
    });

  cluster
    .command('members')
    .description("the cluster's etcd members run by prismd, and their health")
    .action(async (_opts: unknown, cmd: Command) => {
      const members = await ctx.client(cmd).cluster.members();
      if (ctx.format(cmd) === 'json') return ctx.json({ members });
      if (members.length === 0) return ctx.out('no etcd members run by prismd (a single node on SQLite, or an etcd of your own)');
      ctx.out(renderTable(['NAME', 'ID', 'ROLE', 'HEALTH', 'CLIENT', 'PEER'], members.map((m) => [m.name || '(starting)', m.id, m.learner ? 'learner' : 'voter', m.healthy ? 'healthy' : 'UNHEALTHY', m.clientUrls.join(','), m.peerUrls.join(',')])));
    });

  const node = program.command('node').description('inspect the nodes of the cluster');

  node
    .command('ls')
    .alias('list')
    .description('list nodes')
    .action(async (_opts: unknown, cmd: Command) => {
      const nodes = await ctx.client(cmd).nodes.list();
      if (ctx.format(cmd) === 'json') return ctx.json({ nodes });
      ctx.out(renderNodeTable(nodes, new Date()));
    });

  node
    .command('info')
    .alias('inspect')
    .description('show one node: usage, capacity, reservations, labels, runtimes')
    .argument('<node>', 'node id or name')
    .action(async (idOrName: string, _opts: unknown, cmd: Command) => {
      const client = ctx.client(cmd);
      // The leader is only decoration here; a failed cluster query must not hide the node.
      const [n, info] = await Promise.all([client.nodes.get(idOrName), client.clusterInfo().catch(() => undefined)]);
      if (ctx.format(cmd) === 'json') return ctx.json(n);
      ctx.out(renderNode(n, info?.leader === n.id));
    });

  node
    .command('top')
    .description('live usage per node: CPU, memory, disk, sandboxes, reservations')
    .option('-w, --watch [seconds]', 'redraw every N seconds (default 2) until Ctrl-C', positiveSeconds)
    .option('-n, --count <n>', 'with --watch: stop after this many snapshots', positiveSeconds)
    .action(async (opts: { watch?: number | true; count?: number }, cmd: Command) => {
      const interval = opts.watch === undefined ? 0 : opts.watch === true ? 2 : opts.watch;
      await top(ctx, cmd, interval, opts.count);
    });

  node
    .command('rm')
    .alias('remove')
    .description('forget dead nodes (a node must be dead and have no sandboxes)')
    .argument('<node...>', 'node ids or names')
    .action(async (refs: string[], _opts: unknown, cmd: Command) => {
      const client = ctx.client(cmd);
      const removed: string[] = [];
      // As `sandbox rm`: keep going past a failure, exit 1 at the end.
      for (const ref of refs) {
        try {
          await client.nodes.remove(ref);
          removed.push(ref);
          if (ctx.format(cmd) === 'table') ctx.out(`removed node ${ref}`);
        } catch (e) {
          if (!(e instanceof PrismApiError)) throw e;
          printError(ctx.io, e);
          ctx.exitCode = 1;
        }
      }
      if (ctx.format(cmd) === 'json') ctx.json({ removed });
    });
}

function positiveSeconds(value: string): number {
  const n = Number(value);
  if (!/^\d*\.?\d+$/.test(value.trim()) || !(n > 0)) throw new InvalidArgumentError('expected a positive number.');
  return n;
}

/**
 * One snapshot, or with `interval` one per interval: redrawn in place on a terminal, appended
 * otherwise (a log or a pipe keeps every snapshot). In watch mode a failed query is shown and retried,
 * since the node being asked may be restarting; `-o json` then prints one JSON line per snapshot.
 */
async function top(ctx: CliContext, cmd: Command, interval: number, count?: number): Promise<void> {
  const client = ctx.client(cmd);
  const json = ctx.format(cmd) === 'json';
  const tty = Boolean((ctx.io.stdout as { isTTY?: boolean }).isTTY);
  for (let i = 1; ; i++) {
    let text: string;
    try {
      const snap = await snapshot(client);
      if (json) text = interval ? `${JSON.stringify(snap)}\n` : `${JSON.stringify(snap, null, 2)}\n`;
      else text = renderTop(snap.cluster, snap.nodes, new Date());
    } catch (e) {
      if (!interval || !(e instanceof PrismApiError)) throw e;
      text = `error: ${e.message} (${e.code}); retrying in ${interval}s\n`;
    }
    if (json) ctx.io.stdout.write(text);
    else if (interval && tty) ctx.io.stdout.write(`\x1b[H\x1b[2J${text}`);
    else ctx.io.stdout.write(i > 1 ? `\n${text}` : text);
    if (!interval || (count !== undefined && i >= count)) return;
    await new Promise((r) => setTimeout(r, interval * 1000));
  }
}

async function snapshot(client: Prism): Promise<{ cluster: ClusterInfo; nodes: NodeInfo[] }> {
  const [cluster, nodes] = await Promise.all([client.clusterInfo(), client.nodes.list()]);
  return { cluster, nodes };
}

const byName = (a: NodeInfo, b: NodeInfo): number => a.name.localeCompare(b.name);

function sandboxCount(n: NodeInfo): string {
  return n.capacity?.maxSandboxes ? usedOf(n.sandboxes, n.capacity.maxSandboxes) : String(n.sandboxes);
}

/** Reserved against what placement may reserve there (capacity times the node's overcommit). */
function reservedCpu(n: NodeInfo): string {
  return n.capacity ? `${humanCpus(n.reserved?.cpus ?? 0)}/${humanCpus(allocatable(n.capacity).cpus)}` : '-';
}

function reservedMem(n: NodeInfo): string {
  return n.capacity ? usedOf((n.reserved?.memoryMb ?? 0) * MiB, allocatable(n.capacity).memoryMb * MiB, humanBytes) : '-';
}

export function renderNodeTable(nodes: NodeInfo[], now: Date): string {
  return renderTable(
    ['NAME', 'STATUS', 'ADDRESS', 'CPU', 'MEMORY', 'DISK', 'RESERVED', 'SANDBOXES', 'LABELS', 'SEEN'],
    [...nodes].sort(byName).map((n) => {
      const r = n.resources;
      return [
        n.name,
        n.status,
        n.address,
        // A dead node's last CPU rate is no longer true; its sizes still are.
        `${n.status === 'alive' ? `${r.cpuPercent.toFixed(1)}%` : '-'}/${r.cpus}`,
        usedOf(r.memoryUsedBytes, r.memoryBytes, humanBytes),
        usedOf(r.diskUsedBytes, r.diskBytes, humanBytes),
        `${reservedCpu(n)} cpu, ${reservedMem(n)}`,
        sandboxCount(n),
        labelList(n.labels),
        `${age(n.heartbeatAt, now)} ago`,
      ];
    }),
  );
}

function clusterLine(info: ClusterInfo): string {
  const dead = info.nodesDead ?? info.nodes - info.nodesAlive;
  const leader = info.leaderName || info.leader || 'none';
  const byStatus = Object.entries(info.sandboxes.byStatus)
    .filter(([, n]) => (n ?? 0) > 0)
    .map(([s, n]) => `${s} ${n}`)
    .join(', ');
  return `nodes ${info.nodesAlive}/${info.nodes} alive${dead ? ` (${dead} dead)` : ''}   leader ${leader}   sandboxes ${info.sandboxes.total}${byStatus ? ` (${byStatus})` : ''}`;
}

export function renderTop(info: ClusterInfo, nodes: NodeInfo[], now: Date): string {
  const table = renderTable(
    ['NAME', 'STATUS', 'CPU%', 'LOAD', 'MEMORY', 'MEM%', 'DISK', 'DISK%', 'SANDBOXES', 'RES-CPU', 'RES-MEM'],
    [...nodes].sort(byName).map((n) => {
      const r = n.resources;
      const live = n.status === 'alive';
      return [
        n.id === info.leader ? `${n.name}*` : n.name,
        live ? n.status : `${n.status} ${age(n.heartbeatAt, now)}`,
        live ? `${r.cpuPercent.toFixed(1)}` : '-',
        live ? r.load1.toFixed(2) : '-',
        usedOf(r.memoryUsedBytes, r.memoryBytes, humanBytes),
        percent(r.memoryUsedBytes, r.memoryBytes),
        usedOf(r.diskUsedBytes, r.diskBytes, humanBytes),
        percent(r.diskUsedBytes, r.diskBytes),
        sandboxCount(n),
        reservedCpu(n),
        reservedMem(n),
      ];
    }),
  );
  return `${clusterLine(info)}   ${now.toTimeString().slice(0, 8)}\n${table}${nodes.length ? '(* leader)\n' : ''}`;
}

function renderClusterInfo(info: ClusterInfo, nodes: NodeInfo[], members: EtcdMember[] = []): string {
  const name = (id: string): string => nodes.find((n) => n.id === id)?.name ?? '';
  const named = (n: string, id: string): string => (n ? `${n} (${id})` : id);
  const dead = nodes.filter((n) => n.status === 'dead').map((n) => n.name).sort();
  const deadCount = info.nodesDead ?? info.nodes - info.nodesAlive;
  const byStatus = Object.entries(info.sandboxes.byStatus)
    .filter(([, n]) => (n ?? 0) > 0)
    .map(([s, n]) => `${s} ${n}`)
    .join(', ');
  return renderFields([
    ['Version', info.version],
    ['This node', info.node ? named(name(info.node), info.node) : undefined],
    ['Leader', info.leader ? named(info.leaderName || name(info.leader), info.leader) : 'none (no scheduler elected; creates wait)'],
    ['Nodes', `${info.nodes} (${info.nodesAlive} alive, ${deadCount} dead${dead.length ? `: ${dead.join(', ')}` : ''})`],
    ['Uptime', humanDuration(info.uptimeSec)],
    ['Sandboxes', byStatus ? `${info.sandboxes.total} (${byStatus})` : String(info.sandboxes.total)],
    ['etcd members', members.length ? members.map((m) => `${m.name || m.id} ${m.learner ? 'learner' : 'voter'} ${m.healthy ? 'healthy' : 'UNHEALTHY'}`).join(', ') : undefined],
  ]);
}

function renderNode(n: NodeInfo, leader: boolean): string {
  const r = n.resources;
  const now = new Date();
  const cap = n.capacity;
  const res = n.reserved ?? { cpus: 0, memoryMb: 0, sandboxes: 0 };
  const room = cap ? allocatable(cap) : undefined;
  return renderFields([
    ['Name', n.name],
    ['ID', n.id],
    ['Status', leader ? `${n.status}, leader (runs the scheduler)` : n.status],
    ['Address', n.address],
    ['Version', n.version],
    ['Labels', labelList(n.labels)],
    ['Runtimes', `${n.runtimes.join(', ')} (default ${n.defaultRuntime})`],
    ...(n.runtimeInfo ?? []).map((ri): [string, string] => [
      `  ${ri.name}`,
      ri.usable
        ? `usable${ri.details && Object.keys(ri.details).length ? ` (${Object.entries(ri.details).map(([k, v]) => `${k}: ${v}`).join('; ')})` : ''}`
        : `not usable: ${ri.reason ?? 'unknown'}`,
    ]),
    ['CPU', `${r.cpus} cores, ${r.cpuPercent.toFixed(1)}% busy, load ${r.load1.toFixed(2)}`],
    ['Memory', `${humanBytes(r.memoryUsedBytes)} used of ${humanBytes(r.memoryBytes)} (${percent(r.memoryUsedBytes, r.memoryBytes)})`],
    ['Disk', `${humanBytes(r.diskUsedBytes)} used of ${humanBytes(r.diskBytes)} (${percent(r.diskUsedBytes, r.diskBytes)})`],
    ['Capacity', cap ? `${humanCpus(cap.cpus)} CPUs, ${humanBytes(cap.memoryMb * MiB)}, ${cap.maxSandboxes ? `at most ${cap.maxSandboxes} sandboxes` : 'no sandbox limit'}` : undefined],
    ['Overcommit', room ? `CPU ${factor(cap!.cpuOvercommit ?? DEFAULT_CPU_OVERCOMMIT)}, memory ${factor(cap!.memoryOvercommit ?? DEFAULT_MEMORY_OVERCOMMIT)}: up to ${humanCpus(room.cpus)} CPUs and ${humanBytes(room.memoryMb * MiB)} reserved` : undefined],
    [
      'Reserved',
      room
        ? `${humanCpus(res.cpus)} CPUs (${percent(res.cpus, room.cpus)}), ${humanBytes(res.memoryMb * MiB)} (${percent(res.memoryMb, room.memoryMb)}), ${res.sandboxes} sandboxes`
        : undefined,
    ],
    ['Sandboxes', String(n.sandboxes)],
    ['Started', `${n.startedAt} (${age(n.startedAt, now)} ago)`],
    ['Heartbeat', `${n.heartbeatAt} (${age(n.heartbeatAt, now)} ago)`],
  ]);
}

function factor(x: number): string {
  return `${Number(x.toFixed(2))}x`;
}
