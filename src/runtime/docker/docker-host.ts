import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type Docker from 'dockerode';

/**
 * dockerode connection options for a Docker host URL, as the docker CLI reads them: `unix:///path`,
 * or `tcp://host:port` with TLS when DOCKER_TLS_VERIFY=1 or the port is 2376, certificates from
 * DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem). Without a URL, DOCKER_HOST, then /var/run/docker.sock.
 */
export function dockerConnection(host: string | undefined, env: NodeJS.ProcessEnv = process.env): Docker.DockerOptions {
  const url = host ?? env.DOCKER_HOST;
  if (!url) return { socketPath: '/var/run/docker.sock' };
  if (url.startsWith('unix://')) return { socketPath: url.slice('unix://'.length) };
  const u = new URL(url.replace(/^tcp:/, 'http:'));
  const port = u.port || '2375';
  const tls = env.DOCKER_TLS_VERIFY === '1' || port === '2376';
  const opts: Docker.DockerOptions = { host: u.hostname, port, protocol: tls ? 'https' : 'http' };
  if (tls && env.DOCKER_CERT_PATH) {
    const read = (f: string) => readFileSync(join(env.DOCKER_CERT_PATH!, f));
    Object.assign(opts, { ca: read('ca.pem'), cert: read('cert.pem'), key: read('key.pem') });
  }
  return opts;
}

/** The host as shown to users (probe details, errors). */
export function describeConnection(o: Docker.DockerOptions): string {
  return o.socketPath ? `unix://${String(o.socketPath)}` : `${o.protocol ?? 'http'}://${o.host}:${o.port}`;
}
