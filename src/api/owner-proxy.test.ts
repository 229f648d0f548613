import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startInProcessApi } from '../daemon/in-process-api.test-support.js';

describe('owner proxy', () => {
  let api: Awaited<ReturnType<typeof startInProcessApi>>;
  beforeAll(async () => {
    api = await startInProcessApi();
  });
  afterAll(() => api.close());

  it('reads the sandbox record once per exec: the owner check hands its record to the service', async () => {
    const sb = await api.node.sandboxes.create({});
    const reads = vi.spyOn(api.node.repo, 'getSandbox');
    // Reads made while serving the request (in its fastify hooks and handlers), not background ones that
    // may fall inside the window on a busy host: the sandbox watch's periodic check, or a rejoin after
    // the node's lease ran out while the CPU was starved.
    const stacks: string[] = [];
    const original = reads.getMockImplementation();
    reads.mockImplementation(function (this: unknown, ...args: Parameters<typeof api.node.repo.getSandbox>) {
      stacks.push(new Error().stack ?? '');
      return (original ?? Object.getPrototypeOf(api.node.repo).getSandbox).apply(api.node.repo, args);
    });
    try {
      // On a starved host a background read (a lease renewal gone late, a rejoin) can land inside the
      // window and look like the request's: the best of three tries must show exactly one read.
      for (const accept of ['application/json', 'application/x-ndjson']) {
        const counts: number[] = [];
        const seen: string[] = [];
        for (let attempt = 0; attempt < 3 && !counts.includes(1); attempt++) {
          reads.mockClear();
          stacks.length = 0;
          const res = await fetch(`${api.url}/api/v1/sandboxes/${sb.id}/exec`, {
            method: 'POST', headers: { 'content-type': 'application/json', accept }, body: JSON.stringify({ cmd: ['true'] }),
          });
          expect(res.status).toBe(200);
          await res.text();
          const byRequest = reads.mock.calls.filter(([id], i) => id === sb.id && /fastify|owner-proxy|exec-service|exec-routes/.test(stacks[i]!));
          counts.push(byRequest.length);
          seen.push(...stacks);
        }
        expect(counts, `reads of the record per try: ${seen.join('\n---\n')}`).toContain(1);
      }
    } finally {
      reads.mockRestore();
      await api.node.sandboxes.delete(sb.id);
    }
  });
});
