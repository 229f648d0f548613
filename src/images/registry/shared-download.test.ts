import { describe, expect, it } from 'vitest';
import { SharedDownload } from './shared-download.js';

/** A download that, told to stop, takes `cleanupMs` to clean up before it settles. */
function slowToStop(cleanupMs: number) {
  const steps: string[] = [];
  const d = new SharedDownload<string>((signal) => new Promise<string>((_resolve, reject) => {
    signal.addEventListener('abort', () => setTimeout(() => (steps.push('cleaned up'), reject(signal.reason)), cleanupMs), { once: true });
  }));
  return { d, steps };
}

describe('SharedDownload', () => {
  it("answers the last caller's abort only after the download has stopped and cleaned up", async () => {
    const { d, steps } = slowToStop(50);
    const ac = new AbortController();
    const joined = d.join(undefined, ac.signal).catch((e: Error) => (steps.push('caller heard'), e.message));
    ac.abort(new Error('user cancelled'));
    expect(await joined).toBe('user cancelled');
    expect(steps).toEqual(['cleaned up', 'caller heard']);
    expect(d.abandoned).toBe(true);
  });

  it('lets one caller leave at once while the download goes on for the others', async () => {
    let finish!: (v: string) => void;
    const d = new SharedDownload<string>(() => new Promise<string>((r) => (finish = r)));
    const leaving = new AbortController();
    const left = d.join(undefined, leaving.signal).catch((e: Error) => e.message);
    const staying = d.join();
    leaving.abort(new Error('gone'));
    expect(await left).toBe('gone');
    expect(d.abandoned).toBe(false);
    finish('blob');
    expect(await staying).toBe('blob');
  });
});
