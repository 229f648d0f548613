import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { PrismError } from '../core/errors.js';
import { defaultDataDir, resolveConfig } from './config.js';
import { parseEnvFile, setEnvValues } from './env-file.js';

/**
 * `prismd install-service` / `uninstall-service`: prismd as a systemd unit. The unit is the template
 * in packaging/systemd/ with the node binary and the checkout's bin/prismd.js filled in; settings live
 * in an environment file that is the user's and is never overwritten. Why the unit is built as it is
 * (KillMode=mixed, no Delegate=): docs/install.md.
 */

export const UNIT_NAME = 'prismd.service';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** What install and uninstall need of the host beyond files: so tests can run them with a fake. */
export interface ServiceHost {
  /** Runs `cmd args` to completion (systemctl, journalctl); a non-zero exit is a result, not an error. */
  run(cmd: string, args: string[]): Promise<CommandResult>;
  /** True when GET `url` answers 2xx. */
  healthy(url: string): Promise<boolean>;
}

export interface ServicePaths {
  unitFile: string;
  envFile: string;
  /** Exists exactly when PID 1 is systemd (what sd_booted() checks). */
  systemdRunDir: string;
}

export const SYSTEM_PATHS: ServicePaths = {
  unitFile: '/etc/systemd/system/prismd.service',
  envFile: '/etc/prism/prismd.env',
  systemdRunDir: '/run/systemd/system',
};

export interface ServiceOptions {
  paths: ServicePaths;
  host: ServiceHost;
  out: (line: string) => void;
  /** How long install waits for the API to answer after (re)starting the unit. */
  healthTimeoutMs?: number;
  pollMs?: number;
}

export interface InstallOptions extends ServiceOptions {
  /** The unit template (packaging/systemd/prismd.service). */
  template: string;
  /** ExecStart's node binary and script. */
  node: string;
  prismd: string;
  /** Variables to set in the environment file (`--env KEY=VALUE`). */
  env: Record<string, string>;
  /** false (`--no-start`): enable only; neither start nor restart. */
  start: boolean;
}

const NEW_ENV_FILE = `# prismd's settings, read by prismd.service: PRISM_* variables, the environment equivalents of
# prismd's flags (prismd --help). Apply a change with: systemctl restart prismd
# prismd install-service sets the variables given to it with --env and keeps everything else here.
#PRISM_API=127.0.0.1:8008
#PRISM_DATA_DIR=/var/lib/prism
#PRISM_RUNTIME=auto
#PRISM_LOG_LEVEL=info
`;

export function requireSystemd(paths: ServicePaths): void {
  if (!existsSync(paths.systemdRunDir)) {
    throw new PrismError(
      'FAILED_PRECONDITION',
      `systemd is not running this machine (${paths.systemdRunDir} is missing; in a container, for instance), so prismd cannot be installed as a service. ` +
        'Run it directly instead, e.g. in the background: nohup prismd --log-file /var/log/prism/prismd.log & (docs/install.md, "Without systemd")',
    );
  }
}

