import { PrismError } from '../../core/errors.js';
import type { ExecOptions, TaskProcess } from '../driver.js';
import { agentExec } from '../exec-agent-client.js';
import { envWithHome, userSpec, type TaskUser } from '../task-user.js';
import { toTaskProcess, ttyEnv } from '../agent-process.js';

/**
 * Runs one command through the task's exec agent (guest/init). The agent forks it inside the task, so
 * it inherits the task's namespaces, cgroups, capabilities, seccomp filter and no-new-privileges; the
 * bytes of stdout and stderr arrive exactly as written. OOM kills are read off the task's memory
 * cgroup: the `oom_kill` counter grew while the command ran and the command died of SIGKILL. A full
 * writable layer is read off its filesystem when the command ends (`diskFull`).
 */
export async function startExec(
  oomKills: () => Promise<number>,
  socketPath: string,
  opts: ExecOptions,
  user: TaskUser | undefined,
  diskFull: () => Promise<boolean>,
): Promise<TaskProcess> {
  if (opts.argv.length === 0) throw new PrismError('INVALID_ARGUMENT', 'argv must not be empty');
  // Read before the command starts: read concurrently, a busy thread pool could let a fast memory hog
  // be killed before the "before" value is taken, and the kill would go unreported.
  const before = await oomKills().catch(() => -1);
  const started = Date.now();
  const env = user ? envWithHome(opts.env, user.uid !== 0, user.home) : opts.env;
  const proc = await agentExec(socketPath, ttyEnv({ ...opts, env }), user ? userSpec(user) : undefined);
  const result = (async () => {
    const exit = await proc.exit;
    const durationMs = Date.now() - started;
    const oomKilled = exit.signal === 'SIGKILL' && before >= 0 && (await oomKills().catch(() => before)) > before;
    // Read once the command is gone: a command that filled the disk and failed leaves it full.
    return { ...exit, oomKilled, diskFull: await diskFull().catch(() => false), durationMs };
  })();
  return toTaskProcess(proc, result);
}
