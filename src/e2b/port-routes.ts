import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { PrismError, httpStatusForCode } from '../core/errors.js';
import type { SandboxService } from '../service/sandbox-service.js';
import { runningSandbox, sameSecret, sandboxIdOf } from './envd-routes.js';
import { e2bError } from './control-routes.js';
import { passBodiesThrough, pathAfter, proxyToPort } from '../api/port-proxy.js';

/** Headers that are the gateway's business and never reach code in a sandbox. */
const STRIPPED = ['authorization', 'host', 'x-api-key', 'x-access-token', 'e2b-traffic-access-token', 'e2b-sandbox-id', 'e2b-sandbox-port', 'x-prism-forwarded-by'];

/**
 * `<port>-<id>.<domain>` for ports other than envd's (host-routing.ts rewrites those to
 * `/e2b/ports/<port>/...`): HTTP to that port of the sandbox, any port, as on E2B. Needs the sandbox's
 * traffic token (`E2B-Traffic-Access-Token`, the `trafficAccessToken` of the create), runs on the owner.
 */
export async function registerSandboxPortRoutes(app: FastifyInstance, sandboxes: SandboxService): Promise<void> {
  passBodiesThrough(app);
  const handler = async (req: FastifyRequest<{ Params: { port: string } }>, reply: FastifyReply) => {
    const id = sandboxIdOf(req);
    const port = Number(req.params.port);
    if (!id || !(port >= 1 && port <= 65535)) return e2bError(reply, 400, 'no sandbox or port: reach ports as <port>-<sandbox id>.<domain>');
    const sb = await runningSandbox(sandboxes, id);
    if (!sb) return reply.status(502).send({ sandboxId: id, message: 'The sandbox was not found', code: 502 });
    const token = req.headers['e2b-traffic-access-token'];
    const secret = sb.secrets?.traffic;
    const ok = typeof token === 'string' && !!secret && sameSecret(token, secret);
    if (!ok) return e2bError(reply, 401, 'missing or invalid traffic token (E2B-Traffic-Access-Token: the trafficAccessToken the create returned)');
    let target: { host: string; port: number };
    try {
      target = await sandboxes.portTarget(id, port, { anyPort: true });
    } catch (e) {
      if (e instanceof PrismError) return e2bError(reply, httpStatusForCode[e.code], e.message);
      throw e;
    }
    return proxyToPort(reply, target, pathAfter(req.url, /\/e2b\/ports\/[0-9]+/), STRIPPED, (r) => {
      void r.status(502).send({ sandboxId: id, message: `nothing answered on port ${port} of the sandbox`, code: 502 });
    });
  };
  for (const url of ['/:port', '/:port/*']) {
    app.route({ method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'], url, config: { owner: sandboxIdOf }, handler });
  }
}