/** A path as one ExecStart= word: `%` is systemd's specifier character, whitespace needs quotes. */
function execWord(path: string): string {
  if (/["\\\n]/.test(path)) throw new PrismError('INVALID_ARGUMENT', `cannot put ${JSON.stringify(path)} in a unit file`);
  const word = path.replace(/%/g, '%%');
  return /\s/.test(word) ? `"${word}"` : word;
}

export function renderUnit(template: string, files: { node: string; prismd: string }): string {
  const unit = template.replace(/@NODE@/g, execWord(files.node)).replace(/@PRISMD@/g, execWord(files.prismd));
  const left = /@[A-Z_]+@/.exec(unit);
  if (left) throw new PrismError('INTERNAL', `the unit template has an unknown placeholder ${left[0]}`);
  return unit;
}

/**
 * The node binary for ExecStart: the PATH entry that is the running node (e.g. /usr/local/bin/node,
 * a symlink that an upgrade re-points) rather than the versioned file it resolves to, else that file.
 * systemd starts services with its own PATH, so the unit must name node in full.
 */
export function stableNodePath(execPath: string, pathEnv: string): string {
  const real = realpathSync(execPath);
  for (const dir of pathEnv.split(':').filter((d) => d.startsWith('/'))) {
    const candidate = join(dir, 'node');
    try {
      if (realpathSync(candidate) === real) return candidate;
    } catch {
      // not in this directory
    }
  }
  return execPath;
}

async function systemctl(host: ServiceHost, ...args: string[]): Promise<CommandResult> {
  const r = await host.run('systemctl', args);
  if (r.code !== 0) {
    throw new PrismError('FAILED_PRECONDITION', `systemctl ${args.join(' ')} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
  }
  return r;
}

async function readText(file: string): Promise<string | undefined> {
  return readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
}

/**
 * Creates the environment file, or sets only the given keys in the user's; the settings are checked
 * as prismd would read them before anything is written, so a typo fails here and not in the journal.
 */
async function updateEnvFile(file: string, values: Record<string, string>, out: (l: string) => void): Promise<{ url: string; dataDir: string }> {
  const existing = await readText(file);
  const next = setEnvValues(existing ?? NEW_ENV_FILE, values);
  const address = daemonAddress(parseEnvFile(next), file);
  const keys = Object.keys(values);
  if (existing === undefined) {
    await mkdir(dirname(file), { recursive: true, mode: 0o755 });
    await writeFile(file, next, { mode: 0o600 });
    out(`created ${file}${keys.length ? ` (${keys.join(', ')})` : ''}`);
  } else {
    if (next !== existing) await writeFile(file, next);
    out(`kept ${file} (your settings)${keys.length ? `; set ${keys.join(', ')}` : ''}`);
  }
  return address;
}

/** The URL install polls, and the data dir, from the settings the service will run with. */
function daemonAddress(env: Record<string, string>, envFile: string): { url: string; dataDir: string } {
  let cfg;
  try {
    cfg = resolveConfig({}, env);
  } catch (e) {
    throw new PrismError('INVALID_ARGUMENT', `${envFile}: ${(e as Error).message}`, { cause: e });
  }
  const host = { '0.0.0.0': '127.0.0.1', '::': '::1' }[cfg.apiHost] ?? cfg.apiHost;
  const scheme = cfg.tls.mode === 'off' ? 'http' : 'https';
  return { url: `${scheme}://${host.includes(':') ? `[${host}]` : host}:${cfg.apiPort}`, dataDir: cfg.dataDir };
}

export async function installService(o: InstallOptions): Promise<void> {
  requireSystemd(o.paths);
  const unit = renderUnit(o.template, { node: o.node, prismd: o.prismd });
  const { url, dataDir } = await updateEnvFile(o.paths.envFile, o.env, o.out);
  if ((await readText(o.paths.unitFile)) === unit) {
    o.out(`${o.paths.unitFile} is up to date (${o.node} ${o.prismd})`);
  } else {
    await mkdir(dirname(o.paths.unitFile), { recursive: true });
    await writeFile(o.paths.unitFile, unit, { mode: 0o644 });
    o.out(`wrote ${o.paths.unitFile} (${o.node} ${o.prismd})`);
  }
  await systemctl(o.host, 'daemon-reload');
  if (!o.start) {
    await systemctl(o.host, 'enable', UNIT_NAME);
    o.out(`enabled ${UNIT_NAME} (starts at boot); not started (--no-start): systemctl start prismd`);
    return;
  }
  await stopStrayDaemon(o, dataDir);
  const active = (await o.host.run('systemctl', ['is-active', '--quiet', UNIT_NAME])).code === 0;
  if (active) {
    await systemctl(o.host, 'enable', UNIT_NAME);
    await systemctl(o.host, 'restart', UNIT_NAME);
    o.out(`enabled ${UNIT_NAME} and restarted it (sandboxes keep running; prismd reattaches them)`);
  } else {
    await systemctl(o.host, 'enable', '--now', UNIT_NAME);
    o.out(`enabled ${UNIT_NAME} (starts at boot) and started it`);
  }
  await waitHealthy(o, url);
  o.out(`prismd is running as a systemd service, API ${url}`);
  o.out('  logs:     journalctl -u prismd -f');
  o.out(`  settings: ${o.paths.envFile}, then systemctl restart prismd`);
  o.out('  stop:     systemctl stop prismd (sandboxes keep running; prismd reattaches them when it starts)');
}

/** True while `pid` is a prismd: a pid file can outlive its process, and the pid be reused. */
function livePrismd(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('prismd');
  } catch {
    return false;
  }
}

/**
 * A prismd started by hand or by an older quick start (nohup) on the same data dir holds its pid lock
 * and port, so the unit's prismd would fail: stop it the way its own docs say (SIGTERM, a graceful
 * shutdown that leaves sandboxes running) and let the service take over.
 */
async function stopStrayDaemon(o: InstallOptions, dataDir: string): Promise<void> {
  const pid = Number((await readText(join(dataDir, 'prismd.pid')))?.trim());
  if (!Number.isInteger(pid) || pid <= 0 || !livePrismd(pid)) return;
  const main = Number((await o.host.run('systemctl', ['show', '--property', 'MainPID', '--value', UNIT_NAME])).stdout.trim());
  if (pid === main) return;
  o.out(`stopping prismd pid ${pid}, which runs outside systemd on ${dataDir} (its sandboxes keep running; the service takes them over)`);
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + (o.healthTimeoutMs ?? HEALTH_TIMEOUT_MS);
  while (livePrismd(pid)) {
    if (Date.now() > deadline) throw new PrismError('DEADLINE_EXCEEDED', `prismd pid ${pid} did not exit after SIGTERM; stop it, then run install-service again`);
    await sleep(o.pollMs ?? 250);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * How long an active unit may take to answer. Seconds on a server; minutes on a slow or emulated one
 * (measured: over 90 s in the host VM under TCG on a busy host). A unit that fails stops the wait at once.
 */
const HEALTH_TIMEOUT_MS = 300_000;

async function unitState(host: ServiceHost): Promise<Record<string, string>> {
  const r = await host.run('systemctl', ['show', '--property', 'ActiveState', '--property', 'SubState', UNIT_NAME]);
  return Object.fromEntries(r.stdout.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

async function journalTail(host: ServiceHost): Promise<string> {
  const r = await host.run('journalctl', ['--unit', UNIT_NAME, '--lines', '20', '--no-pager', '--output', 'cat']);
  return r.stdout.trim() ? `\nlast lines of its journal (journalctl -u prismd):\n${r.stdout.trimEnd()}` : '';
}

/** Waits for the API; fails early, with the journal's last lines, when the unit failed or is restarting after a crash. */
async function waitHealthy(o: InstallOptions, url: string): Promise<void> {
  const deadline = Date.now() + (o.healthTimeoutMs ?? HEALTH_TIMEOUT_MS);
  for (;;) {
    if (await o.host.healthy(`${url}/api/v1/health`)) return;
    const s = await unitState(o.host);
    if (s.ActiveState === 'failed' || s.SubState === 'auto-restart') {
      throw new PrismError('UNAVAILABLE', `${UNIT_NAME} failed to start (${s.ActiveState}/${s.SubState})${await journalTail(o.host)}`);
    }
    if (Date.now() > deadline) {
      throw new PrismError('DEADLINE_EXCEEDED', `${UNIT_NAME} is ${s.ActiveState ?? 'unknown'} but ${url} did not answer within ${Math.round((o.healthTimeoutMs ?? HEALTH_TIMEOUT_MS) / 1000)} s${await journalTail(o.host)}`);
    }
    await sleep(o.pollMs ?? 250);
  }
}

/** Stops, disables and removes the unit; leaves the settings and the data (see docs/install.md). */
export async function uninstallService(o: ServiceOptions): Promise<void> {
  requireSystemd(o.paths);
  const envText = await readText(o.paths.envFile);
  // Not resolveConfig: a broken settings file must not stop an uninstall.
  const dataDir = parseEnvFile(envText ?? '').PRISM_DATA_DIR ?? defaultDataDir();
  if (!existsSync(o.paths.unitFile)) {
    o.out(`${UNIT_NAME} is not installed (no ${o.paths.unitFile}); nothing to do`);
    return;
  }
  await systemctl(o.host, 'disable', '--now', UNIT_NAME);
  await rm(o.paths.unitFile, { force: true });
  await systemctl(o.host, 'daemon-reload');
  await o.host.run('systemctl', ['reset-failed', UNIT_NAME]); // forgets a failed state; fails harmlessly when there is none
  o.out(`stopped and disabled ${UNIT_NAME}; removed ${o.paths.unitFile}`);
  const kept = [...(envText !== undefined ? [`${o.paths.envFile} (settings)`] : []), `${dataDir} (data: images, volumes, sandboxes' files, the admin token)`];
  o.out(`kept ${kept.join(' and ')}`);
  o.out('sandboxes that were running keep running with no daemon: start prismd again to manage them, or see docs/install.md ("Uninstalling") to remove everything');
}
