import { PrismError } from '../../core/errors.js';
import type { TaskSpec } from '../driver.js';
import { checkHostname } from './guest-files.js';

/** What the microvm driver accepts in a TaskSpec. */

export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const NUMERIC_USER = /^(\d+)(?::(\d+))?$/;

/** Numeric `uid[:gid]` -> the agent's "uid gid groups"; names would need the image's passwd inside the guest. */
export function agentUser(user: string | undefined): string | undefined {
  if (user === undefined || user === '') return undefined;
  const m = NUMERIC_USER.exec(user);
  if (!m) throw new PrismError('FAILED_PRECONDITION', 'named users are not supported on microvm yet; use a numeric uid[:gid]');
  const gid = m[2] ?? '0';
  return `${m[1]} ${gid} ${gid}`;
}

export function validateSpec(spec: TaskSpec): void {
  if (!ID_PATTERN.test(spec.id)) throw new PrismError('INVALID_ARGUMENT', `invalid task id: ${JSON.stringify(spec.id)}`);
  if (spec.layers.length === 0) throw new PrismError('INVALID_ARGUMENT', 'a task needs at least one layer');
  if (!(spec.memoryMb >= 32 && spec.cpus > 0 && spec.pidsLimit > 0)) {
    throw new PrismError('INVALID_ARGUMENT', 'memoryMb must be >= 32, cpus and pidsLimit positive');
  }
  if (!spec.workdir.startsWith('/')) throw new PrismError('INVALID_ARGUMENT', 'workdir must be an absolute path');
  if (spec.hostname !== '') checkHostname(spec.hostname);
  agentUser(spec.user);
}
