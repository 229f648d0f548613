import { Header } from 'tar';

/** The resolv.conf of a sandbox with a network: its name servers, or a note that it resolves nothing. */
export function resolvConf(nameservers: readonly string[]): string {
  return nameservers.map((ns) => `nameserver ${ns}\n`).join('') || '# no name servers: egress policy allows no names\n';
}

/**
 * A tar stream of one file, `resolv.conf` (root, 0644), for the engine's archive API to put into a
 * created container's /etc: through the API only, so no shared filesystem with the engine is assumed.
 */
export function resolvConfArchive(nameservers: readonly string[]): Buffer {
  const body = Buffer.from(resolvConf(nameservers));
  const header = new Header({ path: 'resolv.conf', mode: 0o644, size: body.length, mtime: new Date(0), type: 'File', uid: 0, gid: 0 });
  header.encode();
  const pad = Buffer.alloc((512 - (body.length % 512)) % 512);
  // Two zero blocks end the archive.
  return Buffer.concat([header.block!, body, pad, Buffer.alloc(1024)]);
}
