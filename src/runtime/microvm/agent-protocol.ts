import { constants } from 'node:os';
import { PrismError } from '../../core/errors.js';

/**
 * The microVM guest agent protocol, version 8 (docs/microvm-agent-protocol.md). This file and
 * guest/agent/protocol.h are its two definitions and must change together.
 *
 * Frame: u8 type, u32 channel (big-endian), u32 length (big-endian, at most 1 MiB), payload.
 */

export const PROTOCOL_VERSION = 8;
/**
 * The oldest agent a host still talks to: a VM booted before prismd was upgraded keeps running. It
 * is version 7, which has no `W`, so its output is not flow-controlled (it runs ahead of the reader).
 */
export const OLDEST_PROTOCOL_VERSION = 7;
/** Output bytes (O and E payloads) a session may send before the host's first `W`; OUT_WINDOW in protocol.h. */
export const OUTPUT_WINDOW = 1024 * 1024;
/** A `W` limit that never runs out: for sessions this host does not read (see encodeWindow). */
export const UNLIMITED_OUTPUT = 2n ** 64n - 1n;
export const HEADER_BYTES = 9;
export const MAX_PAYLOAD = 1 << 20;
export const CONTROL_CHANNEL = 0;
/** Session channels are 1..2^31, chosen by the host. */
export const MAX_SESSION_CHANNEL = 2 ** 31;

/** Frame types; the comment says who sends it. */
export const FrameType = {
  Hello: 'H', // host: hello, answered by HelloReply
  HelloReply: 'h', // guest: "prism-agent <version> <booted|ready>[ <live channel>...]"
  Mount: 'M', // host: fields hostname, memory limit in bytes, pids limit (0 = none), time ms, seed hex, open files (0 = none)
  MountReply: 'm', // guest: "ok" or "error: <message>"
  Volume: 'V', // host: fields disk serial, absolute mount path, "ro" or "rw" (after Mount)
  VolumeReply: 'v', // guest: "ok" or "error: <message>"
  Shutdown: 'Q', // host: sync, unmount, power off
  Detach: 'D', // host: about to save the VM: hold output, keep sessions across the disconnect, until the next hello
  DetachReply: 'd', // guest: "ok", the last frame before the next hello
  Facts: 'F', // host: fields time ms, seed hex (a resumed VM's clock and RNG)
  FactsReply: 'f', // guest: "ok" or "error: <message>"
  Network: 'N', // host: fields address/prefix, gateway, MTU, then name servers (see encodeNetwork); after M
  NetworkReply: 'n', // guest: "ok" or "error: <message>"
  Stats: 'T', // host: usage of the sandbox cgroup, answered by StatsReply
  StatsReply: 't', // guest: "pids N memory BYTES oom_kills K ..." (decodeStats)
  Start: 'S', // host: start a command (see encodeStart)
  Stdin: 'I', // host: stdin bytes
  CloseStdin: 'C', // host: close stdin
  Kill: 'K', // host: u8 signal number
  PtyStart: 'P', // host: start a command on a new terminal: fields cols, rows, then Start's payload
  Resize: 'R', // host: fields cols, rows of a terminal session
  Window: 'W', // host: u64 the session may send this many output bytes in all (version 8; see encodeWindow)
  Stdout: 'O', // guest: stdout bytes
  Stderr: 'E', // guest: stderr bytes
  Exit: 'X', // guest: "<exitCode> <signal>[ oom]"
} as const;

export type FrameTypeChar = (typeof FrameType)[keyof typeof FrameType];

export interface Frame {
  /** One ASCII character; unknown types are passed through so the caller can ignore them. */
  type: string;
  channel: number;
  payload: Buffer;
}

