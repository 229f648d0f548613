import type { ServerResponse } from 'node:http';
import { asPrismError } from '../core/errors.js';

/** What the NDJSON streams of the API share (exec output, process output, image pull progress). */

/** Resolves when `res` can take more (its buffer drained) or is closed: a slow reader holds the writer back. */
export function drained(res: ServerResponse): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** A stream's last event when it fails after its headers went out: the error's stable code (INTERNAL for a non-Prism error). */
export function errorEvent(e: unknown): { type: 'error'; error: { code: string; message: string } } {
  const err = asPrismError(e);
  return { type: 'error', error: { code: err.code, message: err.message } };
}
