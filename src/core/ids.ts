import { randomBytes } from 'node:crypto';
import { randomString } from './random-pool.js';

/** Sandbox ids: `sb-` + 12 lowercase hex chars. Short enough to type, long enough not to collide. */
export function newSandboxId(): string {
  return `sb-${randomString(6, 'hex')}`;
}

const SANDBOX_ID = /^sb-[0-9a-f]{12}$/;

/** Whether `s` has the form of a sandbox id: a sandbox's task is named by it, a driver's own tasks (warm pools) are not. */
export function isSandboxId(s: string): boolean {
  return SANDBOX_ID.test(s);
}

export function newSnapshotId(): string {
  return `snap-${randomString(6, 'hex')}`;
}

export function newExecId(): string {
  return `ex-${randomString(6, 'hex')}`;
}

const ADJECTIVES = ['amber', 'brisk', 'calm', 'dusky', 'eager', 'fuzzy', 'gentle', 'hazy', 'icy', 'jolly',
  'keen', 'lucid', 'mellow', 'nimble', 'olive', 'proud', 'quiet', 'rapid', 'sunny', 'tidy', 'vivid', 'witty'];
const NOUNS = ['otter', 'falcon', 'maple', 'comet', 'heron', 'cedar', 'lynx', 'pebble', 'raven', 'willow',
  'badger', 'quartz', 'fjord', 'ember', 'tundra', 'walrus', 'meadow', 'orca', 'sparrow', 'canyon'];

/** A readable name such as `brisk-heron-3f0a`, for nodes and unnamed sandboxes: about 29 million names; callers that generate one retry on a clash. */
export function readableName(): string {
  const b = randomBytes(4);
  return `${ADJECTIVES[b[0]! % ADJECTIVES.length]}-${NOUNS[b[1]! % NOUNS.length]}-${b.readUInt16BE(2).toString(16).padStart(4, '0')}`;
}

/** Names users give: DNS-label-like, so they are safe in paths, URLs and hostnames. */
export const NAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
