import { useEffect, useRef, useState } from 'preact/hooks';
import { describeError } from './session.js';

export interface Loaded<T> {
  data: T | undefined;
  error: string | undefined;
  reload: () => void;
}

/**
 * Loads with `load` now, again every `everyMs` (0: never) and on `reload()`. Keeps the last data while
 * a reload runs, so lists do not flicker; an error is shown beside the last data, not instead of it.
 */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[], everyMs = 0): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    const ac = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async (): Promise<void> => {
      try {
        const d = await loadRef.current(ac.signal);
        if (ac.signal.aborted) return;
        setData(d);
        setError(undefined);
      } catch (e) {
        if (!ac.signal.aborted) setError(describeError(e));
      }
      if (everyMs > 0 && !ac.signal.aborted) timer = setTimeout(() => void run(), everyMs);
    };
    void run();
    return () => {
      ac.abort();
      clearTimeout(timer);
    };
    // `load` is read through a ref: a new closure each render must not reload.
  }, [...deps, tick, everyMs]);
  return { data, error, reload: () => setTick((t) => t + 1) };
}

/** Runs an action, tracking "busy" and the error to show. */
export function useAction(): { busy: boolean; error: string | undefined; run: (f: () => Promise<unknown>) => Promise<boolean>; clear: () => void } {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  return {
    busy,
    error,
    clear: () => setError(undefined),
    run: async (f) => {
      setBusy(true);
      setError(undefined);
      try {
        await f();
        return true;
      } catch (e) {
        setError(describeError(e));
        return false;
      } finally {
        setBusy(false);
      }
    },
  };
}
