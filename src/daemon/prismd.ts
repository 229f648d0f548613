import { Command, Option } from 'commander';
import { asPrismError } from '../core/errors.js';
import { DEFAULT_CPU_OVERCOMMIT, DEFAULT_MEMORY_OVERCOMMIT } from '../core/types.js';
import { DEFAULT_API, DEFAULT_GUEST_DIR, DEFAULT_IMAGE, DEFAULT_SANDBOX_CIDR, resolveConfig, type DaemonFlags } from './config.js';
import { buildBaseImageCommand } from './build-base-image.js';
import { installServiceCommand, uninstallServiceCommand } from './service-command.js';
import { packageVersion } from './package-info.js';
import { doctorCommand } from './doctor/doctor-command.js';

/** `prismd`: the per-node daemon. Every flag has a PRISM_* environment equivalent. */
export function prismdProgram(): Command {
  const program = new Command('prismd')
    .description('Prism node daemon: REST API, scheduler and sandbox runtime for this machine')
    .version(packageVersion())
    // Options after a subcommand belong to it (both have --images-dir and --data-dir).
    .enablePositionalOptions();
  for (const o of daemonOptions()) program.addOption(o);
  program
    .action(async (flags: DaemonFlags) => {
      const cfg = resolveConfig(flags, process.env);
      // Loaded here, not at the top: the daemon's module graph is most of a start's CPU (about 1 s here,
      // a minute on an emulated host), which the subcommands (build-base-image, install-service,
      // doctor) and --help / --version need none of.
      const { startDaemon } = await import('./daemon.js');
      const daemon = await startDaemon(cfg);
      const shutdown = (sig: string) => {
        process.stderr.write(`prismd: ${sig} received, shutting down\n`);
        daemon.close().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once('SIGTERM', () => shutdown('SIGTERM'));
      process.once('SIGINT', () => shutdown('SIGINT'));
    });
  const doctor = program
    .command('doctor')
    .description('check this host as prismd would use it, one line per check (docs/doctor.md); exits 1 when prismd as configured cannot work')
    .option('--json', 'print the checks as JSON');
  // The same flags as prismd itself, before or after `doctor`, so a prismd command line can be checked as is.
  for (const o of daemonOptions()) doctor.addOption(o);
  doctor.action(async (_opts: unknown, cmd: Command) => {
    process.exitCode = await doctorCommand(doctorFlags(cmd));
  });
  program
    .command('build-base-image')
    .description('build the default base image (Debian bookworm minbase + python3) with debootstrap, once')
    .option('--images-dir <dir>', 'image store directory (default <data-dir>/images)')
    .option('--data-dir <dir>', 'state directory whose image store receives the image')
    .option('--mirror <url>', 'Debian mirror', 'http://deb.debian.org/debian')
    .option('--force', 'rebuild even if the image exists')
    .option('--code-interpreter', 'build the code-interpreter image instead (python3 + Jupyter kernel, numpy, pandas, matplotlib; E2B template code-interpreter-v1)')
    .action(buildBaseImageCommand);
  program
    .command('install-service')
    .description('run prismd as a systemd service (prismd.service, settings in /etc/prism/prismd.env): writes the unit, enables it, (re)starts it and waits for the API')
    .addOption(
      new Option('--env <KEY=VALUE...>', 'set a variable in /etc/prism/prismd.env, e.g. PRISM_API=0.0.0.0:8008 (repeatable; the rest of the file is kept)').argParser(
        (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
      ),
    )
    .option('--no-start', 'enable the service without starting or restarting it')
    .action(installServiceCommand);
  program
    .command('uninstall-service')
    .description('stop, disable and remove prismd.service; keeps /etc/prism/prismd.env and the data dir (sandboxes keep running)')
    .action(uninstallServiceCommand);
  return program;
}

/**
 * The doctor's flags merged with prismd's own (`prismd --runtime oci doctor`): a flag typed on the
 * command line wins over one from the environment, and one typed after `doctor` over one before it.
 * (commander's optsWithGlobals lets the parent win, even its environment over the doctor's flag.)
 */
export function doctorFlags(cmd: Command): DaemonFlags & { json?: boolean } {
  const parent = cmd.parent;
  const out: Record<string, unknown> = { ...parent?.opts() };
  for (const [k, v] of Object.entries(cmd.opts())) {
    if (v !== undefined && (cmd.getOptionValueSource(k) === 'cli' || parent?.getOptionValueSource(k) !== 'cli')) out[k] = v;
  }
  return out;
}

/** A repeatable flag whose values may also be comma-separated. */
function commaList(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), ...v.split(',').filter(Boolean)];
}

