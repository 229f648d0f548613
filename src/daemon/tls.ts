import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PrismError } from '../core/errors.js';

const run = promisify(execFile);

/** PEM material the API serves with, and the CA it trusts when it calls other nodes. */
export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  /** The CA that signed every node's certificate (peers are verified against it). */
  ca: Buffer;
  /** Where the CA certificate is, for users to hand to prismctl --ca / the SDK. */
  caFile: string;
  /** Where the node's certificate and key are (the etcd member prismd runs uses them too). */
  certFile: string;
  keyFile: string;
}

export type TlsConfig =
  | { mode: 'off' }
  | { mode: 'files'; cert: string; key: string; ca?: string }
  | { mode: 'auto'; ca?: string; caKey?: string };

async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args, { timeout: 30_000 });
  } catch (e) {
    const err = e as { code?: string; stderr?: string };
    if (err.code === 'ENOENT') throw new PrismError('FAILED_PRECONDITION', '--tls auto needs the openssl command (apt-get install openssl)');
    throw new PrismError('INTERNAL', `openssl ${args[0]} failed: ${err.stderr ?? String(e)}`, { cause: e });
  }
}

/** Names the node certificate must cover: loopback, this host, and the advertised host. */
export function certificateNames(advertiseHost: string | undefined, extra: string[] = []): string[] {
  const names = new Set(['localhost', '127.0.0.1', '::1', os.hostname()]);
  for (const h of [advertiseHost, ...extra]) if (h) names.add(h.replace(/^\[|\]$/g, ''));
  return [...names];
}

function coversAll(certPem: Buffer, names: string[]): boolean {
  const cert = new X509Certificate(certPem);
  if (Date.parse(cert.validTo) < Date.now() + 7 * 86400_000) return false; // renew a week early
  return names.every((n) => (isIP(n) ? cert.checkIP(n) : cert.checkHost(n)) !== undefined);
}

/**
 * `--tls auto`: a private CA (kept in `<dataDir>/tls/`, or the cluster's own with --tls-ca and
 * --tls-ca-key, so that nodes trust each other) signs a node certificate for the names this node is
 * reached by. Keys are 0600. The node certificate is renewed when a name is missing or it nears expiry.
 */
async function autoTls(dataDir: string, cfg: { ca?: string; caKey?: string }, names: string[]): Promise<TlsMaterial> {
  const dir = join(dataDir, 'tls');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caFile = cfg.ca ?? join(dir, 'ca.crt');
  const caKey = cfg.caKey ?? join(dir, 'ca.key');
  if (!existsSync(caFile) || !existsSync(caKey)) {
    if (cfg.ca) throw new PrismError('INVALID_ARGUMENT', `--tls-ca ${cfg.ca} needs its key (--tls-ca-key) to sign this node's certificate`);
    await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '3650',
      '-subj', '/CN=Prism cluster CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-keyout', caKey, '-out', caFile]);
    await chmod(caKey, 0o600);
  }
  const certFile = join(dir, 'node.crt');
  const keyFile = join(dir, 'node.key');
  if (!existsSync(certFile) || !existsSync(keyFile) || !coversAll(await readFile(certFile), names)) {
    const csr = join(dir, 'node.csr');
    const ext = join(dir, 'node.ext');
    const san = names.map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
    await writeFile(ext, `subjectAltName=${san}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n`);
    await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${os.hostname()}`, '-keyout', keyFile, '-out', csr]);
    await chmod(keyFile, 0o600);
    await openssl(['x509', '-req', '-in', csr, '-CA', caFile, '-CAkey', caKey, '-CAcreateserial', '-days', '825', '-extfile', ext, '-out', certFile]);
    await rm(csr, { force: true });
    await rm(ext, { force: true });
  }
  return { cert: await readFile(certFile), key: await readFile(keyFile), ca: await readFile(caFile), caFile, certFile, keyFile };
}

/** `extraNames`: more hosts the certificate must cover (where this node's etcd member is reached). */
export async function loadTls(cfg: TlsConfig, dataDir: string, advertiseHost?: string, extraNames: string[] = []): Promise<TlsMaterial | undefined> {
  if (cfg.mode === 'off') return undefined;
  if (cfg.mode === 'auto') return autoTls(dataDir, cfg, certificateNames(advertiseHost, extraNames));
  const read = async (what: string, file: string) => {
    try {
      return await readFile(file);
    } catch (e) {
      throw new PrismError('INVALID_ARGUMENT', `cannot read ${what} ${file}: ${(e as Error).message}`, { cause: e });
    }
  };
  const cert = await read('--tls-cert', cfg.cert);
  const key = await read('--tls-key', cfg.key);
  // Without --tls-ca, peers are trusted by the node certificate's own chain (one shared certificate).
  const caFile = cfg.ca ?? cfg.cert;
  return { cert, key, ca: await read('--tls-ca', caFile), caFile, certFile: cfg.cert, keyFile: cfg.key };
}
