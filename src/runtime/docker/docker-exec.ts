import { PassThrough, type Duplex } from 'node:stream';
import type Docker from 'dockerode';
import { PrismError } from '../../core/errors.js';
import type { ExecOptions, TaskProcess } from '../driver.js';
import { attachAgent, startFrame } from '../exec-agent-client.js';
import { demuxWithBackpressure } from './demux.js';
import { engineError } from './engine-errors.js';
import { INIT_PATH } from './layer-image.js';
import { toTaskProcess, ttyEnv } from '../agent-process.js';

/** prism-init's exec agent socket inside every docker task (see guest/init/relay.c). */
export const AGENT_SOCKET = '/.prism/agent.sock';

/**
 * Runs one command in a docker task: `docker exec` of `prism-init relay`, whose stdin/stdout carry
 * the exec-agent protocol to the task's PID 1. The agent forks the command in its own process group
 * and kills its whole tree on 'K' or when we hang up, which `docker exec` alone cannot do. The
 * relay's stderr carries the task's OOM-kill counter before and after ("oom <n>" lines) and, at the
 * end, whether 1 MiB still fits in the task's root filesystem ("disk 1|0|-1"). `user` is the agent's
 * "uid gid groups" form; absent runs as the task's root. `diskLimited`: the task has a size limit, so
 * a filesystem without room is its diskMb reached (without one, it would be the engine's disk).
 */
export async function dockerExec(docker: Docker, container: string, opts: ExecOptions, user: string | undefined, diskLimited: boolean): Promise<TaskProcess> {
  if (opts.argv.length === 0) throw new PrismError('INVALID_ARGUMENT', 'argv must not be empty');
  const start = startFrame(ttyEnv(opts), user);
  const started = Date.now();
  let stream: Duplex;
  try {
    const exec = await docker.getContainer(container).exec({
      Cmd: [INIT_PATH, 'relay', AGENT_SOCKET], AttachStdin: true, AttachStdout: true, AttachStderr: true,
      User: '0:0', WorkingDir: '/', Tty: false,
    });
    stream = (await exec.start({ hijack: true, stdin: true })) as Duplex;
  } catch (e) {
    throw engineError(e, `running a command in task ${container}`, { 404: 'NOT_FOUND', 409: 'FAILED_PRECONDITION' });
  }
  const frames = new PassThrough();
  const meta = new PassThrough();
  demuxWithBackpressure(stream, frames, meta);
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    frames.end();
    meta.end();
  };
  stream.once('end', end);
  stream.once('close', end);
  stream.on('error', end);
  const oom: number[] = [];
  let metaText = '';
  meta.on('data', (c: Buffer) => (metaText += c.toString()));
  const metaDone = new Promise<void>((resolve) => meta.once('end', resolve));
  stream.write(start);
  const proc = attachAgent(frames, stream, opts.stdin || !!opts.tty, !!opts.tty);
  const result = (async () => {
    const exit = await proc.exit;
    await metaDone;
    stream.destroy();
    for (const m of metaText.matchAll(/^oom (-?\d+)$/gm)) oom.push(Number(m[1]));
    const [before, after] = [oom[0] ?? -1, oom[1] ?? -1];
    const oomKilled = exit.signal === 'SIGKILL' && before >= 0 && after > before;
    const diskFull = diskLimited && /^disk 0$/m.test(metaText);
    return { ...exit, oomKilled, diskFull, durationMs: Date.now() - started };
  })();
  return toTaskProcess(proc, result);
}
