import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { PrismError } from '../../core/errors.js';

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, _stdout, stderr) => {
      if (err) reject(new PrismError('INTERNAL', `${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`, { cause: err }));
      else resolve();
    });
  });
}

/**
 * The overlay mount options stacking `layers` (lowest first) read-only under a private writable
 * `upper`. overlayfs wants the topmost lower dir first. Paths must not contain ':' or ',' (the option
 * separators). The option string is limited to one page; many deep layer paths would need shorter
 * (relative) paths.
 */
export function overlayOptions(layers: string[], upper: string, work: string): string {
  const bad = [...layers, upper, work].find((p) => /[:,]/.test(p));
  if (bad) throw new PrismError('INVALID_ARGUMENT', `path not usable in an overlay mount: ${bad}`);
  return `lowerdir=${[...layers].reverse().join(':')},upperdir=${upper},workdir=${work}`;
}

export async function mountOverlay(layers: string[], upper: string, work: string, target: string): Promise<void> {
  await run('mount', ['-t', 'overlay', 'overlay', '-o', overlayOptions(layers, upper, work), target]);
}

/** Mount points at or below `prefix`, deepest first, from this process's mount table. */
export async function mountsUnder(prefix: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const points = text
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    // mountinfo escapes space, tab, newline and backslash as octal.
    .map((p) => p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8))))
    .filter((p) => p === prefix || p.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

export async function isMounted(path: string): Promise<boolean> {
  return (await mountsUnder(path)).includes(path);
}

/**
 * Unmounts everything at or below `prefix`. A busy mount (a process on the host still has a file
 * open in it) is detached lazily, so that removing the directory afterwards cannot reach into it.
 */
export async function unmountAll(prefix: string): Promise<void> {
  for (const point of await mountsUnder(prefix)) {
    try {
      await run('umount', [point]);
    } catch {
      await run('umount', ['-l', point]);
    }
  }
  const left = await mountsUnder(prefix);
  if (left.length > 0) throw new PrismError('INTERNAL', `still mounted after umount: ${left.join(', ')}`);
}
