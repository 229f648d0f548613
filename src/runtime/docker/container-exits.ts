import { createInterface } from 'node:readline';
import type Docker from 'dockerode';
import type { WatchEnd } from '../pid-watch.js';

/**
 * Exits of containers as the engine reports them: one `GET /events` stream (type container, event
 * die, this node's label) for every watched container of the driver, opened on the first watch. A
 * container that dies is reported once (`exited`); when the stream breaks every watch ends `lost` and
 * the node's watchdog checks those tasks and watches them again. Replaces a poll of each task.
 */
export class ContainerExits {
  readonly #watchers = new Map<string, (why: WatchEnd) => void>();
  #stream: Promise<NodeJS.ReadableStream | undefined> | undefined;

  constructor(
    private readonly docker: () => Docker,
    private readonly nodeLabel: string,
  ) {}

  /**
   * Watches the container `name`; resolves once the engine's stream carries its events, so that a die
   * after that is never missed (the caller checks the container's state itself after this resolves).
   * False when the engine's event stream cannot be opened.
   */
  async watch(name: string, onEnd: (why: WatchEnd) => void): Promise<boolean> {
    this.#watchers.set(name, onEnd);
    if (!(await this.#open())) {
      this.#watchers.delete(name);
      return false;
    }
    return this.#watchers.get(name) === onEnd;
  }

  unwatch(name: string): void {
    this.#watchers.delete(name);
  }

  close(): void {
    void this.#stream?.then((s) => (s as unknown as { destroy?: () => void } | undefined)?.destroy?.());
    this.#stream = undefined;
    this.#watchers.clear();
  }

  #open(): Promise<NodeJS.ReadableStream | undefined> {
    this.#stream ??= this.docker()
      .getEvents({ filters: { type: ['container'], event: ['die'], label: [this.nodeLabel] } })
      .then((s) => {
        const lines = createInterface({ input: s as NodeJS.ReadableStream & import('node:stream').Readable });
        lines.on('line', (line) => this.#event(line));
        const ended = () => this.#broken(s);
        s.once('end', ended);
        s.once('error', ended);
        s.once('close', ended);
        return s;
      })
      .catch(() => {
        this.#stream = undefined;
        return undefined;
      });
    return this.#stream;
  }

  #event(line: string): void {
    let ev: { Actor?: { Attributes?: { name?: string } } };
    try {
      ev = JSON.parse(line) as typeof ev;
    } catch {
      return;
    }
    const name = ev.Actor?.Attributes?.name;
    const onEnd = name ? this.#watchers.get(name) : undefined;
    if (!name || !onEnd) return;
    this.#watchers.delete(name);
    onEnd('exited');
  }

  /** The stream ended (engine restarted, connection cut): every watch ends, to be checked and renewed. */
  #broken(s: NodeJS.ReadableStream): void {
    void this.#stream?.then((cur) => {
      if (cur !== s) return;
      this.#stream = undefined;
      const watchers = [...this.#watchers.values()];
      this.#watchers.clear();
      for (const w of watchers) w('lost');
    });
  }
}
