import { execFile } from 'node:child_process';
import { PrismError } from '../../core/errors.js';

/**
 * Runs `ip` or `nft` (with `input` on stdin for batches) and turns a failure into a PrismError
 * carrying the tool's message. ENOENT means the tool is missing: FAILED_PRECONDITION.
 */
export function hostCommand(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: 30_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return reject(new PrismError('FAILED_PRECONDITION', `${cmd} is not installed (scripts/setup.sh installs iproute2 and nftables)`, { cause: err }));
      }
      const detail = stderr.trim().split('\n').slice(0, 6).join(' | ') || err.message;
      reject(new PrismError('INTERNAL', `${cmd} ${args.join(' ')}: ${detail}`, { cause: err }));
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}