/** prismd's flags, shared by `prismd` and `prismd doctor` (fresh objects: a commander Option belongs to one command). */
function daemonOptions(): Option[] {
  return [
    new Option('--api <host:port>', `address of the REST API (default ${DEFAULT_API})`).env('PRISM_API'),
    new Option('--data-dir <dir>', 'state directory (default /var/lib/prism as root, else ./data/<timestamp>)').env('PRISM_DATA_DIR'),
    new Option('--images-dir <dir>', 'image store directory (default <data-dir>/images)').env('PRISM_IMAGES_DIR'),
    new Option('--name <name>', 'node name (default: a generated readable name, kept across restarts)').env('PRISM_NAME'),
    // No commander defaults (resolveConfig has them): a default on `doctor` would hide the same flag given before it.
    new Option('--runtime <runtime>', 'default sandbox runtime; auto (the default) picks the best usable one on this host')
      .choices(['auto', 'oci', 'microvm', 'docker'])
      .env('PRISM_RUNTIME'),
    new Option('--log-level <level>', 'log level (default info)').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).env('PRISM_LOG_LEVEL'),
    new Option('--log-file <file>', 'write logs (JSON lines) to this file instead of stdout').env('PRISM_LOG_FILE'),
    new Option('--insecure-registry <host:port...>', 'registries that may be used over plain HTTP (loopback always may)').argParser(commaList),
    new Option('--registry-auth <file>', 'JSON file with registry credentials: {"auths": {"host": {"username", "password"}}}').env('PRISM_REGISTRY_AUTH'),
    new Option('--guest-dir <dir>', `microvm guest kernel and initramfs (default ${DEFAULT_GUEST_DIR}; scripts/prepare-guest.sh)`).env('PRISM_GUEST_DIR'),
    new Option('--kernel <file>', 'microvm guest kernel, overriding the one in --guest-dir').env('PRISM_KERNEL'),
    new Option('--docker-host <url>', 'Docker engine of the docker runtime: unix:///path or tcp://host:port (default: DOCKER_HOST, then /var/run/docker.sock)').env('PRISM_DOCKER_HOST'),
    new Option('--microvm-snapshots', 'restore microVMs from template snapshots (the default)'),
    new Option('--no-microvm-snapshots', 'cold-boot every microVM instead of restoring a template snapshot (PRISM_MICROVM_SNAPSHOTS=0)'),
    new Option('--vmm <vmm>', 'VMM of the microvm runtime: qemu, or firecracker (UNTESTED: never run against a real Firecracker)').choices(['qemu', 'firecracker']).env('PRISM_VMM'),
    new Option('--firecracker-bin <file>', 'where Firecracker is, with --vmm firecracker (default: firecracker on PATH)').env('PRISM_FIRECRACKER_BIN'),
    new Option('--warm-pool <n>', 'sandboxes kept ready per image and shape on oci and docker (running containers) and microvm (restored VMs) (default 0)').env('PRISM_WARM_POOL'),
    new Option('--default-image <ref>', `image of sandboxes created without one (default ${DEFAULT_IMAGE})`).env('PRISM_DEFAULT_IMAGE'),
    new Option('--e2b-domain <host[:port]>', "the domain E2B SDKs build sandbox URLs from (<port>-<id>.<domain>); default: the Host they called").env('PRISM_E2B_DOMAIN'),
    new Option('--store <url>', "cluster state: 'sqlite' (this node alone, the default) or etcd://host:port[,host:port...]").env('PRISM_STORE'),
    new Option('--cluster-init', 'start a new cluster: run an etcd member here (data in <data-dir>/etcd) and use it as the store (PRISM_CLUSTER_INIT=1)'),
    new Option('--join <url>', 'join the cluster of the node at this URL: run an etcd member here too while it has fewer than --etcd-voters, else use its members').env('PRISM_JOIN'),
    new Option('--join-token <token>', 'the cluster\'s join token, from prismctl cluster join-token (needed with --join)').env('PRISM_JOIN_TOKEN'),
    new Option('--etcd-peer <host:port>', 'where this node\'s etcd member talks to the others (default: the API host, port 2380)').env('PRISM_ETCD_PEER'),
    new Option('--etcd-client <host:port>', 'where this node\'s etcd member serves clients (default: the API host, port 2379)').env('PRISM_ETCD_CLIENT'),
    new Option('--etcd-voters <n>', 'voting etcd members the cluster grows to: 1, 3 (default) or 5; nodes beyond are etcd clients').env('PRISM_ETCD_VOTERS'),
    new Option('--etcd-ca <file>', 'CA bundle (PEM) to verify etcd with; implies https').env('PRISM_ETCD_CA'),
    new Option('--etcd-cert <file>', 'client certificate (PEM) for etcd').env('PRISM_ETCD_CERT'),
    new Option('--etcd-key <file>', 'client key (PEM) for etcd').env('PRISM_ETCD_KEY'),
    new Option('--advertise <url>', 'URL other nodes reach this API at (default: the --api address)').env('PRISM_ADVERTISE'),
    new Option('--label <key=value...>', 'node label for placement (repeatable; sandboxes select nodes with nodeSelector)').argParser(commaList),
    new Option('--capacity-cpus <n>', 'CPUs offered to sandboxes (default: all cores)').env('PRISM_CAPACITY_CPUS'),
    new Option('--capacity-memory-mb <n>', 'memory offered to sandboxes (default: 90% of RAM)').env('PRISM_CAPACITY_MEMORY_MB'),
    new Option('--cpu-overcommit <n>', `CPUs placement may reserve, as a multiple of --capacity-cpus (default ${DEFAULT_CPU_OVERCOMMIT}); each sandbox's cpus stay a hard limit`).env('PRISM_CPU_OVERCOMMIT'),
    new Option('--memory-overcommit <n>', `memory placement may reserve, as a multiple of --capacity-memory-mb (default ${DEFAULT_MEMORY_OVERCOMMIT}: none); each sandbox's memoryMb stays a hard limit`).env('PRISM_MEMORY_OVERCOMMIT'),
    new Option('--max-sandboxes <n>', 'most sandboxes placed on this node (default: no limit)').env('PRISM_MAX_SANDBOXES'),
    new Option('--max-processes <n>', 'background processes running at once per sandbox (default 64)').env('PRISM_MAX_PROCESSES'),
    new Option('--process-buffer-mb <n>', 'output kept per stream of each background process, in MiB (default 4)').env('PRISM_PROCESS_BUFFER_MB'),
    new Option('--paused-ttl <sec>', 'delete a sandbox that has been paused this long (default 0: keep paused sandboxes until deleted)').env('PRISM_PAUSED_TTL'),
    new Option('--metrics-interval <sec>', 'seconds between usage samples of each running sandbox (default 5; 0: sample only when asked)').env('PRISM_METRICS_INTERVAL'),
    new Option('--metrics-retention <min>', 'minutes of usage samples kept per sandbox (default 60)').env('PRISM_METRICS_RETENTION'),
    new Option('--placement <strategy>', 'spread (most free memory first) or binpack, used while this node leads').choices(['spread', 'binpack']).env('PRISM_PLACEMENT'),
    new Option('--direct-create <on|off>', 'make creates placement would put on this node here, in one store write, without the scheduler (default on)').choices(['on', 'off']).env('PRISM_DIRECT_CREATE'),
    new Option('--node-ttl <seconds>', 'membership lease TTL: a node silent this long is dead (default 5)').env('PRISM_NODE_TTL'),
    new Option('--schedule-timeout <seconds>', 'how long a create waits for placement before 503 (default 30)').env('PRISM_SCHEDULE_TIMEOUT'),
    new Option('--max-file-mb <mb>', 'largest file read or written through the files API in one request (default 1024)').env('PRISM_MAX_FILE_MB'),
    new Option('--default-user <uid[:gid]|root>', 'user of commands in images that name none (default 65534:65534, nobody)').env('PRISM_DEFAULT_USER'),
    new Option('--auth <mode>', 'token: every API call but /health needs a token (default); none: no auth, loopback only').choices(['token', 'none']).env('PRISM_AUTH'),
    new Option('--console', 'serve the web console at / (the default)'),
    new Option('--no-console', 'do not serve the web console at / (PRISM_CONSOLE=0)'),
    new Option('--metrics-auth <mode>', 'token: GET /metrics needs an API token like the API (default); none: Prometheus scrapes it without one').choices(['token', 'none']).env('PRISM_METRICS_AUTH'),
    new Option('--tls <mode>', 'auto: serve HTTPS with a certificate from a private CA made in <data-dir>/tls (off by default)').choices(['off', 'auto']).env('PRISM_TLS'),
    new Option('--tls-cert <file>', 'serve HTTPS with this certificate (PEM; with --tls-key)').env('PRISM_TLS_CERT'),
    new Option('--tls-key <file>', 'private key of --tls-cert (PEM)').env('PRISM_TLS_KEY'),
    new Option('--tls-ca <file>', "CA certificate that signs every node's certificate; other nodes are verified against it").env('PRISM_TLS_CA'),
    new Option('--sandbox-cidr <cidr>', `IPv4 pool for sandbox networks, a /30 each (default ${DEFAULT_SANDBOX_CIDR}; docs/network.md)`).env('PRISM_SANDBOX_CIDR'),
    new Option('--sandbox-dns <ip[:port]>', "resolver the sandboxes' DNS filters ask (default: the host's first name server)").env('PRISM_SANDBOX_DNS'),
    new Option('--tls-ca-key <file>', 'with --tls auto: the key of --tls-ca, to sign this node\'s certificate with the cluster CA').env('PRISM_TLS_CA_KEY'),
  ];
}

export async function main(argv: string[]): Promise<void> {
  try {
    await prismdProgram().parseAsync(argv);
  } catch (e) {
    const err = asPrismError(e);
    process.stderr.write(`prismd: ${err.message}\n`);
    process.exit(1);
  }
}
