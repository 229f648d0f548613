import { PrismError } from '../core/errors.js';
import type { ProcessInfo, ProcessSignal } from '../core/types.js';
import type { ExecRequest } from '../service/exec-service.js';
import type { ProcessService } from '../service/process-service.js';
import { ConnectError, type ServerStream } from './connect-protocol.js';

/**
 * envd's Process service on Prism's background processes: a command started here outlives the stream
 * that started it (a client that disconnects, connects again, sends stdin or a signal), as in envd.
 * E2B names processes by a numeric pid per sandbox and an optional tag; this table maps those onto
 * Prism's process ids, on the node that owns the sandbox (where the processes live).
 */

interface ProcessConfig {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string;
}

interface Entry {
  pid: number;
  processId: string;
  tag?: string;
  config: ProcessConfig;
  /** On a terminal: its output goes out as `pty` data, its input comes as `pty` input. */
  pty: boolean;
}

export interface Selector {
  pid?: number;
  tag?: string;
}

/** Go's names for the signals a process may die of (envd reports `signal: <name>`). */
const GO_SIGNAL_TEXT: Record<string, string> = {
  SIGKILL: 'killed', SIGTERM: 'terminated', SIGINT: 'interrupt', SIGHUP: 'hangup', SIGQUIT: 'quit',
  SIGABRT: 'aborted', SIGSEGV: 'segmentation fault', SIGPIPE: 'broken pipe', SIGUSR1: 'user defined signal 1',
  SIGUSR2: 'user defined signal 2', SIGBUS: 'bus error', SIGFPE: 'floating point exception', SIGILL: 'illegal instruction',
};

/** How envd describes an exit: exit code (-1 for a signal), Go's ProcessState text. */
export function endEvent(info: ProcessInfo): { exitCode?: number; exited: boolean; status: string; error?: string } {
  if (info.signal) {
    const text = `signal: ${GO_SIGNAL_TEXT[info.signal] ?? info.signal}`;
    return { exitCode: -1, exited: false, status: text, error: text };
  }
  const code = info.exitCode ?? -1;
  const status = `exit status ${code}`;
  return code === 0 ? { exited: true, status } : { exitCode: code, exited: true, status, error: status };
}

export class EnvdProcesses {
  /** By sandbox id. */
  private readonly tables = new Map<string, { next: number; byPid: Map<number, Entry> }>();

  constructor(private readonly processes: ProcessService) {}

  private table(sandboxId: string) {
    let t = this.tables.get(sandboxId);
    if (!t) this.tables.set(sandboxId, (t = { next: 1, byPid: new Map() }));
    return t;
  }

  /** Starts the command; the stream gets the start event, output, and the end (if it stays connected). */
  async start(sandboxId: string, req: ExecRequest & { config: ProcessConfig; tag?: string; openStdin: boolean }): Promise<Entry> {
    const { config: _c, tag: _t, openStdin, ...exec } = req;
    const info = await this.processes.start(sandboxId, exec);
    const t = this.table(sandboxId);
    const entry: Entry = { pid: t.next++, processId: info.id, config: req.config, pty: !!req.tty, ...(req.tag ? { tag: req.tag } : {}) };
    t.byPid.set(entry.pid, entry);
    if (!openStdin && !req.tty) await this.processes.writeStdin(sandboxId, info.id, Buffer.alloc(0), true).catch(() => undefined);
    return entry;
  }

  /** The entry a selector names, as long as Prism still knows its process. */
  async find(sandboxId: string, sel: Selector): Promise<{ entry: Entry; info: ProcessInfo }> {
    const t = this.tables.get(sandboxId);
    const entry = sel.pid !== undefined ? t?.byPid.get(sel.pid) : [...(t?.byPid.values() ?? [])].find((e) => e.tag === sel.tag && sel.tag !== undefined);
    const what = sel.pid !== undefined ? `process with pid ${sel.pid}` : `process with tag '${sel.tag ?? ''}'`;
    if (!entry) throw new ConnectError('not_found', `${what} not found`);
    try {
      return { entry, info: await this.processes.get(sandboxId, entry.processId) };
    } catch (e) {
      if (e instanceof PrismError && e.code === 'NOT_FOUND') {
        t?.byPid.delete(entry.pid);
        throw new ConnectError('not_found', `${what} not found`);
      }
      throw e;
    }
  }

  /** Running processes, as envd lists them. */
  async list(sandboxId: string): Promise<Array<{ pid: number; tag?: string; config: ProcessConfig }>> {
    const t = this.tables.get(sandboxId);
    if (!t) return [];
    const live = new Map((await this.processes.list(sandboxId)).map((p) => [p.id, p]));
    const out = [];
    for (const e of t.byPid.values()) {
      const p = live.get(e.processId);
      if (!p) t.byPid.delete(e.pid);
      else if (p.status === 'running') out.push({ pid: e.pid, config: e.config, ...(e.tag ? { tag: e.tag } : {}) });
    }
    return out;
  }

  /**
   * Sends the events of `processId` from the given offsets until it exits (the end event) or the
   * client goes (`signal`); keepalives every `keepaliveMs` without output.
   */
  async stream(sandboxId: string, entry: Entry, out: ServerStream, from: { stdout: number; stderr: number }, keepaliveMs: number, signal: AbortSignal): Promise<void> {
    let last = Date.now();
    const timer = setInterval(() => {
      if (Date.now() - last >= keepaliveMs) {
        last = Date.now();
        void out.send({ event: { keepalive: {} } });
      }
    }, Math.min(keepaliveMs, 1000));
    try {
      for await (const ev of this.processes.follow(sandboxId, entry.processId, from, signal)) {
        last = Date.now();
        if (ev.type === 'exit') {
          await out.send({ event: { end: endEvent(ev.info) } });
          return;
        }
        if (ev.read.data.length) await out.send({ event: { data: { [entry.pty ? 'pty' : ev.type]: ev.read.data.toString('base64') } } });
      }
    } finally {
      clearInterval(timer);
    }
  }

  async sendStdin(sandboxId: string, sel: Selector, data: Buffer): Promise<void> {
    const { entry } = await this.find(sandboxId, sel);
    await this.processes.writeStdin(sandboxId, entry.processId, data, false);
  }

  async resize(sandboxId: string, sel: Selector, cols: number, rows: number): Promise<void> {
    const { entry } = await this.find(sandboxId, sel);
    if (!entry.pty) throw new ConnectError('invalid_argument', `process with pid ${entry.pid} has no terminal`);
    await this.processes.resize(sandboxId, entry.processId, cols, rows);
  }

  async closeStdin(sandboxId: string, sel: Selector): Promise<void> {
    const { entry } = await this.find(sandboxId, sel);
    await this.processes.writeStdin(sandboxId, entry.processId, Buffer.alloc(0), true);
  }

  async signal(sandboxId: string, sel: Selector, sig: ProcessSignal): Promise<void> {
    const { entry, info } = await this.find(sandboxId, sel);
    if (info.status !== 'running') throw new ConnectError('not_found', `process with pid ${entry.pid} has exited`);
    await this.processes.signal(sandboxId, entry.processId, sig);
  }

  /** The sandbox is gone: forget its table. */
  forget(sandboxId: string): void {
    this.tables.delete(sandboxId);
  }
}
