import { Option, type Command } from 'commander';
import { PrismApiError, type ExecLogEntry, type RuntimeName, type Sandbox, type SandboxHandle, type SandboxMetric } from '../sdk/index.js';
import type { CreateSandboxOptions } from '../sdk/index.js';
import { UsageError, collect, parseEnvPairs, parseNumber, printError, type CliContext } from './context.js';
import { registerExecCommand } from './exec-command.js';
import { registerShellCommand } from './shell-command.js';
import { registerProcessCommands } from './process-commands.js';
import { registerFileCommands } from './file-commands.js';
import { age, humanBytes, humanMs, percent, renderFields, renderTable, shellJoin, usedOf, wireOutput } from './output.js';
import { volumesFromFlags } from './volume-commands.js';
import { registerSnapshotCommands } from './snapshot-commands.js';

interface CreateFlags {
  name?: string;
  image?: string;
  runtime?: RuntimeName;
  cpus?: number;
  memory?: number;
  pidsLimit?: number;
  disk?: number;
  maxOpenFiles?: number;
  env?: string[];
  workdir?: string;
  timeout?: number;
  onTimeout?: 'stop' | 'delete' | 'pause';
  autoResume?: boolean;
  user?: string;
  nodeSelector?: string[];
  network?: string;
  allow?: string[];
  deny?: string[];
  port?: string[];
  volume?: string[];
  snapshot?: string;
}

/** `--network none|all`, or an allow-list from `--allow`/`--deny` (which imply a list). */
export function networkFromFlags(f: Pick<CreateFlags, 'network' | 'allow' | 'deny'>): CreateSandboxOptions['network'] {
  const list = (f.allow?.length ?? 0) + (f.deny?.length ?? 0) > 0;
  if (list) {
    if (f.network && f.network !== 'list') throw new UsageError(`--allow/--deny make an allow-list; they do not go with --network ${f.network}`);
    return { egress: { allow: f.allow ?? [], deny: f.deny ?? [] } };
  }
  if (f.network === 'list') return { egress: { allow: [], deny: [] } };
  return f.network ? { egress: f.network as 'none' | 'all' } : undefined;
}

function parsePorts(ports: string[] | undefined): number[] | undefined {
  if (!ports?.length) return undefined;
  return ports.flatMap((p) => p.split(',')).map((p) => {
    const n = Number(p);
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new UsageError(`--port expects a TCP port (1-65535), got '${p}'`);
    return n;
  });
}

function describeNetwork(s: Sandbox): string {
  const e = s.network?.egress ?? 'none';
  if (typeof e === 'string') return e;
  return [`allow ${e.allow.join(', ') || '(nothing)'}`, ...(e.deny.length ? [`deny ${e.deny.join(', ')}`] : [])].join('; ');
}

