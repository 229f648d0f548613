import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import { PrismError } from '../core/errors.js';
import { parseAssignment } from './env-file.js';
import { packageRoot } from './package-info.js';
import { SYSTEM_PATHS, installService, requireSystemd, stableNodePath, uninstallService, type CommandResult, type ServiceHost } from './service-install.js';

/** The real host: commands through execFile, health over HTTP(S). */
export function systemServiceHost(): ServiceHost {
  return {
    run: (cmd, args) =>
      new Promise<CommandResult>((resolve, reject) => {
        // systemctl restart waits for the stop (TimeoutStopSec=30) and the start.
        execFile(cmd, args, { timeout: 120_000 }, (err, stdout, stderr) => {
          if (!err) return resolve({ code: 0, stdout, stderr });
          if (typeof err.code === 'number') return resolve({ code: err.code, stdout, stderr });
          if (err.signal) return resolve({ code: -1, stdout, stderr: `${stderr}${cmd} ${args.join(' ')} did not finish within 120 s` });
          reject(new PrismError('FAILED_PRECONDITION', `cannot run ${cmd}: ${err.message}`, { cause: err }));
        });
      }),
    healthy: (url) =>
      new Promise<boolean>((resolve) => {
        // A liveness probe of our own daemon that sends no credential: with --tls auto its certificate is
        // signed by a CA this process need not know, so it is not verified here.
        const get = url.startsWith('https:') ? https.get : http.get;
        const req = get(url, { timeout: 2000, rejectUnauthorized: false }, (res) => {
          res.resume();
          resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300);
        });
        req.on('timeout', () => req.destroy());
        req.on('error', () => resolve(false));
      }),
  };
}

function requireRoot(command: string): void {
  if (process.getuid?.() !== 0) {
    throw new PrismError('PERMISSION_DENIED', `${command} writes to /etc and runs systemctl: run it as root (sudo prismd ${command})`);
  }
}

const print = (line: string) => process.stdout.write(`${line}\n`);

/** `prismd install-service [--env KEY=VALUE ...] [--no-start]` */
export async function installServiceCommand(flags: { env?: string[]; start: boolean }): Promise<void> {
  requireSystemd(SYSTEM_PATHS);
  requireRoot('install-service');
  const root = packageRoot();
  await installService({
    paths: SYSTEM_PATHS,
    host: systemServiceHost(),
    out: print,
    template: await readFile(join(root, 'packaging', 'systemd', 'prismd.service'), 'utf8'),
    node: stableNodePath(process.execPath, process.env.PATH ?? ''),
    prismd: join(root, 'bin', 'prismd.js'),
    env: Object.fromEntries((flags.env ?? []).map(parseAssignment)),
    start: flags.start,
  });
}

/** `prismd uninstall-service` */
export async function uninstallServiceCommand(): Promise<void> {
  requireSystemd(SYSTEM_PATHS);
  requireRoot('uninstall-service');
  await uninstallService({ paths: SYSTEM_PATHS, host: systemServiceHost(), out: print });
}
