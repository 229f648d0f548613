import { describe, expect, it } from 'vitest';
import { etcdSaid } from './etcd-member.js';

describe('etcdSaid', () => {
  it("gives the error of etcd's last fatal line, not its JSON", () => {
    const log = [
      '{"level":"warn","ts":"2026-01-01T00:00:00Z","msg":"found invalid file under data directory","filename":"etcd.pid"}',
      '{"level":"warn","ts":"2026-01-01T00:00:00Z","msg":"failed to start etcd","error":"listen tcp 127.0.0.1:2379: bind: address already in use"}',
      '{"level":"fatal","ts":"2026-01-01T00:00:00Z","msg":"discovery failed","error":"listen tcp 127.0.0.1:2379: bind: address already in use","stacktrace":"go.etcd.io/..."}',
    ].join('\n');
    expect(etcdSaid(log)).toBe('discovery failed: listen tcp 127.0.0.1:2379: bind: address already in use');
  });

  it('falls back to the last lines when etcd wrote no JSON error', () => {
    expect(etcdSaid('spawn etcd ENOENT\n')).toBe('spawn etcd ENOENT');
    expect(etcdSaid('')).toBe('no output');
  });
});