/** `sandbox` (alias `sb`) and its subcommands. */
export function registerSandboxCommands(program: Command, ctx: CliContext): void {
  const sandbox = program.command('sandbox').alias('sb').description('create, run commands in and remove sandboxes');

  sandbox
    .command('create')
    .description('create a sandbox and wait until it is running')
    .option('--name <name>', 'sandbox name (default: generated)')
    .option('--image <image>', 'OCI image reference')
    .addOption(new Option('--runtime <runtime>', 'runtime to run it with').choices(['oci', 'microvm', 'docker']))
    .option('--cpus <n>', 'CPU limit', parseNumber('float'))
    .option('--memory <mb>', 'memory limit in MiB', parseNumber('int'))
    .option('--pids-limit <n>', 'maximum number of processes', parseNumber('int'))
    .option('--disk <mb>', 'size of the writable layer in MiB', parseNumber('int'))
    .option('--max-open-files <n>', 'open files limit (RLIMIT_NOFILE) of every process', parseNumber('int'))
    .option('--env <key=value>', 'environment variable (repeatable)', collect)
    .option('--workdir <dir>', 'working directory for commands')
    .option('--timeout <sec>', 'end the sandbox after this many seconds of running (--on-timeout says how); 0 = never', parseNumber('int'))
    .addOption(new Option('--on-timeout <action>', 'what the end of --timeout does (default stop)').choices(['stop', 'delete', 'pause']))
    .option('--no-auto-resume', 'commands, files and terminals on the paused sandbox fail instead of resuming it')
    .option('--user <user[:group]>', "run commands as this user instead of the image's")
    .option('--node-selector <key=value>', 'place only on nodes with this label (repeatable; prismd --label)', collect)
    .addOption(new Option('--network <egress>', 'where the sandbox may connect: none (only lo, the default), all (not the host, private ranges or other sandboxes), list (with --allow/--deny)').choices(['none', 'all', 'list']))
    .option('--allow <cidr|domain>', 'allow connections to an IPv4 CIDR or a domain (*.example.com for subdomains); repeatable', collect)
    .option('--deny <cidr>', 'refuse an IPv4 CIDR even if allowed; repeatable', collect)
    .option('--port <port>', 'serve this sandbox TCP port through the API (/api/v1/sandboxes/<id>/ports/<port>/); repeatable', collect)
    .option('--volume <name:/path[:ro]>', 'mount a volume (prismctl volume create) at /path, read-only with :ro; repeatable', collect)
    .option('--snapshot <id>', "start from a snapshot's files ('sandbox snapshot'); it runs on the snapshot's node")
    .action(async (f: CreateFlags, cmd: Command) => {
      const sb = await ctx.client(cmd).sandboxes.create({
        name: f.name,
        image: f.image,
        runtime: f.runtime,
        cpus: f.cpus,
        memoryMb: f.memory,
        pidsLimit: f.pidsLimit,
        diskMb: f.disk,
        maxOpenFiles: f.maxOpenFiles,
        env: parseEnvPairs(f.env),
        workdir: f.workdir,
        timeoutSec: f.timeout,
        onTimeout: f.onTimeout,
        ...(f.autoResume === false ? { autoResume: false } : {}),
        user: f.user,
        nodeSelector: parseEnvPairs(f.nodeSelector, '--node-selector'),
        network: networkFromFlags(f),
        ports: parsePorts(f.port),
        volumes: volumesFromFlags(f.volume),
        ...(f.snapshot ? { snapshot: f.snapshot } : {}),
      });
      if (ctx.format(cmd) === 'json') return ctx.json(sb.info);
      const s = sb.info;
      ctx.out(
        renderFields([
          ['ID', s.id],
          ['Name', s.name],
          ['Status', s.status],
          ['Node', s.node],
          ['Image', s.image],
          ['Runtime', s.runtime],
        ]),
      );
    });

  sandbox
    .command('ls')
    .alias('list')
    .description('list sandboxes')
    .action(async (_opts: unknown, cmd: Command) => {
      const list = (await ctx.client(cmd).sandboxes.list()).map((h) => h.info);
      if (ctx.format(cmd) === 'json') return ctx.json({ sandboxes: list });
      const now = new Date();
      ctx.out(
        renderTable(
          ['ID', 'NAME', 'STATUS', 'NODE', 'IMAGE', 'RUNTIME', 'CPUS', 'MEMORY', 'AGE'],
          list.map((s) => [
            s.id,
            s.name,
            s.status,
            s.node || '-',
            s.image,
            s.runtime,
            String(s.cpus),
            humanBytes(s.memoryMb * 1024 * 1024),
            age(s.createdAt, now),
          ]),
        ),
      );
    });

  sandbox
    .command('info')
    .alias('inspect')
    .description('show one sandbox')
    .argument('<sandbox>', 'sandbox id or name')
    .action(async (ref: string, _opts: unknown, cmd: Command) => {
      const sb = await ctx.client(cmd).sandboxes.get(ref);
      if (ctx.format(cmd) === 'json') return ctx.json(sb.info);
      ctx.out(renderSandbox(sb.info));
    });

  registerExecCommand(sandbox, ctx);
  registerShellCommand(sandbox, ctx);
  registerProcessCommands(sandbox, ctx);
  registerFileCommands(sandbox, ctx);
  registerSnapshotCommands(program, sandbox, ctx);

  sandbox
    .command('logs')
    .description('show past executions and their output, oldest first')
    .argument('<sandbox>', 'sandbox id or name')
    .action(async (ref: string, _opts: unknown, cmd: Command) => {
      const executions = await (await ctx.client(cmd).sandboxes.get(ref)).logs();
      if (ctx.format(cmd) === 'json') {
        return ctx.json({ executions: executions.map(({ text: _text, ...e }) => ({ ...e, ...wireOutput(e.stdout, e.stderr) })) });
      }
      const now = new Date();
      for (const e of executions) writeLogEntry(ctx, e, now);
    });

  sandbox
    .command('stats')
    .description('CPU, memory, disk and pids of running sandboxes now (like docker stats)')
    .argument('[sandbox...]', 'sandbox ids or names (default: every running sandbox)')
    .option('-w, --watch [sec]', 'refresh every sec seconds (default 2) until interrupted')
    .action(async (refs: string[], f: { watch?: boolean | string }, cmd: Command) => {
      const client = ctx.client(cmd);
      const everySec = f.watch === undefined ? 0 : f.watch === true ? 2 : Number(f.watch);
      if (!(everySec >= 0) || (f.watch !== undefined && !(everySec > 0))) throw new UsageError(`--watch expects seconds > 0, got '${String(f.watch)}'`);
      for (;;) {
        const handles = refs.length ? await Promise.all(refs.map((r) => client.sandboxes.get(r))) : (await client.sandboxes.list()).filter((h) => h.status === 'running');
        const rows = await Promise.all(handles.map(async (h) => ({ sandbox: h, sample: await latestSample(h) })));
        if (ctx.format(cmd) === 'json') ctx.json({ stats: rows.map((r) => ({ id: r.sandbox.id, name: r.sandbox.name, ...(r.sample ?? {}) })) });
        else {
          if (everySec && ctx.io.stdout === process.stdout && process.stdout.isTTY) ctx.io.stdout.write('\x1b[H\x1b[2J');
          ctx.out(renderStats(rows));
        }
        if (!everySec) return;
        await new Promise((r) => setTimeout(r, everySec * 1000));
      }
    });

  for (const [verb, description] of [
    ['stop', 'stop a sandbox (its filesystem is kept)'],
    ['start', 'start a stopped sandbox'],
    ['pause', 'freeze every process of a sandbox, keeping its memory'],
    ['resume', 'thaw a paused sandbox: its processes continue'],
  ] as const) {
    sandbox
      .command(verb)
      .description(description)
      .argument('<sandbox>', 'sandbox id or name')
      .action(async (ref: string, _opts: unknown, cmd: Command) => {
        const sb = await ctx.client(cmd).sandboxes.get(ref);
        await sb[verb]();
        if (ctx.format(cmd) === 'json') return ctx.json(sb.info);
        ctx.out(`${sb.name} (${sb.id}): ${sb.status}`);
      });
  }

  sandbox
    .command('rm')
    .alias('delete')
    .description('delete sandboxes')
    .argument('<sandbox...>', 'sandbox ids or names')
    .action(async (refs: string[], _opts: unknown, cmd: Command) => {
      const client = ctx.client(cmd);
      const deleted: string[] = [];
      // Keep going past a failure so one bad name does not leave the rest behind; exit 1 at the end.
      for (const ref of refs) {
        try {
          const sb = await client.sandboxes.get(ref);
          await sb.delete();
          deleted.push(sb.id);
          if (ctx.format(cmd) === 'table') ctx.out(`deleted ${sb.name} (${sb.id})`);
        } catch (e) {
          if (!(e instanceof PrismApiError)) throw e;
          printError(ctx.io, e);
          ctx.exitCode = 1;
        }
      }
      if (ctx.format(cmd) === 'json') ctx.json({ deleted });
    });
}

