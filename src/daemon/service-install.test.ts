import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isPrismError } from '../core/errors.js';
import { packageRoot } from './package-info.js';
import { installService, renderUnit, stableNodePath, uninstallService, type CommandResult, type ServiceHost, type ServicePaths } from './service-install.js';

const TEMPLATE = readFileSync(join(packageRoot(), 'packaging', 'systemd', 'prismd.service'), 'utf8');
const FILES = { node: '/usr/bin/node', prismd: '/opt/prism/bin/prismd.js' };

/** A unit file as section -> directive -> values (a directive may repeat). */
function parseUnit(text: string): Record<string, Record<string, string[]>> {
  const out: Record<string, Record<string, string[]>> = {};
  let section = '';
  for (const line of text.split('\n')) {
    if (/^\s*(#|;|$)/.test(line)) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      out[section] = {};
      continue;
    }
    const i = line.indexOf('=');
    ((out[section]![line.slice(0, i)] ??= []) as string[]).push(line.slice(i + 1));
  }
  return out;
}

/** systemctl/journalctl stand-in: records each command, answers from `answers` (by command line), else exit 0. */
class FakeHost implements ServiceHost {
  calls: string[] = [];
  answers = new Map<string, Partial<CommandResult>>();
  health: boolean[] = [true];
  healthUrls: string[] = [];
  async run(cmd: string, args: string[]): Promise<CommandResult> {
    const line = [cmd, ...args].join(' ');
    this.calls.push(line);
    return { code: 0, stdout: '', stderr: '', ...this.answers.get(line) };
  }
  async healthy(url: string): Promise<boolean> {
    this.healthUrls.push(url);
    return this.health.length > 1 ? this.health.shift()! : this.health[0]!;
  }
}

const IS_ACTIVE = 'systemctl is-active --quiet prismd.service';
const STATE = 'systemctl show --property ActiveState --property SubState prismd.service';
const MAIN_PID = 'systemctl show --property MainPID --value prismd.service';

let dir: string;
let paths: ServicePaths;
let host: FakeHost;
let out: string[];
/** Always with a data dir of the test's own: install SIGTERMs a prismd whose pid file it finds there. */
const options = (extra: { env?: Record<string, string>; start?: boolean; healthTimeoutMs?: number } = {}) => ({
  paths, host, out: (l: string) => out.push(l), template: TEMPLATE, ...FILES, start: extra.start ?? true, pollMs: 1,
  healthTimeoutMs: extra.healthTimeoutMs ?? 2000, env: { PRISM_DATA_DIR: join(dir, 'data'), ...extra.env },
});

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'prism-service-'));
  paths = { unitFile: join(dir, 'etc/systemd/system/prismd.service'), envFile: join(dir, 'etc/prism/prismd.env'), systemdRunDir: join(dir, 'run/systemd/system') };
  mkdirSync(paths.systemdRunDir, { recursive: true });
  host = new FakeHost();
  host.answers.set(IS_ACTIVE, { code: 3 });
  out = [];
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(() => undefined, (e: unknown) => e);
}

describe('the prismd.service unit', () => {
  it('runs the given node on the checkout, reads the env file, logs to the journal, is restarted on failure, and kills only what is left in its own cgroup', () => {
    const unit = parseUnit(renderUnit(TEMPLATE, FILES));
    expect(unit.Unit).toMatchObject({ After: ['network-online.target'], Wants: ['network-online.target'] });
    expect(unit.Service).toEqual({
      Type: ['exec'],
      EnvironmentFile: ['-/etc/prism/prismd.env'],
      ExecStart: ['/usr/bin/node /opt/prism/bin/prismd.js'],
      KillMode: ['mixed'],
      TimeoutStopSec: ['30'],
      Restart: ['on-failure'],
      RestartSec: ['5'],
      LimitNOFILE: ['65536'],
      TasksMax: ['infinity'],
    });
    expect(unit.Install).toEqual({ WantedBy: ['multi-user.target'] });
    // Logs go to the journal: nothing redirects stdout/stderr, and prismd gets no --log-file.
    expect(renderUnit(TEMPLATE, FILES)).not.toMatch(/^(StandardOutput|StandardError|Delegate)=/m);
  });

  it('quotes paths with spaces, doubles % (a systemd specifier) and refuses what a unit cannot hold', () => {
    const unit = renderUnit(TEMPLATE, { node: '/opt/node 20/bin/node', prismd: '/srv/100%/bin/prismd.js' });
    expect(parseUnit(unit).Service!.ExecStart).toEqual(['"/opt/node 20/bin/node" /srv/100%%/bin/prismd.js']);
    expect(() => renderUnit(TEMPLATE, { node: '/a"b', prismd: '/x' })).toThrow(/cannot put/);
    expect(() => renderUnit(`${TEMPLATE}\n# @OTHER@\n`, FILES)).toThrow(/@OTHER@/);
  });
});

