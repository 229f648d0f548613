import { PrismError } from '../../core/errors.js';
import { shellSafePath } from './qemu-args.js';
import { QmpClient } from './qmp.js';

/**
 * Saving and resuming a VM's state through QEMU's migration (QEMU 7.2: no `file:` URI, so the stream
 * goes through `exec:cat`). The state holds guest RAM and device state, not the drive files: a VM
 * restored with other files at the same device slots sees those files.
 */

const POLL_MS = 5;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * QEMU's `x-ignore-shared` migration capability: RAM mapped shared from a file is left out of the
 * stream (the file is the memory). It changes the stream's format, so a stream saved with it must be
 * loaded with it: `ignoreShared` is set on both sides by what the snapshot holds (a memory image or not).
 */
const IGNORE_SHARED = 'x-ignore-shared';

/**
 * Pauses the VM and has its state written to `file`; the VM stays paused (the caller quits it, or
 * continues it). The guest is stopped first, so the stream is one consistent pass and no dirty-page
 * rounds. With `ignoreShared` a VM whose RAM is a shared file leaves its RAM out (the caller copies
 * the file while the VM is stopped).
 */
export async function saveVmState(qmpSocket: string, file: string, timeoutMs: number, opts: { ignoreShared?: boolean } = {}): Promise<void> {
  const qmp = await QmpClient.connect(qmpSocket);
  try {
    await qmp.execute('stop');
    await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: IGNORE_SHARED, state: !!opts.ignoreShared }] });
    // The default max-bandwidth (32 MiB/s) would throttle a local pipe to a file for seconds.
    await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 1 << 30 });
    // QEMU reports completion when it has written the stream, possibly before `cat` has: the stream
    // appears under its name only once `cat` succeeded (the caller waits for it).
    const f = shellSafePath('snapshot', file);
    await qmp.execute('migrate', { uri: `exec:cat > ${f}.part && mv ${f}.part ${f}` });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (m.status === 'completed') return;
      if (m.status === 'failed' || m.status === 'cancelled') {
        throw new PrismError('INTERNAL', `saving VM state failed: ${m['error-desc'] ?? m.status}`);
      }
      if (Date.now() > deadline) throw new PrismError('DEADLINE_EXCEEDED', `saving VM state took over ${timeoutMs} ms`);
      await sleep(POLL_MS);
    }
  } finally {
    qmp.close();
  }
}

/**
 * Gives a QEMU started with `-incoming defer` the stream in `file` (with the capability it was saved
 * with), waits until it has loaded, then runs the guest. QEMU 7.2 reports `inmigrate` while loading;
 * a stream saved from a stopped VM then leaves it `paused` (the source's run state travels in the
 * stream), so it needs `cont`.
 */
export async function resumeIncoming(qmpSocket: string, file: string, timeoutMs: number, opts: { ignoreShared?: boolean } = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const qmp = await connectRetrying(qmpSocket, deadline);
  try {
    if (opts.ignoreShared) await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: IGNORE_SHARED, state: true }] });
    await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellSafePath('snapshot', file)}` });
    for (;;) {
      const { status } = await qmp.queryStatus();
      if (status === 'running') return;
      if (status === 'paused' || status === 'postmigrate' || status === 'prelaunch') {
        await qmp.execute('cont');
        return;
      }
      if (status !== 'inmigrate') throw new PrismError('INTERNAL', `restoring VM state failed: QEMU is ${status}`);
      if (Date.now() > deadline) throw new PrismError('DEADLINE_EXCEEDED', `restoring VM state took over ${timeoutMs} ms`);
      await sleep(POLL_MS);
    }
  } finally {
    qmp.close();
  }
}

/** QEMU creates its QMP socket a moment after it starts. */
async function connectRetrying(path: string, deadline: number): Promise<QmpClient> {
  for (;;) {
    try {
      return await QmpClient.connect(path, Math.max(100, deadline - Date.now()));
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(POLL_MS);
    }
  }
}