/** The newest sample (the server samples a running sandbox whose newest one is stale). */
async function latestSample(h: SandboxHandle): Promise<SandboxMetric | undefined> {
  if (h.status !== 'running') return undefined;
  const samples = await h.metrics({ start: new Date(Date.now() - 60_000) });
  return samples.at(-1);
}

function renderStats(rows: Array<{ sandbox: SandboxHandle; sample: SandboxMetric | undefined }>): string {
  return renderTable(
    ['ID', 'NAME', 'CPU %', 'MEM USAGE / LIMIT', 'MEM %', 'DISK USED / SIZE', 'NET I/O', 'PIDS'],
    rows.map(({ sandbox: sb, sample: m }) =>
      m
        ? [
          sb.id, sb.name, `${m.cpuUsedPct.toFixed(1)}% of ${m.cpuCount}`, usedOf(m.memUsed, m.memTotal, humanBytes), percent(m.memUsed, m.memTotal),
          m.diskTotal ? usedOf(m.diskUsed, m.diskTotal, humanBytes) : humanBytes(m.diskUsed),
          // As `docker stats`: received / sent; `-` for a sandbox without a network.
          m.netRxBytes === undefined ? '-' : `${humanBytes(m.netRxBytes)}/${humanBytes(m.netTxBytes ?? 0)}`,
          String(m.pids),
        ]
        : [sb.id, sb.name, '-', '-', '-', '-', '-', sb.status],
    ),
  );
}