describe('prismd install-service', () => {
  it('refuses, touching nothing, when systemd is not PID 1', async () => {
    rmSync(paths.systemdRunDir, { recursive: true });
    const err = await rejection(installService(options()));
    expect(isPrismError(err, 'FAILED_PRECONDITION')).toBe(true);
    expect((err as Error).message).toMatch(/systemd is not running this machine .*docs\/install\.md/);
    expect(existsSync(paths.unitFile) || existsSync(paths.envFile)).toBe(false);
    expect(host.calls).toEqual([]);
  });

  it('on a fresh host: writes the unit and a new env file (0600) with --env, enables and starts the unit, waits for the API', async () => {
    host.health = [false, false, true];
    host.answers.set(STATE, { stdout: 'ActiveState=active\nSubState=running\n' });
    await installService(options({ env: { PRISM_API: '0.0.0.0:9008' } }));
    expect(readFileSync(paths.unitFile, 'utf8')).toBe(renderUnit(TEMPLATE, FILES));
    const env = readFileSync(paths.envFile, 'utf8');
    expect(env).toMatch(/^# prismd's settings/);
    expect(env).toMatch(/^PRISM_API=0\.0\.0\.0:9008$/m);
    expect(statSync(paths.envFile).mode & 0o777).toBe(0o600);
    expect(host.calls).toEqual(['systemctl daemon-reload', IS_ACTIVE, 'systemctl enable --now prismd.service', STATE, STATE]);
    expect(host.healthUrls).toEqual(Array(3).fill('http://127.0.0.1:9008/api/v1/health'));
    expect(out.join('\n')).toMatch(/created .*prismd\.env \(PRISM_DATA_DIR, PRISM_API\)[^]*started it[^]*API http:\/\/127\.0\.0\.1:9008[^]*journalctl -u prismd/);
  });

  it('on an upgrade: keeps the user\'s env file except the keys given, rewrites the unit, restarts the running service', async () => {
    mkdirSync(join(dir, 'etc/prism'), { recursive: true });
    const mine = `# my settings\nPRISM_API=127.0.0.1:7000\nPRISM_RUNTIME=oci\nPRISM_TLS=auto\nPRISM_DATA_DIR=${join(dir, 'data')}\n`;
    writeFileSync(paths.envFile, mine);
    mkdirSync(join(dir, 'etc/systemd/system'), { recursive: true });
    writeFileSync(paths.unitFile, 'an older unit');
    host.answers.set(IS_ACTIVE, { code: 0 });
    await installService(options({ env: { PRISM_LOG_LEVEL: 'debug' } }));
    expect(readFileSync(paths.envFile, 'utf8')).toBe(`${mine}PRISM_LOG_LEVEL=debug\n`);
    expect(readFileSync(paths.unitFile, 'utf8')).toBe(renderUnit(TEMPLATE, FILES));
    expect(host.calls).toEqual(['systemctl daemon-reload', IS_ACTIVE, 'systemctl enable prismd.service', 'systemctl restart prismd.service']);
    expect(host.healthUrls).toEqual(['https://127.0.0.1:7000/api/v1/health']);
    expect(out.join('\n')).toMatch(/kept .*prismd\.env \(your settings\); set PRISM_DATA_DIR, PRISM_LOG_LEVEL[^]*restarted it/);

    host.calls = [];
    out = [];
    await installService(options());
    expect(readFileSync(paths.envFile, 'utf8')).toBe(`${mine}PRISM_LOG_LEVEL=debug\n`);
    expect(out[1]).toMatch(/prismd\.service is up to date/);
  });

  it('--no-start enables the unit without starting it or waiting', async () => {
    await installService(options({ start: false }));
    expect(host.calls).toEqual(['systemctl daemon-reload', 'systemctl enable prismd.service']);
    expect(host.healthUrls).toEqual([]);
    expect(out.at(-1)).toMatch(/not started \(--no-start\): systemctl start prismd/);
  });

  it('refuses settings prismd would refuse, before writing anything', async () => {
    const err = await rejection(installService(options({ env: { PRISM_API: 'nowhere' } })));
    expect(isPrismError(err, 'INVALID_ARGUMENT')).toBe(true);
    expect((err as Error).message).toMatch(/prismd\.env: --api must be HOST:PORT, got 'nowhere'/);
    expect(existsSync(paths.envFile) || existsSync(paths.unitFile)).toBe(false);
    expect(host.calls).toEqual([]);
  });

  it('reports a unit that crashes with the last lines of its journal, without waiting for the timeout', async () => {
    host.health = [false];
    host.answers.set(STATE, { stdout: 'ActiveState=activating\nSubState=auto-restart\n' });
    host.answers.set('journalctl --unit prismd.service --lines 20 --no-pager --output cat', { stdout: 'prismd: no usable runtime on this host\n' });
    const err = await rejection(installService(options({ healthTimeoutMs: 60_000 })));
    expect(isPrismError(err, 'UNAVAILABLE')).toBe(true);
    expect((err as Error).message).toMatch(/prismd\.service failed to start \(activating\/auto-restart\)\nlast lines of its journal \(journalctl -u prismd\):\nprismd: no usable runtime/);
  });

  it('gives up when the API does not answer in time', async () => {
    host.health = [false];
    host.answers.set(STATE, { stdout: 'ActiveState=active\nSubState=running\n' });
    const err = await rejection(installService(options({ healthTimeoutMs: 30 })));
    expect(isPrismError(err, 'DEADLINE_EXCEEDED')).toBe(true);
    expect((err as Error).message).toMatch(/prismd\.service is active but http:\/\/127\.0\.0\.1:8008 did not answer/);
  });

  it('says which systemctl command failed and why', async () => {
    host.answers.set('systemctl enable --now prismd.service', { code: 1, stderr: 'Failed to enable unit: Access denied\n' });
    const err = await rejection(installService(options()));
    expect((err as Error).message).toBe('systemctl enable --now prismd.service failed (exit 1): Failed to enable unit: Access denied');
  });

  it('stops a prismd running outside systemd on the same data dir (SIGTERM) so that the service can take over, but never the service\'s own', async () => {
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir);
    const stray = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'prismd']);
    const exited = new Promise<NodeJS.Signals | null>((r) => stray.once('exit', (_code, sig) => r(sig)));
    try {
      await new Promise((r) => stray.once('spawn', r));
      writeFileSync(join(dataDir, 'prismd.pid'), String(stray.pid));
      host.answers.set(MAIN_PID, { stdout: String(stray.pid) });
      await installService(options());
      expect(stray.exitCode ?? stray.signalCode).toBe(null);

      host.answers.set(MAIN_PID, { stdout: '0\n' });
      await installService(options());
      expect(await exited).toBe('SIGTERM');
      expect(out.join('\n')).toContain(`stopping prismd pid ${stray.pid}, which runs outside systemd`);
      expect(host.calls.indexOf(MAIN_PID)).toBeLessThan(host.calls.lastIndexOf('systemctl enable --now prismd.service'));
    } finally {
      stray.kill('SIGKILL');
    }
  });
});

