import { listenProblem } from '../listen-probe.js';
import type { Check, DoctorContext } from './check.js';

/** The API address must be free for prismd to start, or already served by a prismd (then all is well). */
export async function checkApiPort(ctx: DoctorContext): Promise<Check> {
  const { apiHost: host, apiPort: port, tls } = ctx.cfg;
  const addr = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  if (port === 0) return { name: 'api port', status: 'ok', detail: `${addr}: prismd takes a free port when it starts` };
  const state = await ctx.sys.tryListen(host, port);
  if (state === 'free') return { name: 'api port', status: 'ok', detail: `${addr} is free` };
  if (state === 'EADDRINUSE') {
    const local = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host;
    const health = await ctx.sys.health(`${tls.mode === 'off' ? 'http' : 'https'}://${local}:${port}/api/v1/health`);
    if (health) return { name: 'api port', status: 'ok', detail: `${addr} is served by a running prismd (node ${health.node ?? '?'}, version ${health.version ?? '?'})` };
  }
  return { name: 'api port', status: 'fail', detail: listenProblem(host, port, state), fix: 'stop what listens there (ss -ltnp), or choose another --api HOST:PORT' };
}
