import { ERROR_CODES } from './errors.js';

/**
 * The sandbox lifecycle: every status, and the statuses each may move to. Every change of a sandbox's
 * status anywhere (service, node agent, scheduler, recovery) is a compare-and-swap that names the
 * statuses it may start from (SandboxRepo.transition) and must be an edge of this table; anything else
 * is refused, never written over. A record leaves the table by being removed (from `deleting`, or a
 * create that never got placed).
 *
 * ```
 * pending -> scheduled -> [starting] -> running <-> stopping -> stopped -> starting -> running
 *                                       running -> pausing -> paused -> resuming -> running
 * any -> deleting (-> removed)       running|starting|... -> failed | lost (node gone)
 * ```
 */
export const SANDBOX_STATUSES = [
  'pending', 'scheduled', 'starting', 'running', 'stopping', 'stopped', 'pausing', 'paused', 'resuming', 'failed', 'lost', 'deleting',
] as const;
export type SandboxStatus = (typeof SANDBOX_STATUSES)[number];

export const TRANSITIONS: Readonly<Record<SandboxStatus, readonly SandboxStatus[]>> = {
  // placed (or refused) by the scheduler
  pending: ['scheduled', 'failed', 'deleting'],
  // its node makes the task; `starting` only while an image is pulled first
  scheduled: ['starting', 'running', 'failed', 'lost', 'deleting'],
  // a create's pull, or a start of a stopped sandbox
  starting: ['running', 'stopped', 'failed', 'lost', 'deleting'],
  // `stopped`: recovery found its processes gone; `failed`: the task died (watchdog)
  running: ['stopping', 'pausing', 'stopped', 'failed', 'lost', 'deleting'],
  stopping: ['stopped', 'failed', 'lost', 'deleting'],
  stopped: ['starting', 'lost', 'deleting'],
  // a pause that failed leaves the sandbox as it was (running)
  pausing: ['paused', 'running', 'stopped', 'failed', 'lost', 'deleting'],
  // a stop of a paused sandbox resumes it first; recovery may find its task gone
  paused: ['resuming', 'stopped', 'failed', 'lost', 'deleting'],
  resuming: ['running', 'paused', 'stopped', 'failed', 'lost', 'deleting'],
  failed: ['deleting'],
  // the node came back: the sandbox takes the state its task is in
  lost: ['running', 'paused', 'stopped', 'failed', 'deleting'],
  deleting: ['deleting'],
};

/** Whether `from -> to` is an edge of the lifecycle. */
export function canTransition(from: SandboxStatus, to: SandboxStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** Statuses in which a sandbox has a task that runs its processes (exec, files, pty work). */
export const ACTIVE_STATUSES: readonly SandboxStatus[] = ['running'];

/**
 * Why a sandbox is `failed`, `lost` or `stopped` against its will (`Sandbox.error.code`): one closed
 * set. A failed create keeps the create's API error code (e.g. NOT_FOUND for a missing image,
 * RESOURCE_EXHAUSTED); the rest are lifecycle reasons:
 * - `LOST`: its task could not be found again after a prismd restart or a rejoin;
 * - `NODE_LOST`: its node stopped renewing its lease (the sandbox may come back with the node);
 * - `TASK_EXITED`: its task ended on its own (a killed runc init or QEMU);
 * - `INTERRUPTED`: its processes ended while prismd was down (the filesystem was kept);
 * - `TTL_EXPIRED`: its timeoutSec ran out and onTimeout stopped it;
 * - `STOP_FAILED`, `PAUSE_FAILED`, `RESUME_FAILED`: the runtime could not do it (the message says why).
 */
export const LIFECYCLE_REASONS = ['LOST', 'NODE_LOST', 'TASK_EXITED', 'INTERRUPTED', 'TTL_EXPIRED', 'STOP_FAILED', 'PAUSE_FAILED', 'RESUME_FAILED'] as const;
export const SANDBOX_REASONS = [...ERROR_CODES, ...LIFECYCLE_REASONS] as const;
export type SandboxReason = (typeof SANDBOX_REASONS)[number];