describe('prismd uninstall-service', () => {
  it('stops, disables and removes the unit; keeps the env file and the data dir and says so', async () => {
    mkdirSync(join(dir, 'etc/systemd/system'), { recursive: true });
    mkdirSync(join(dir, 'etc/prism'), { recursive: true });
    writeFileSync(paths.unitFile, renderUnit(TEMPLATE, FILES));
    writeFileSync(paths.envFile, 'PRISM_DATA_DIR=/srv/prism\n');
    await uninstallService({ paths, host, out: (l) => out.push(l) });
    expect(host.calls).toEqual(['systemctl disable --now prismd.service', 'systemctl daemon-reload', 'systemctl reset-failed prismd.service']);
    expect(existsSync(paths.unitFile)).toBe(false);
    expect(readFileSync(paths.envFile, 'utf8')).toBe('PRISM_DATA_DIR=/srv/prism\n');
    expect(out.join('\n')).toMatch(/removed .*prismd\.service\nkept .*prismd\.env \(settings\) and \/srv\/prism \(data/);
  });

  it('does nothing when the unit is not installed, and refuses without systemd', async () => {
    await uninstallService({ paths, host, out: (l) => out.push(l) });
    expect(host.calls).toEqual([]);
    expect(out).toEqual([`prismd.service is not installed (no ${paths.unitFile}); nothing to do`]);
    rmSync(paths.systemdRunDir, { recursive: true });
    expect(isPrismError(await rejection(uninstallService({ paths, host, out: () => undefined })), 'FAILED_PRECONDITION')).toBe(true);
  });
});

describe('the node binary in ExecStart', () => {
  it('is the PATH entry that resolves to the running node (a symlink an upgrade re-points), else the node itself', () => {
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    expect(stableNodePath(process.execPath, `relative:${join(dir, 'nothing')}:${bin}:/usr/bin`)).toBe(join(bin, 'node'));
    expect(stableNodePath(process.execPath, join(dir, 'nothing'))).toBe(process.execPath);
  });
});
