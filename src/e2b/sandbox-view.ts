import type { Sandbox } from '../core/types.js';
import type { SandboxMetricWire } from '../core/wire.js';
import { CODE_INTERPRETER_IMAGE } from '../images/base-image.js';

/**
 * How a Prism sandbox looks to the E2B SDKs (../shared/reference/e2b-wire.md §3). A template is an image
 * reference; `base` is the node's default image and `code-interpreter-v1` the code-interpreter image.
 */

/** The envd version the gateway answers as: the highest whose feature gates it passes (docs/e2b.md). */
export const ENVD_VERSION = '0.5.7';


export interface TemplateMap {
  /** The node's default image, for `base`. */
  defaultImage: string;
}

/** E2B template id -> image reference; the original id is kept in the sandbox's metadata. */
export function imageForTemplate(templateID: string | undefined, m: TemplateMap): string {
  if (!templateID || templateID === 'base') return m.defaultImage;
  if (templateID === 'code-interpreter-v1' || templateID === 'code-interpreter') return CODE_INTERPRETER_IMAGE;
  return templateID;
}

/** Metadata key holding the E2B template id a sandbox was created from. */
export const TEMPLATE_KEY = 'e2b.template';

/** The client's metadata without the gateway's own keys. */
export function clientMetadata(sb: Sandbox): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(sb.metadata ?? {})) if (!k.startsWith('e2b.')) out[k] = v;
  return out;
}

export function templateOf(sb: Sandbox): string {
  return sb.metadata?.[TEMPLATE_KEY] ?? sb.image;
}

/** When the sandbox's timeout ends (its start + timeoutSec); far in the future when it has none. */
export function endAt(sb: Sandbox): string {
  const start = Date.parse(sb.startedAt ?? sb.createdAt);
  return new Date(sb.timeoutSec ? start + sb.timeoutSec * 1000 : Date.UTC(9999, 11, 31)).toISOString();
}

/** E2B knows running and paused; a stopped Prism sandbox (filesystem kept) is the nearest to paused. */
export function stateOf(sb: Sandbox): 'running' | 'paused' {
  return sb.status === 'running' ? 'running' : 'paused';
}

export interface View {
  /** What `domain` answers: the host (and port) the SDK builds sandbox URLs from. */
  domain: string;
  /** Node id, as E2B's clientID. */
  clientID: string;
}

/** The create / connect answer. */
export function sandboxCreated(sb: Sandbox, v: View) {
  return {
    sandboxID: sb.id,
    templateID: templateOf(sb),
    alias: templateOf(sb),
    clientID: v.clientID,
    envdVersion: ENVD_VERSION,
    envdAccessToken: sb.secrets?.access ?? null,
    trafficAccessToken: sb.secrets?.traffic ?? null,
    domain: v.domain,
  };
}

export function sandboxListed(sb: Sandbox, v: View) {
  const meta = clientMetadata(sb);
  return {
    sandboxID: sb.id,
    templateID: templateOf(sb),
    alias: templateOf(sb),
    clientID: v.clientID,
    metadata: meta,
    startedAt: sb.startedAt ?? sb.createdAt,
    endAt: endAt(sb),
    state: stateOf(sb),
    cpuCount: Math.max(1, Math.ceil(sb.cpus)),
    memoryMB: sb.memoryMb,
    diskSizeMB: sb.diskMb,
    envdVersion: ENVD_VERSION,
    volumeMounts: (sb.volumes ?? []).map((m) => ({ name: m.name, path: m.mountPath })),
  };
}

export function sandboxDetail(sb: Sandbox, v: View) {
  const egress = sb.network?.egress ?? 'none';
  return {
    ...sandboxListed(sb, v),
    domain: v.domain,
    envdAccessToken: sb.secrets?.access ?? null,
    allowInternetAccess: egress !== 'none',
    lifecycle: { onTimeout: sb.onTimeout === 'delete' ? 'kill' : 'pause', autoResume: sb.autoResume !== false },
  };
}

/** A Prism usage sample as E2B's SandboxMetric (cpuCount is an integer there: the limit rounded up). */
export function metricView(m: SandboxMetricWire) {
  return {
    timestamp: m.timestamp,
    timestampUnix: Math.floor(Date.parse(m.timestamp) / 1000),
    cpuUsedPct: m.cpuUsedPct,
    cpuCount: Math.max(1, Math.ceil(m.cpuCount)),
    memUsed: m.memUsed,
    memTotal: m.memTotal,
    memCache: m.memCache,
    diskUsed: m.diskUsed,
    diskTotal: m.diskTotal,
  };
}
