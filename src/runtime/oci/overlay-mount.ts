import { runChecked } from '../command.js';
import { PrismError } from '../../core/errors.js';

async function run(cmd: string, args: string[]): Promise<void> {
  await runChecked(cmd, args);
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

export { isMounted, mountsUnder, unmountAll } from '../host-mounts.js';