function renderSandbox(s: Sandbox): string {
  const now = new Date();
  const env = Object.entries(s.env ?? {}).map(([k, v]) => `${k}=${v}`);
  return renderFields([
    ['ID', s.id],
    ['Name', s.name],
    ['Status', s.status],
    ['Error', s.error ? `${s.error.message} (${s.error.code})` : undefined],
    ['Node', s.node || '-'],
    ['Image', s.imageDigest ? `${s.image} (${s.imageDigest})` : s.image],
    ['Runtime', s.runtime],
    ['CPUs', String(s.cpus)],
    ['Memory', humanBytes(s.memoryMb * 1024 * 1024)],
    ['PIDs limit', String(s.pidsLimit)],
    ['Disk', s.diskMb === undefined ? '-' : `${s.diskMb} MiB`],
    ['Open files', s.maxOpenFiles === undefined ? '-' : String(s.maxOpenFiles)],
    ['Workdir', s.workdir],
    ['Timeout', s.timeoutSec > 0 ? `${s.timeoutSec}s` : 'none'],
    ['Network', describeNetwork(s)],
    ...(s.ports?.length ? [['Ports', s.ports.join(', ')] as [string, string]] : []),
    ...(s.volumes?.length ? [['Volumes', s.volumes.map((v) => `${v.name}:${v.mountPath}${v.readOnly ? ':ro' : ''}`).join(', ')] as [string, string]] : []),
    ['Env', env.length > 0 ? env.join(' ') : undefined],
    ['Created', `${s.createdAt} (${age(s.createdAt, now)} ago)`],
    ['Started', s.startedAt ? `${s.startedAt} (${age(s.startedAt, now)} ago)` : undefined],
    ['Stopped', s.stoppedAt ? `${s.stoppedAt} (${age(s.stoppedAt, now)} ago)` : undefined],
  ]);
}

function writeLogEntry(ctx: CliContext, e: ExecLogEntry, now: Date): void {
  const outcome = e.timedOut ? 'timed out' : e.oomKilled ? 'OOM-killed' : e.signal ? e.signal : `exit ${e.exitCode}`;
  ctx.out(`=== ${e.id}  ${age(e.startedAt, now)} ago  ${outcome}  ${humanMs(e.durationMs)}  $ ${shellJoin(e.cmd)}`);
  for (const bytes of [e.stdout, e.stderr]) {
    if (bytes.length === 0) continue;
    ctx.io.stdout.write(bytes);
    if (bytes[bytes.length - 1] !== 0x0a) ctx.io.stdout.write('\n');
  }
  if (e.truncated) ctx.out('(output truncated)');
}
