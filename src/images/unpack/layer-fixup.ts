import { spawn } from 'node:child_process';
import { PrismError } from '../../core/errors.js';

/**
 * What Node cannot do to an unpacked layer (it has no mknod or setxattr): overlayfs whiteouts, opaque
 * directories and extended attributes. All of a layer's fixups go to one `prism-init layer-fixup DEST`
 * process (see guest/init/prism-init.c), which opens every path component with O_NOFOLLOW.
 * Measured on the dev VM with 500 whiteouts: one helper process took 24-41 ms (spawn ~1 ms), one
 * mknod(1) process per whiteout took 0.6-1.0 s (1.3-1.9 ms each); setfattr(1) is not even installed
 * by default, and neither tool can refuse a symlinked parent.
 */
export class LayerFixups {
  readonly whiteouts = new Set<string>();
  readonly opaque = new Set<string>();
  readonly xattrs = new Map<string, Array<[string, Buffer]>>();

  get empty(): boolean {
    return this.whiteouts.size === 0 && this.opaque.size === 0 && this.xattrs.size === 0;
  }

  /** Drops everything recorded at `rel` or beneath it (the layer replaced or deleted it). */
  forget(rel: string): void {
    const under = (p: string): boolean => p === rel || rel === '' || p.startsWith(`${rel}/`);
    for (const set of [this.whiteouts, this.opaque]) for (const p of set) if (under(p)) set.delete(p);
    for (const p of this.xattrs.keys()) if (under(p)) this.xattrs.delete(p);
  }

  /** The helper's stdin: NUL-terminated fields, xattr values hex-encoded (they may hold NULs). */
  encode(): Buffer {
    const fields: string[] = [];
    for (const p of this.whiteouts) fields.push('w', p);
    for (const p of this.opaque) fields.push('o', p);
    for (const [p, list] of this.xattrs) for (const [name, value] of list) fields.push('x', p, name, value.toString('hex'));
    return Buffer.from(fields.map((f) => `${f}\0`).join(''), 'utf8');
  }

  /** Applies everything recorded to `dest`; INTERNAL with the helper's message on failure. */
  async apply(helper: string | undefined, dest: string, layerId: string): Promise<void> {
    if (this.empty) return;
    if (!helper) {
      throw new PrismError('FAILED_PRECONDITION', `layer ${layerId} has whiteouts or xattrs, which need the prism-init binary (fixupBinary)`);
    }
    const input = this.encode();
    await new Promise<void>((resolve, reject) => {
      const child = spawn(helper, ['layer-fixup', dest], { stdio: ['pipe', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => {
        if (stderr.length < 4096) stderr += d.toString('utf8');
      });
      // EPIPE if the helper exits early; its exit status carries the reason.
      child.stdin.on('error', () => undefined);
      child.on('error', (e) => reject(new PrismError('INTERNAL', `running ${helper}: ${e.message}`, { cause: e })));
      child.on('close', (code, signal) => {
        if (code === 0) resolve();
        else reject(new PrismError('INTERNAL', `layer ${layerId}: ${stderr.trim() || `${helper} layer-fixup failed (${signal ?? code})`}`));
      });
      child.stdin.end(input);
    });
  }
}