export function encodeFrame(type: FrameTypeChar, channel: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  if (payload.length > MAX_PAYLOAD) throw new PrismError('INTERNAL', `agent frame of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  if (!Number.isInteger(channel) || channel < 0 || channel > MAX_SESSION_CHANNEL) {
    throw new PrismError('INTERNAL', `invalid agent channel ${channel}`);
  }
  const header = Buffer.alloc(HEADER_BYTES);
  header.write(type, 0, 'latin1');
  header.writeUInt32BE(channel, 1);
  header.writeUInt32BE(payload.length, 5);
  return payload.length === 0 ? header : Buffer.concat([header, payload]);
}

/** Splits `data` into frames of at most MAX_PAYLOAD bytes each (stdin). */
export function encodeChunked(type: FrameTypeChar, channel: number, data: Buffer): Buffer[] {
  const frames: Buffer[] = [];
  for (let i = 0; i < data.length; i += MAX_PAYLOAD) frames.push(encodeFrame(type, channel, data.subarray(i, i + MAX_PAYLOAD)));
  return frames;
}

/**
 * Incremental frame parser: feed it whatever the socket delivered, get back the complete frames.
 * An oversized length means the stream is out of step (or not the agent); the parser then throws,
 * and the connection must be dropped since no later byte can be trusted.
 */
export class FrameParser {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    while (this.buffered >= HEADER_BYTES) {
      const head = this.peek(HEADER_BYTES);
      const length = head.readUInt32BE(5);
      if (length > MAX_PAYLOAD) throw new PrismError('INTERNAL', `agent sent a frame of ${length} bytes (limit ${MAX_PAYLOAD})`);
      if (this.buffered < HEADER_BYTES + length) break;
      const all = this.take(HEADER_BYTES + length);
      frames.push({ type: String.fromCharCode(all[0]!), channel: all.readUInt32BE(1), payload: all.subarray(HEADER_BYTES) });
    }
    return frames;
  }

  /** Bytes of an incomplete frame held back. */
  get pending(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!.subarray(0, n);
  }

  private take(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    const first = this.chunks[0]!;
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}

/** Fields are NUL-terminated strings, concatenated. */
export function encodeFields(fields: string[]): Buffer {
  for (const f of fields) {
    if (f.includes('\0')) throw new PrismError('INVALID_ARGUMENT', 'command, environment, cwd and hostname must not contain NUL bytes');
  }
  return Buffer.from(fields.map((f) => `${f}\0`).join(''), 'utf8');
}

/** Inverse of encodeFields; a trailing unterminated field is malformed. */
export function decodeFields(payload: Buffer): string[] {
  const fields: string[] = [];
  let start = 0;
  for (let i = 0; i < payload.length; i++) {
    if (payload[i] === 0) {
      fields.push(payload.subarray(start, i).toString('utf8'));
      start = i + 1;
    }
  }
  if (start !== payload.length) throw new PrismError('INVALID_ARGUMENT', 'unterminated field in agent payload');
  return fields;
}

export interface StartRequest {
  cwd: string;
  stdin: boolean;
  argv: string[];
  env: Record<string, string>;
  /** "uid gid g1,g2"; absent = root. */
  user?: string;
}

/** `S`: cwd, "stdin" or "", argc, argv..., envc, env..., user ("" = root). */
export function encodeStart(req: StartRequest): Buffer {
  if (req.argv.length === 0) throw new PrismError('INVALID_ARGUMENT', 'argv must not be empty');
  const env = Object.entries(req.env).map(([k, v]) => `${k}=${v}`);
  if (Object.keys(req.env).some((k) => k === '' || k.includes('='))) {
    throw new PrismError('INVALID_ARGUMENT', 'environment names must be non-empty and must not contain "="');
  }
  const payload = encodeFields([
    req.cwd, req.stdin ? 'stdin' : '', String(req.argv.length), ...req.argv, String(env.length), ...env, req.user ?? '',
  ]);
  if (payload.length > MAX_PAYLOAD) throw new PrismError('INVALID_ARGUMENT', 'command and environment exceed 1 MiB');
  return payload;
}

/** A terminal size as fields (`P`'s prefix and `R`); INVALID_ARGUMENT outside 1..65535. */
export function encodeSize(cols: number, rows: number): Buffer {
  for (const n of [cols, rows]) {
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new PrismError('INVALID_ARGUMENT', `terminal size must be 1-65535 columns and rows, got ${cols}x${rows}`);
  }
  return encodeFields([String(cols), String(rows)]);
}

/** `P`: the terminal's size, then what `S` carries. */
export function encodePtyStart(req: StartRequest, cols: number, rows: number): Buffer {
  const payload = Buffer.concat([encodeSize(cols, rows), encodeStart(req)]);
  if (payload.length > MAX_PAYLOAD) throw new PrismError('INVALID_ARGUMENT', 'command and environment exceed 1 MiB');
  return payload;
}

export function decodeStart(payload: Buffer): StartRequest {
  const f = decodeFields(payload);
  const argc = Number(f[2]);
  const envc = Number(f[3 + argc]);
  if (!Number.isInteger(argc) || !Number.isInteger(envc) || f.length !== 5 + argc + envc) {
    throw new PrismError('INVALID_ARGUMENT', 'malformed start payload');
  }
  const env: Record<string, string> = {};
  for (const kv of f.slice(4 + argc, 4 + argc + envc)) {
    const eq = kv.indexOf('=');
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const user = f[4 + argc + envc]!;
  return { cwd: f[0]!, stdin: f[1] === 'stdin', argv: f.slice(3, 3 + argc), env, ...(user ? { user } : {}) };
}

/**
 * `W`: the session may have sent up to `limit` bytes of output (O and E payloads together) in all.
 * Limits only grow (the agent ignores a smaller one), so a `W` can be repeated after a reconnect.
 */
export function encodeWindow(limit: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(limit));
  return b;
}

export interface ExitStatus {
  exitCode: number;
  /** Signal number, 0 when the command exited normally. */
  signal: number;
  /** Killed by the guest's OOM killer: SIGKILL while the sandbox cgroup's oom_kill count rose. */
  oomKilled?: boolean;
}

export function encodeExit(s: ExitStatus): Buffer {
  return Buffer.from(`${s.exitCode} ${s.signal}${s.oomKilled ? ' oom' : ''}`);
}

export function decodeExit(payload: Buffer): ExitStatus {
  const m = /^(-?\d+) (\d+)( oom)?$/.exec(payload.toString('latin1').trim());
  if (!m) throw new PrismError('INTERNAL', `malformed exit frame: ${JSON.stringify(payload.toString('latin1'))}`);
  return { exitCode: Number(m[1]), signal: Number(m[2]), ...(m[3] ? { oomKilled: true } : {}) };
}

const SIGNAL_NAMES = new Map<number, string>(Object.entries(constants.signals).map(([name, n]) => [n, name]));

/** An exit frame as a command's result: the signal by name; a malformed frame is the protocol's "could not run" (126). */
export function exitFromFrame(payload: Buffer): { exitCode: number; signal?: string; oomKilled?: boolean } {
  try {
    const st = decodeExit(payload);
    const name = st.signal ? SIGNAL_NAMES.get(st.signal) : undefined;
    return { exitCode: st.exitCode, ...(name ? { signal: name } : {}), ...(st.oomKilled ? { oomKilled: true } : {}) };
  } catch {
    return { exitCode: 126 };
  }
}

export type AgentState = 'booted' | 'ready';

/** `h` payload: "prism-agent <version> <booted|ready>[ <channel>...]", the channels of sessions still running. */
export function decodeHello(payload: Buffer): { version: number; state: AgentState; channels: number[] } {
  const m = /^prism-agent (\d+) (booted|ready)((?: \d+)*)$/.exec(payload.toString('latin1').trim());
  if (!m) throw new PrismError('INTERNAL', `unexpected agent hello: ${JSON.stringify(payload.toString('latin1'))}`);
  return { version: Number(m[1]), state: m[2] as AgentState, channels: m[3]!.trim() ? m[3]!.trim().split(' ').map(Number) : [] };
}

/** `m` and `v` payloads: null on success, else the guest's message. */
export function decodeMountReply(payload: Buffer): string | null {
  const text = payload.toString('utf8').replace(/\0+$/, '').trim();
  if (text === 'ok') return null;
  return text.startsWith('error:') ? text.slice(6).trim() : text || 'empty reply';
}

export interface GuestStats {
  pids: number;
  memoryBytes: number;
  /** Page cache (memory.stat `file`) of the sandbox cgroup. */
  memoryCacheBytes: number;
  oomKills: number;
  /** statvfs of the sandbox's root: the overlay reports its upper layer, the VM's writable disk. */
  diskUsedBytes: number;
  diskTotalBytes: number;
}

/**
 * `t` payload: "pids N memory BYTES oom_kills K mem_cache BYTES disk_used BYTES disk_total BYTES";
 * a key an older agent does not send reads as 0.
 */
export function decodeStats(payload: Buffer): GuestStats {
  const f = payload.toString('latin1').split(' ');
  const get = (k: string) => {
    const i = f.indexOf(k);
    return i < 0 ? 0 : Number(f[i + 1]) || 0;
  };
  return {
    pids: get('pids'), memoryBytes: get('memory'), memoryCacheBytes: get('mem_cache'), oomKills: get('oom_kills'),
    diskUsedBytes: get('disk_used'), diskTotalBytes: get('disk_total'),
  };
}

/** What `N` configures: the guest's NIC (the only one besides lo) and its /etc/resolv.conf. */
export interface GuestNetwork {
  /** `a.b.c.d/prefix` */
  address: string;
  gateway: string;
  mtu: number;
  nameservers: string[];
}

export function encodeNetwork(n: GuestNetwork): Buffer {
  return encodeFields([n.address, n.gateway, String(n.mtu), ...n.nameservers]);
}
