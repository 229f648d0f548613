import { fstatSync } from 'node:fs';

/**
 * True when stderr is a stream into the systemd journal: systemd sets JOURNAL_STREAM to the
 * `device:inode` of that stream (systemd.exec(5)). Comparing it with fd 2 tells a service's own
 * stderr from one a child inherited the variable with but redirected.
 */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env, stat: () => { dev: number; ino: number } = () => fstatSync(2)): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const s = stat();
    return s.dev === Number(m[1]) && s.ino === Number(m[2]);
  } catch {
    return false;
  }
}
