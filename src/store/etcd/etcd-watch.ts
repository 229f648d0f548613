/**
 * One Store watch = one etcd watch stream that we resume ourselves. etcd3's WatchManager is not used:
 * on reconnect it resumes from the last *header* revision + 1, and the header of a "created" response
 * (or of a catch-up batch) is the store's current revision, not the last event delivered, so a
 * reconnect in the middle of a replay would skip events. Here the resume point is the revision of the
 * last event handed to the callback, and anything at or below it is dropped: no gap, no duplicate.
 * etcd never splits one revision across watch responses (fragmenting is off), so resuming at
 * "last delivered + 1" never loses the rest of a commit.
 */
import type { IWatchResponse, WatchClient } from 'etcd3';
import { setTimeout as sleep } from 'node:timers/promises';
import { PrismError } from '../../core/errors.js';
import type { Watch, WatchEvent } from '../store.js';
import type { KeyCodec } from './etcd-codec.js';

type Stream = Awaited<ReturnType<WatchClient['watch']>>;

export interface EtcdWatchOptions {
  client: WatchClient;
  codec: KeyCodec;
  prefix: string;
  fromRevision: number;
  onEvent: (e: WatchEvent) => void;
  /** Called once, and the watch stops, when it cannot continue (compacted history, cancelled by etcd). */
  onError: (e: PrismError) => void;
  onClose: () => void;
}

export class EtcdWatch implements Watch {
  private delivered: number;
  private stream: Stream | undefined;
  private closed = false;
  private backoffMs = 50;

  constructor(private readonly o: EtcdWatchOptions) {
    this.delivered = o.fromRevision;
    void this.run();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stream?.cancel();
    this.stream = undefined;
    this.o.onClose();
  }

  /** Keeps one stream open, re-opening it after transport failures from the last delivered revision. */
  private async run(): Promise<void> {
    while (!this.closed) {
      const started = Date.now();
      const fatal = await this.streamOnce().catch(() => undefined);
      if (fatal) {
        if (!this.closed) {
          this.close();
          this.o.onError(fatal);
        }
        return;
      }
      // A stream that lived a while was healthy: start the backoff over.
      if (Date.now() - started > 5000) this.backoffMs = 50;
      await sleep(this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, 1000);
    }
  }

  /** Resolves when the stream ends: with an error to stop for good, or undefined to reconnect. */
  private async streamOnce(): Promise<PrismError | undefined> {
    const stream = await this.o.client.watch();
    if (this.closed) {
      stream.cancel();
      return undefined;
    }
    this.stream = stream;
    const { key, range_end } = this.o.codec.range(this.o.prefix);
    return new Promise((resolve) => {
      let ended = false;
      const end = (result: PrismError | undefined) => {
        if (ended) return;
        ended = true;
        if (this.stream === stream) {
          stream.cancel();
          this.stream = undefined;
        }
        resolve(result);
      };
      stream.on('data', (res: IWatchResponse) => {
        if (ended) return;
        const fatal = this.handle(res);
        if (fatal || res.canceled) end(fatal);
      });
      stream.on('error', () => end(undefined));
      stream.on('end', () => end(undefined));
      stream.write({ create_request: { key, range_end, start_revision: this.delivered + 1 } });
    });
  }

  private handle(res: IWatchResponse): PrismError | undefined {
    if (res.compact_revision !== '0' && res.compact_revision !== '') {
      return new PrismError('FAILED_PRECONDITION',
        `cannot watch "${this.o.prefix}" from revision ${this.delivered}: etcd compacted history up to revision ` +
          `${res.compact_revision}; list the keys and watch from the current revision`);
    }
    if (res.canceled) {
      // Cancelled without compaction: a server-side refusal (permissions, shutdown of the member).
      // Reconnecting elsewhere is right for the latter; the former reappears as a cancel loop.
      return res.cancel_reason
        ? new PrismError('UNAVAILABLE', `etcd cancelled the watch on "${this.o.prefix}": ${res.cancel_reason}`)
        : undefined;
    }
    this.backoffMs = 50;
    const after = this.delivered;
    for (const ev of res.events) {
      if (this.closed) return undefined;
      const revision = Number(ev.kv.mod_revision);
      if (revision <= after) continue;
      const key = this.o.codec.decode(ev.kv.key);
      const event: WatchEvent = ev.type === 'Put'
        ? { type: 'put', key, value: ev.kv.value.toString('utf8'), revision }
        : { type: 'delete', key, revision };
      // Advanced before the callback, so one that throws is not handed its event again.
      this.delivered = revision;
      this.deliver(Object.freeze(event));
    }
    return undefined;
  }

  private deliver(e: WatchEvent): void {
    try {
      this.o.onEvent(e);
    } catch (err) {
      process.emitWarning(`prism store: watch callback for prefix "${this.o.prefix}" threw: ${String(err)}`);
    }
  }
}
