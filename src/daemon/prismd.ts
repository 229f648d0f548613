import { Command, Option } from 'commander';
import { asPrismError } from '../core/errors.js';
import { DEFAULT_API, DEFAULT_GUEST_DIR, DEFAULT_IMAGE, resolveConfig, type DaemonFlags } from './config.js';
import { startDaemon } from './daemon.js';
import { buildBaseImageCommand } from './build-base-image.js';
import { packageVersion } from './package-info.js';

/** `prismd`: the per-node daemon. Every flag has a PRISM_* environment equivalent. */
export function prismdProgram(): Command {
  const program = new Command('prismd')
    .description('Prism node daemon: REST API, scheduler and sandbox runtime for this machine')
    .version(packageVersion())
    // Options after a subcommand belong to it (both have --images-dir and --data-dir).
    .enablePositionalOptions()
    .addOption(new Option('--api <host:port>', `address of the REST API (default ${DEFAULT_API})`).env('PRISM_API'))
    .addOption(new Option('--data-dir <dir>', 'state directory (default /var/lib/prism as root, else ./data/<timestamp>)').env('PRISM_DATA_DIR'))
    .addOption(new Option('--images-dir <dir>', 'image store directory (default <data-dir>/images)').env('PRISM_IMAGES_DIR'))
    .addOption(new Option('--name <name>', 'node name (default: a generated readable name, kept across restarts)').env('PRISM_NAME'))
    .addOption(
      new Option('--runtime <runtime>', 'default sandbox runtime; auto picks the best usable one on this host')
        .choices(['auto', 'oci', 'microvm', 'docker'])
        .default('auto')
        .env('PRISM_RUNTIME'),
    )
    .addOption(
      new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info').env('PRISM_LOG_LEVEL'),
    )
    .addOption(new Option('--log-file <file>', 'write logs (JSON lines) to this file instead of stdout').env('PRISM_LOG_FILE'))
    .addOption(
      new Option('--insecure-registry <host:port...>', 'registries that may be used over plain HTTP (loopback always may)').argParser(
        (v: string, prev: string[] | undefined) => [...(prev ?? []), ...v.split(',').filter(Boolean)],
      ),
    )
    .addOption(new Option('--registry-auth <file>', 'JSON file with registry credentials: {"auths": {"host": {"username", "password"}}}').env('PRISM_REGISTRY_AUTH'))
    .addOption(new Option('--guest-dir <dir>', `microvm guest kernel and initramfs (default ${DEFAULT_GUEST_DIR}; scripts/prepare-guest.sh)`).env('PRISM_GUEST_DIR'))
    .addOption(new Option('--kernel <file>', 'microvm guest kernel, overriding the one in --guest-dir').env('PRISM_KERNEL'))
    // Both forms, so that neither given leaves the flag undefined and PRISM_MICROVM_SNAPSHOTS decides.
    .addOption(new Option('--microvm-snapshots', 'restore microVMs from template snapshots (the default)'))
    .addOption(new Option('--no-microvm-snapshots', 'cold-boot every microVM instead of restoring a template snapshot (PRISM_MICROVM_SNAPSHOTS=0)'))
    .addOption(new Option('--firecracker-bin <file>', 'run microVMs on Firecracker (UNTESTED backend); default: Firecracker if `firecracker` is on PATH, else QEMU').env('PRISM_FIRECRACKER_BIN'))
    .addOption(new Option('--warm-pool <n>', 'microVMs kept restored and ready per image and shape (default 0)').env('PRISM_WARM_POOL'))
    .addOption(new Option('--default-image <ref>', `image of sandboxes created without one (default ${DEFAULT_IMAGE})`).env('PRISM_DEFAULT_IMAGE'))
    .action(async (flags: DaemonFlags) => {
      const daemon = await startDaemon(resolveConfig(flags, process.env));
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
  program
    .command('build-base-image')
    .description('build the default base image (Debian bookworm minbase + python3) with debootstrap, once')
    .option('--images-dir <dir>', 'image store directory (default <data-dir>/images)')
    .option('--data-dir <dir>', 'state directory whose image store receives the image')
    .option('--mirror <url>', 'Debian mirror', 'http://deb.debian.org/debian')
    .option('--force', 'rebuild even if the image exists')
    .action(buildBaseImageCommand);
  return program;
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
