import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInProcessApi } from '../daemon/in-process-api.test-support.js';
import { Prism, PrismApiError, type ProcessEvent, type SandboxHandle } from './index.js';

// The SDK against the real API routes and ProcessService, on the in-memory fake driver (no root needed).
let api: Awaited<ReturnType<typeof startInProcessApi>>;
let sb: SandboxHandle;

beforeAll(async () => {
  api = await startInProcessApi({ processLimits: { bufferBytes: 16 } });
  sb = await new Prism({ url: api.url }).sandboxes.create();
});

afterAll(async () => {
  await api?.close();
});

describe('SDK background processes', () => {
  it('starts with exec({background: true}), writes stdin, reads output from where it left off, waits', async () => {
    const p = await sb.exec(['cat'], { background: true, stdin: 'ab' });
    expect(p.status).toBe('running');
    await p.write('cd');
    let first = await p.output();
    for (let i = 0; i < 50 && first.next.stdout < 4; i++) first = await p.output({ since: 0 });
    expect(first.text()).toBe('abcd');
    await p.write(new Uint8Array([0xff]));
    await p.closeStdin();
    const done = await p.wait({ timeoutMs: 5000 });
    expect(done).toMatchObject({ status: 'exited', exitCode: 0, stdinOpen: false });
    const rest = await p.output(); // continues at 4
    expect(rest.stdout).toEqual(new Uint8Array([0xff]));
    expect(rest.next).toEqual({ stdout: 5, stderr: 0 });
    expect((await sb.processes.list()).map((x) => x.id)).toContain(p.id);
  });

  it('streams events until the exit and reports bytes the buffer dropped', async () => {
    const p = await sb.processes.start(['cat']);
    await p.write('0123456789abcdefghij'); // 20 bytes into a 16-byte buffer
    await p.closeStdin();
    await p.wait();
    const events: ProcessEvent[] = [];
    for await (const ev of p.stream({ since: 0 })) events.push(ev);
    expect(events[0]).toMatchObject({ type: 'stdout', offset: 4, dropped: 4 });
    expect(new TextDecoder().decode((events[0] as { data: Uint8Array }).data)).toBe('456789abcdefghij');
    expect(events.at(-1)).toMatchObject({ type: 'exit', process: { status: 'exited', exitCode: 0 }, next: { stdout: 20, stderr: 0 } });
  });

  it('signals, and wait gives up with DEADLINE_EXCEEDED or the abort reason while it runs', async () => {
    const p = await sb.processes.start(['sleep', '100000']);
    await expect(p.wait({ timeoutMs: 50 })).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('stop waiting')), 50);
    await expect(p.wait({ signal: ac.signal })).rejects.toThrow('stop waiting');
    expect((await p.refresh()).status).toBe('running');
    await p.signal('SIGTERM');
    expect(await p.wait()).toMatchObject({ status: 'exited', signal: 'SIGTERM' });
    // kill() of an exited process leaves it be; remove() forgets it.
    expect((await p.kill()).signal).toBe('SIGTERM');
    await p.remove();
    const gone = await p.refresh().catch((e: unknown) => e);
    expect(gone).toBeInstanceOf(PrismApiError);
    expect((gone as PrismApiError).code).toBe('NOT_FOUND');
  });

  it('ends a stream early without ending the process', async () => {
    const p = await sb.processes.start(['cat'], { stdin: 'x' });
    for await (const ev of p.stream({ since: 0 })) {
      expect(ev).toMatchObject({ type: 'stdout', offset: 0 });
      break;
    }
    expect((await sb.processes.get(p.id)).status).toBe('running');
    expect((await p.kill()).status).toBe('running'); // the signal is sent; the exit follows
    expect(await p.wait()).toMatchObject({ status: 'exited', signal: 'SIGKILL' });
  });
});
