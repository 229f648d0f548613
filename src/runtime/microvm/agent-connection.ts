import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { constants } from 'node:os';
import { PassThrough, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { PrismError } from '../../core/errors.js';
import type { ExecOptions } from '../driver.js';
import {
  CONTROL_CHANNEL, decodeHello, decodeMountReply, decodeStats, encodeChunked, encodeFields, encodeFrame, encodeNetwork, encodePtyStart, encodeSize, encodeStart,
  encodeWindow, exitFromFrame, FrameParser, FrameType, MAX_SESSION_CHANNEL, OLDEST_PROTOCOL_VERSION, OUTPUT_WINDOW, PROTOCOL_VERSION, UNLIMITED_OUTPUT,
  type AgentState, type Frame, type GuestNetwork, type FrameTypeChar, type GuestStats,
} from './agent-protocol.js';
import { dialUnix } from './unix-socket.js';
import { emptyIf, type AgentExit, type AgentProcess } from '../agent-process.js';

/**
 * One connection to a microVM's guest agent over the host side of its virtio-serial port (a unix
 * socket QEMU listens on with `server=on,wait=off`). Sessions are multiplexed by channel, and the
 * socket is never paused, so a slow reader of one command never stops the others. Each session's
 * output is flow-controlled instead (`W`): the guest sends at most OUTPUT_WINDOW bytes more than the
 * session's reader has taken, so an unread command blocks on its pipe in the guest, as under runc,
 * and what waits here for a reader stays within the window. If the connection drops the guest kills
 * every session, so they end here as killed (137, SIGKILL).
 */

const RETRY_MS = 50;
/** QEMU accepts connections before the guest opens its port; repeat the hello until someone answers. */
const HELLO_REPEAT_MS = 500;

interface Session {
  stdout: PassThrough;
  stderr: PassThrough;
  stdin: Writable | null;
  /** Output bytes (O and E payloads) received, and the limit last granted by `W`. */
  received: number;
  limit: number;
  done(exit: AgentExit): void;
}

/** A session's output stream; tells the connection whenever its reader wants more (to open the window). */
class OutputStream extends PassThrough {
  constructor(private readonly wantsMore: () => void) {
    super();
  }

  override _read(size: number): void {
    super._read(size);
    this.wantsMore();
  }
}

/** Output a session's reader has not taken yet: both streams' buffers (one stream on a terminal). */
function unread(s: Session): number {
  const streams = s.stderr === s.stdout ? [s.stdout] : [s.stdout, s.stderr];
  // A destroyed stream has no reader left: what it holds is dropped, not waited for.
  return streams.reduce((n, x) => n + (x.destroyed ? 0 : x.readableLength + x.writableLength), 0);
}

interface Waiter {
  resolve(payload: Buffer): void;
  reject(e: Error): void;
}

export interface AgentConnectOptions {
  /** How long to wait for the guest's hello (boot time included). */
  timeoutMs: number;
}

export class AgentConnection {
  private sock: Socket | null = null;
  private readonly sessions = new Map<number, Session>();
  private nextChannel = 1;
  private foreign = new Set<number>();
  private helloWaiters: Waiter[] = [];
  private mountWaiters: Waiter[] = [];
  private statsWaiters: Waiter[] = [];
  private volumeWaiters: Waiter[] = [];
  private networkWaiters: Waiter[] = [];
  private detachWaiters: Waiter[] = [];
  private factsWaiters: Waiter[] = [];
  /** `D` was answered: the connection may drop (the VM is being saved) without ending the sessions. */
  private detached = false;
  /** The agent takes `W` (protocol 8); an older one's output is not flow-controlled. */
  private windowed = false;
  private connecting: Promise<AgentState> | null = null;
  /** The guest's state from its last hello. */
  state: AgentState | null = null;

  /** `dial` opens the byte stream to the agent (the VMM's: Vmm.dialAgent); default a plain unix socket. */
  constructor(private path: string, private readonly dial: (path: string, timeoutMs: number) => Promise<Socket> = dialUnix) {}

  get socketPath(): string { return this.path; }

  /**
   * Where to reconnect from now on: the socket was moved with its directory (a warm-pool VM adopted
   * by a task). The open connection is not affected.
   */
  relocate(socketPath: string): void { this.path = socketPath; }

  /** Connects (retrying while the socket is missing or refused) and waits for the guest's hello. */
  static async open(socketPath: string, opts: AgentConnectOptions): Promise<AgentConnection> {
    const conn = new AgentConnection(socketPath);
    await conn.connect(opts);
    return conn;
  }

  get connected(): boolean { return this.sock !== null && !this.sock.destroyed && this.state !== null; }

  /** Idempotent: resolves at once when connected, else (re)connects. Rejects UNAVAILABLE on timeout. */
  connect(opts: AgentConnectOptions): Promise<AgentState> {
    if (this.connected) return Promise.resolve(this.state!);
    this.connecting ??= this.doConnect(opts.timeoutMs).finally(() => (this.connecting = null));
    return this.connecting;
  }

  private async doConnect(timeoutMs: number): Promise<AgentState> {
    const deadline = Date.now() + timeoutMs;
    let lastError: Error | undefined;
    while (Date.now() < deadline) {
      let sock: Socket;
      try {
        sock = await this.dial(this.path, deadline - Date.now());
      } catch (e) {
        lastError = e as Error;
        await sleep(RETRY_MS);
        continue;
      }
      this.attach(sock);
      try {
        const hello = await this.awaitHello(sock, deadline);
        const { version, state, channels } = decodeHello(hello);
        // Sessions the guest kept that this connection does not know (started by a prismd before a
        // restart, then paused and resumed): they run on, unobserved; their channels are not reused.
        this.foreign = new Set(channels.filter((c) => !this.sessions.has(c)));
        if (version < OLDEST_PROTOCOL_VERSION || version > PROTOCOL_VERSION) {
          throw new PrismError('FAILED_PRECONDITION', `guest agent speaks protocol ${version}, want ${OLDEST_PROTOCOL_VERSION}-${PROTOCOL_VERSION}`);
        }
        this.windowed = version >= 8;
        this.state = state;
        this.regrant();
        // The hello ended a detach on the guest's side too: its sessions' output flows again.
        this.detached = false;
        return state;
      } catch (e) {
        sock.destroy();
        if (e instanceof PrismError && e.code === 'FAILED_PRECONDITION') throw e;
        lastError = e as Error;
      }
    }
    throw new PrismError('UNAVAILABLE', `guest agent did not answer within ${timeoutMs} ms${lastError ? ` (${lastError.message})` : ''}`, {
      cause: lastError,
    });
  }

  private awaitHello(sock: Socket, deadline: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const send = () => {
        if (!sock.destroyed) sock.write(encodeFrame(FrameType.Hello, CONTROL_CHANNEL));
      };
      const repeat = setInterval(send, HELLO_REPEAT_MS);
      const timer = setTimeout(() => settle(new Error('no hello from the guest agent')), Math.max(0, deadline - Date.now()));
      const settle = (r: Buffer | Error) => {
        clearInterval(repeat);
        clearTimeout(timer);
        this.helloWaiters = this.helloWaiters.filter((w) => w !== waiter);
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
      const waiter: Waiter = { resolve: settle, reject: settle };
      this.helloWaiters.push(waiter);
      send();
    });
  }

  private attach(sock: Socket): void {
    this.sock = sock;
    const parser = new FrameParser();
    sock.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = parser.push(chunk);
      } catch {
        sock.destroy();
        return;
      }
      for (const f of frames) this.dispatch(f);
    });
    sock.on('error', () => undefined); // surfaces as 'close'
    sock.once('close', () => {
      if (this.sock === sock) {
        this.sock = null;
        this.state = null;
      }
      this.failAll(new PrismError('UNAVAILABLE', 'the connection to the guest agent closed'), this.detached);
    });
  }

  private dispatch(f: Frame): void {
    if (f.channel === CONTROL_CHANNEL) {
      if (f.type === FrameType.HelloReply) this.helloWaiters.shift()?.resolve(f.payload);
      else if (f.type === FrameType.MountReply) this.mountWaiters.shift()?.resolve(f.payload);
      else if (f.type === FrameType.StatsReply) this.statsWaiters.shift()?.resolve(f.payload);
      else if (f.type === FrameType.VolumeReply) this.volumeWaiters.shift()?.resolve(f.payload);
      else if (f.type === FrameType.NetworkReply) this.networkWaiters.shift()?.resolve(f.payload);
      else if (f.type === FrameType.DetachReply) this.detachWaiters.shift()?.resolve(f.payload);
      else if (f.type === FrameType.FactsReply) this.factsWaiters.shift()?.resolve(f.payload);
      return;
    }
    const s = this.sessions.get(f.channel);
    if (!s) return; // late output of a session already over
    if (f.type === FrameType.Stdout || f.type === FrameType.Stderr) {
      const to = f.type === FrameType.Stdout ? s.stdout : s.stderr;
      s.received += f.payload.length;
      // write() beyond the high-water mark still buffers, up to the window: the guest sends no more.
      if (!to.destroyed) to.write(Buffer.from(f.payload));
      this.grant(f.channel, s);
    } else if (f.type === FrameType.Exit) s.done(exitFromFrame(f.payload));
  }

  /**
   * Opens session `channel`'s window to OUTPUT_WINDOW past what its reader has taken; only by a
   * quarter window or more at a time, so that a fast reader costs one 17-byte frame per 256 KiB.
   */
  private grant(channel: number, s: Session): void {
    if (!this.windowed || this.sessions.get(channel) !== s) return;
    const limit = s.received - unread(s) + OUTPUT_WINDOW;
    if (limit - s.limit < OUTPUT_WINDOW / 4) return;
    s.limit = limit;
    this.send(encodeFrame(FrameType.Window, channel, encodeWindow(limit)));
  }

  /**
   * After a hello: the limits again (a `W` sent just before a VM was saved may not have reached its
   * guest; the agent ignores a limit it already has), and no limit at all for the sessions the guest
   * kept that this connection does not know, which run on unobserved.
   */
  private regrant(): void {
    if (!this.windowed) return;
    for (const [channel, s] of this.sessions) this.send(encodeFrame(FrameType.Window, channel, encodeWindow(s.limit)));
    for (const channel of this.foreign) this.send(encodeFrame(FrameType.Window, channel, encodeWindow(UNLIMITED_OUTPUT)));
  }

  /** Rejects every waiter; sessions end as killed unless `keepSessions` (detached: they resume after a hello). */
  private failAll(e: Error, keepSessions = false): void {
    for (const w of [...this.helloWaiters, ...this.mountWaiters, ...this.statsWaiters, ...this.networkWaiters, ...this.volumeWaiters, ...this.detachWaiters, ...this.factsWaiters]) w.reject(e);
    this.detachWaiters = [];
    this.factsWaiters = [];
    if (keepSessions) {
      this.volumeWaiters = [];
      this.statsWaiters = [];
      this.networkWaiters = [];
      this.helloWaiters = [];
      this.mountWaiters = [];
      return;
    }
    this.volumeWaiters = [];
    this.statsWaiters = [];
    this.networkWaiters = [];
    this.helloWaiters = [];
    this.mountWaiters = [];
    for (const s of [...this.sessions.values()]) s.done({ exitCode: 137, signal: 'SIGKILL' });
  }

  private send(frame: Buffer): boolean {
    const sock = this.sock;
    if (!sock || sock.destroyed) return true;
    return sock.write(frame);
  }

  private requireConnected(): Socket {
    if (!this.connected) throw new PrismError('FAILED_PRECONDITION', 'the task is not running (no connection to its guest agent)');
    return this.sock!;
  }

  /** Sends a control frame and waits for its reply (replies come in order, one queue per kind). */
  private request(kind: 'mountWaiters' | 'statsWaiters' | 'networkWaiters' | 'volumeWaiters' | 'detachWaiters' | 'factsWaiters', type: FrameTypeChar, payload: Buffer, what: string, timeoutMs: number): Promise<Buffer> {
    this.requireConnected();
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this[kind] = this[kind].filter((w) => w !== waiter);
        reject(new PrismError('DEADLINE_EXCEEDED', `guest agent did not answer ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter: Waiter = { resolve: (b) => (clearTimeout(timer), resolve(b)), reject: (e) => (clearTimeout(timer), reject(e)) };
      this[kind].push(waiter);
      this.send(encodeFrame(type, CONTROL_CHANNEL, payload));
    });
  }

  /**
   * `D`: the VM is about to be saved. Resolves once the guest has sent everything it had and holds
   * its sessions' output from now on; the connection may then drop (the VMM exits) without ending
   * the sessions here or in the guest. The next `connect` (to the restored VM) says hello, and the
   * same sessions carry on. `undetach` is that hello on this connection, for a save that failed.
   */
  async detach(timeoutMs = 10_000): Promise<void> {
    const reply = await this.request('detachWaiters', FrameType.Detach, Buffer.alloc(0), 'detach', timeoutMs);
    if (reply.toString() !== 'ok') throw new PrismError('INTERNAL', `guest agent refused to detach: ${reply.toString()}`);
    this.detached = true;
  }

  /** Ends a detach without a disconnect (the save failed and the VM runs on): output flows again. */
  async undetach(timeoutMs = 10_000): Promise<void> {
    const sock = this.requireConnected();
    await this.awaitHello(sock, Date.now() + timeoutMs);
    this.detached = false;
  }

  /** `F`: the host's clock and fresh entropy (and a new hostname), for a VM resumed from a saved state. */
  async refreshFacts(opts: { hostname?: string } = {}, timeoutMs = 10_000): Promise<void> {
    const payload = encodeFields([String(Date.now()), randomBytes(32).toString('hex'), ...(opts.hostname ? [opts.hostname] : [])]);
    const error = decodeMountReply(await this.request('factsWaiters', FrameType.Facts, payload, 'facts', timeoutMs));
    if (error !== null) throw new PrismError('INTERNAL', `guest could not take the host's clock: ${error}`);
  }

  /** `T`: pids, memory and OOM kills of the sandbox cgroup in the guest. */
  async stats(timeoutMs = 10_000): Promise<GuestStats> {
    return decodeStats(await this.request('statsWaiters', FrameType.Stats, Buffer.alloc(0), 'stats', timeoutMs));
  }

  /**
   * `M`: mounts the root file system, switches into it and applies the sandbox's limits to every
   * command (a cgroup in the guest); INTERNAL with the guest's message on failure.
   */
  async mount(hostname: string, limits: { memoryBytes: number; pids: number; openFiles?: number } = { memoryBytes: 0, pids: 0 }, timeoutMs = 30_000): Promise<void> {
    // The host's clock and fresh entropy: a VM restored from a template wakes with the template's.
    const payload = encodeFields([
      hostname, String(limits.memoryBytes), String(limits.pids), String(Date.now()), randomBytes(32).toString('hex'), String(limits.openFiles ?? 0),
    ]);
    const reply = await this.request('mountWaiters', FrameType.Mount, payload, 'mount', timeoutMs);
    const error = decodeMountReply(reply);
    if (error !== null) throw new PrismError('INTERNAL', `guest could not mount its root file system: ${error}`);
    this.state = 'ready';
  }

  /** `N` (after `M`): configures the guest's NIC and writes its /etc/resolv.conf; INTERNAL with the guest's message on failure. */
  async network(n: GuestNetwork, timeoutMs = 30_000): Promise<void> {
    const error = decodeMountReply(await this.request('networkWaiters', FrameType.Network, encodeNetwork(n), 'network', timeoutMs));
    if (error !== null) throw new PrismError('INTERNAL', `guest could not configure its network: ${error}`);
  }

  /**
   * `V` (after `M`): mounts the disk whose virtio serial is `serial` on `mountPath` in the sandbox's
   * root, read-only or not; INTERNAL with the guest's message on failure.
   */
  async mountVolume(serial: string, mountPath: string, readOnly: boolean, timeoutMs = 30_000): Promise<void> {
    const payload = encodeFields([serial, mountPath, readOnly ? 'ro' : 'rw']);
    const error = decodeMountReply(await this.request('volumeWaiters', FrameType.Volume, payload, 'volume mount', timeoutMs));
    if (error !== null) throw new PrismError('INTERNAL', `guest could not mount a volume on ${mountPath}: ${error}`);
  }

  /** `Q`: asks the guest to sync, unmount and power off. The caller waits for QEMU to exit. */
  shutdown(): void {
    if (this.connected) this.send(encodeFrame(FrameType.Shutdown, CONTROL_CHANNEL));
  }

  /** Closes the host side; the guest kills running sessions, and they end here as killed. */
  /** Drops the connection; its sessions end as killed (a detached connection's too: the task is going away). */
  close(): void {
    const wasDetached = this.detached;
    this.detached = false;
    if (this.sock && !this.sock.destroyed) this.sock.destroy();
    else if (wasDetached) this.failAll(new PrismError('UNAVAILABLE', 'the task stopped while it was paused'));
  }

  /** Starts one command. `user` is the agent's "uid gid g1,g2" form; absent runs as root. */
  exec(opts: ExecOptions, user?: string): AgentProcess {
    const req = { cwd: opts.cwd, stdin: opts.stdin || !!opts.tty, argv: opts.argv, env: opts.env, ...(user ? { user } : {}) };
    const start = opts.tty ? encodePtyStart(req, opts.tty.cols, opts.tty.rows) : encodeStart(req);
    this.requireConnected();
    const channel = this.allocateChannel();
    const wantsMore = () => {
      const s = this.sessions.get(channel);
      if (s) this.grant(channel, s);
    };
    const stdout = new OutputStream(wantsMore);
    const stderr = opts.tty ? emptyIf(true) : new OutputStream(wantsMore);
    let over = false;
    let resolveExit!: (e: AgentExit) => void;
    const exit = new Promise<AgentExit>((r) => (resolveExit = r));
    const stdin = req.stdin ? this.stdinStream(channel, () => over) : null;
    // On a tty the agent's own messages (E) go to the terminal's stream.
    this.sessions.set(channel, { stdout, stderr: opts.tty ? stdout : stderr, stdin, received: 0, limit: OUTPUT_WINDOW, done: (e) => {
        if (over) return;
        over = true;
        this.sessions.delete(channel);
        stdout.end();
        stderr.end();
        stdin?.destroy();
        // Resolve once both streams delivered everything they had to their reader.
        void Promise.all([stdout, stderr].map((s) => finished(s).catch(() => undefined))).then(() => resolveExit(e));
    } });
    this.send(encodeFrame(opts.tty ? FrameType.PtyStart : FrameType.Start, channel, start));
    // Any connection to the agent reaches the session: after a pause and resume it is a new one.
    const live = () => !over && this.sock !== null;
    return {
      stdin, stdout, stderr, exit,
      kill: (signal: NodeJS.Signals = 'SIGKILL') => {
        if (live()) this.send(encodeFrame(FrameType.Kill, channel, Buffer.from([constants.signals[signal] ?? constants.signals.SIGKILL])));
      },
      ...(opts.tty ? {
        resize: (cols: number, rows: number) => {
          const size = encodeSize(cols, rows);
          if (live()) this.send(encodeFrame(FrameType.Resize, channel, size));
        },
      } : {}),
    };
  }

  private stdinStream(channel: number, isOver: () => boolean): Writable {
    const live = () => !isOver() && this.sock !== null && !this.sock.destroyed;
    return new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        if (!live()) return cb(); // the command is gone: input is dropped, as with a closed pipe
        let ok = true;
        for (const f of encodeChunked(FrameType.Stdin, channel, chunk)) ok = this.send(f);
        if (ok || !live()) return cb();
        const now = this.sock!;
        const go = () => (now.off('close', go), now.off('drain', go), cb());
        now.once('drain', go);
        now.once('close', go);
      },
      final: (cb) => {
        if (live()) this.send(encodeFrame(FrameType.CloseStdin, channel));
        cb();
      },
    });
  }

  private allocateChannel(): number {
    for (;;) {
      const ch = this.nextChannel;
      this.nextChannel = ch >= MAX_SESSION_CHANNEL ? 1 : ch + 1;
      if (!this.sessions.has(ch) && !this.foreign.has(ch)) return ch;
    }
  }

  /** Sessions currently running. */
  get sessionCount(): number { return this.sessions.size; }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
