import type { FastifyReply } from 'fastify';
import { PrismError, type ErrorCode } from '../core/errors.js';

/**
 * The Connect protocol (connectrpc.com/docs/protocol) as the E2B SDK speaks it to envd: JSON codec only,
 * unary calls as plain JSON POSTs, server streams as 5-byte-framed envelopes ending in an end-stream
 * envelope. No compression is offered, so none is sent.
 */

/** Connect's error codes, as they travel in JSON. */
export type ConnectCode =
  | 'canceled'
  | 'unknown'
  | 'invalid_argument'
  | 'deadline_exceeded'
  | 'not_found'
  | 'already_exists'
  | 'permission_denied'
  | 'resource_exhausted'
  | 'failed_precondition'
  | 'aborted'
  | 'out_of_range'
  | 'unimplemented'
  | 'internal'
  | 'unavailable'
  | 'data_loss'
  | 'unauthenticated';

const FROM_PRISM: Record<ErrorCode, ConnectCode> = {
  INVALID_ARGUMENT: 'invalid_argument',
  NOT_FOUND: 'not_found',
  ALREADY_EXISTS: 'already_exists',
  FAILED_PRECONDITION: 'failed_precondition',
  RESOURCE_EXHAUSTED: 'resource_exhausted',
  PAYLOAD_TOO_LARGE: 'resource_exhausted',
  UNAUTHENTICATED: 'unauthenticated',
  PERMISSION_DENIED: 'permission_denied',
  CONFLICT: 'aborted',
  UNAVAILABLE: 'unavailable',
  DEADLINE_EXCEEDED: 'deadline_exceeded',
  UNIMPLEMENTED: 'unimplemented',
  INTERNAL: 'internal',
};

/** HTTP status of a unary error (the client reads the code from the body; the status is for proxies). */
const STATUS: Record<ConnectCode, number> = {
  canceled: 499, unknown: 500, invalid_argument: 400, deadline_exceeded: 504, not_found: 404, already_exists: 409,
  permission_denied: 403, resource_exhausted: 429, failed_precondition: 400, aborted: 409, out_of_range: 400,
  unimplemented: 501, internal: 500, unavailable: 503, data_loss: 500, unauthenticated: 401,
};

export class ConnectError extends Error {
  constructor(readonly code: ConnectCode, message: string) {
    super(message);
  }
}

export function toConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  if (e instanceof PrismError) return new ConnectError(FROM_PRISM[e.code] ?? 'internal', e.message);
  return new ConnectError('internal', 'internal error');
}

export function sendUnaryError(reply: FastifyReply, e: unknown): FastifyReply {
  const err = toConnectError(e);
  return reply.status(STATUS[err.code]).type('application/json').send({ code: err.code, message: err.message });
}

/** One envelope: flags, big-endian length, the JSON message. */
export function envelope(flags: number, message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message));
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

export const END_STREAM = 0x02;

/** The single request message of a server-streaming call: one uncompressed envelope. */
export function parseStreamRequest(body: Buffer): unknown {
  if (body.length < 5) throw new ConnectError('invalid_argument', 'the request is not a Connect envelope');
  const flags = body.readUInt8(0);
  if (flags & 0x01) throw new ConnectError('unimplemented', 'compressed request messages are not supported');
  const len = body.readUInt32BE(1);
  if (body.length < 5 + len) throw new ConnectError('invalid_argument', 'the request envelope is incomplete');
  try {
    return JSON.parse(body.subarray(5, 5 + len).toString('utf8'));
  } catch {
    throw new ConnectError('invalid_argument', 'the request message is not JSON');
  }
}

/**
 * A server stream on the raw response: status 200 and the content type go out at once, then one
 * envelope per message, and `end` closes with the end-stream envelope (carrying an error, if any).
 * Writes respect backpressure; a closed connection makes `closed` true and writes no-ops.
 */
export class ServerStream {
  #ended = false;

  constructor(private readonly reply: FastifyReply) {
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'application/connect+json', 'cache-control': 'no-store' });
    reply.raw.flushHeaders();
  }

  get closed(): boolean {
    return this.#ended || this.reply.raw.destroyed || this.reply.raw.writableEnded;
  }

  /** Resolves when the message is handed over (after a drain when the socket pushed back). */
  async send(message: unknown): Promise<void> {
    if (this.closed) return;
    if (!this.reply.raw.write(envelope(0, message))) {
      await new Promise<void>((resolve) => {
        const done = () => (this.reply.raw.off('drain', done), this.reply.raw.off('close', done), resolve());
        this.reply.raw.once('drain', done);
        this.reply.raw.once('close', done);
      });
    }
  }

  end(error?: unknown): void {
    if (this.closed) return;
    this.#ended = true;
    const err = error === undefined ? undefined : toConnectError(error);
    this.reply.raw.end(envelope(END_STREAM, err ? { error: { code: err.code, message: err.message } } : {}));
  }
}

/** `Connect-Timeout-Ms`: the deadline the client set, in ms; undefined when absent or 0. */
export function connectTimeoutMs(header: string | string[] | undefined): number | undefined {
  const v = Array.isArray(header) ? header[0] : header;
  if (v === undefined || v === '') return undefined;
  if (!/^[0-9]{1,10}$/.test(v)) throw new ConnectError('invalid_argument', `Connect-Timeout-Ms '${v}' is not a number of milliseconds`);
  const ms = Number(v);
  return ms === 0 ? undefined : ms;
}
