import type { FastifyInstance } from 'fastify';
import type { ExecService } from '../service/exec-service.js';
import type { FileService } from '../service/file-service.js';
import type { Logger } from '../service/logger.js';
import type { ProcessService } from '../service/process-service.js';
import type { SandboxMetrics } from '../service/sandbox-metrics.js';
import type { SandboxService } from '../service/sandbox-service.js';
import type { SnapshotService } from '../service/snapshot-service.js';
import type { TokenService } from '../service/token-service.js';
import { CodeInterpreters } from './code-interpreter.js';
import { registerControlRoutes } from './control-routes.js';
import { EnvdProcesses } from './envd-process.js';
import { registerEnvdRoutes, registerSignedFileRoutes, sandboxIdOf, signedSandboxId } from './envd-routes.js';
import { E2B_PREFIX, ENVD_PREFIX } from './paths.js';
import { registerSandboxPortRoutes } from './port-routes.js';
import { PORTS_PREFIX } from './host-routing.js';

/**
 * The E2B-compatible gateway (docs/e2b.md) on prismd's own port: `/e2b` is E2B's control-plane API,
 * `/e2b/envd` its in-sandbox envd. It only translates: every sandbox is a Prism sandbox, every call a
 * call on Prism's services; nothing E2B-shaped goes below this folder.
 */

export { E2B_PREFIX, ENVD_PREFIX } from './paths.js';

export interface GatewayDeps {
  sandboxes: SandboxService;
  snapshots: SnapshotService;
  metrics: SandboxMetrics;
  files: FileService;
  processes: ProcessService;
  exec: ExecService;
  tokens?: TokenService;
  nodeId: string;
  defaultImage: string;
  maxTimeoutSec: number;
  /** What create answers as `domain` (`--e2b-domain`); absent: the Host the client called. */
  domain?: string;
  log: Logger;
}

/** Requests the gateway authenticates itself (API key, or a sandbox's access token), not Prism's bearer. */
export function isGatewayPath(url: string): boolean {
  // `/files` at the root: the SDK's signed upload and download URLs (checked by signature).
  return url === E2B_PREFIX || url.startsWith(`${E2B_PREFIX}/`) || url.startsWith(`${E2B_PREFIX}?`) || url === '/files' || url.startsWith('/files?');
}

export async function registerE2bGateway(app: FastifyInstance, deps: GatewayDeps): Promise<void> {
  const processes = new EnvdProcesses(deps.processes);
  const codeInterpreters = new CodeInterpreters(deps.exec, deps.log);
  app.addHook('onClose', async () => codeInterpreters.close());
  await app.register(
    async (envd) => {
      // Every envd call acts on processes and files of one sandbox: it runs on the node owning it.
      envd.addHook('onRoute', (route) => {
        route.config = { ...(route.config ?? {}), owner: sandboxIdOf };
      });
      await registerEnvdRoutes(envd, { sandboxes: deps.sandboxes, codeInterpreters, files: deps.files, processes, maxTimeoutSec: deps.maxTimeoutSec, log: deps.log });
    },
    { prefix: ENVD_PREFIX },
  );
  await app.register((ports) => registerSandboxPortRoutes(ports, deps.sandboxes), { prefix: PORTS_PREFIX });
  // The SDK's uploadUrl() / downloadUrl() under one E2B_SANDBOX_URL: /files at the root, signed.
  await app.register(async (root) => {
    root.addHook('onRoute', (route) => {
      route.config = { ...(route.config ?? {}), owner: (req) => signedSandboxId(req, deps.sandboxes) };
    });
    await registerSignedFileRoutes(root, deps.sandboxes, deps.files, deps.log);
  });
  await app.register(
    async (api) => {
      registerControlRoutes(api, {
        sandboxes: deps.sandboxes,
        metrics: deps.metrics,
        snapshots: deps.snapshots,
        execRecords: (id) => deps.exec.logs(id),
        ...(deps.tokens ? { tokens: deps.tokens } : {}),
        templates: { defaultImage: deps.defaultImage },
        nodeId: deps.nodeId,
        ...(deps.domain ? { domain: deps.domain } : {}),
        log: deps.log,
      });
    },
    { prefix: E2B_PREFIX },
  );
}
