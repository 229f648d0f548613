import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { ImageLayer } from '../image-store.js';

/** Test-only: tar layers written header by header, so hostile archives are as easy as honest ones. */

export interface Spec {
  path: string;
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'fifo';
  data?: string | Buffer;
  linkpath?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  xattrs?: Record<string, Buffer | string>;
}

const FLAGS = { file: '0', hardlink: '1', symlink: '2', char: '3', dir: '5', fifo: '6' } as const;

function octal(h: Buffer, off: number, len: number, v: number): void {
  h.write(v.toString(8).padStart(len - 1, '0') + '\0', off, len, 'latin1');
}

function header(name: Buffer, flag: string, size: number, s: Partial<Spec>, linkpath = ''): Buffer {
  const h = Buffer.alloc(512);
  name.copy(h, 0, 0, Math.min(100, name.length));
  octal(h, 100, 8, s.mode ?? 0o644);
  octal(h, 108, 8, s.uid ?? 0);
  octal(h, 116, 8, s.gid ?? 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, s.mtime ?? 1_700_000_000);
  h.write(flag, 156, 1, 'latin1');
  h.write(linkpath.slice(0, 100), 157, 100, 'utf8');
  h.write('ustar\0' + '00', 257, 8, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return h;
}

function padded(data: Buffer): Buffer {
  return Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

export function tarOf(specs: Spec[]): Buffer {
  const parts: Buffer[] = [];
  for (const s of specs) {
    const type = s.type ?? 'file';
    const data = type === 'file' ? Buffer.from(s.data ?? '') : Buffer.alloc(0);
    const name = Buffer.from(s.path, 'utf8');
    const pax: Buffer[] = [];
    if (name.length > 100 || name.includes(0)) pax.push(paxRecord('path', name));
    for (const [k, v] of Object.entries(s.xattrs ?? {})) pax.push(paxRecord(`SCHILY.xattr.${k}`, Buffer.from(v)));
    if (pax.length) {
      const body = Buffer.concat(pax);
      parts.push(header(Buffer.from('PaxHeader'), 'x', body.length, {}), padded(body));
    }
    parts.push(header(name.includes(0) ? Buffer.from('x') : name, FLAGS[type], data.length, s, s.linkpath ?? ''), padded(data));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let counter = 0;

/** Writes the layer blob under `dir`; `diffId` may be forced to test the check. */
export function writeLayer(dir: string, specs: Spec[], compression: 'none' | 'gzip' | 'zstd' = 'none', diffId?: string): { blob: string; layer: ImageLayer } {
  const tar = tarOf(specs);
  const blob = join(dir, `blob-${++counter}`);
  let mediaType = 'application/vnd.oci.image.layer.v1.tar';
  if (compression === 'gzip') {
    writeFileSync(blob, gzipSync(tar));
    mediaType = 'application/vnd.oci.image.layer.v1.tar+gzip';
  } else if (compression === 'zstd') {
    writeFileSync(`${blob}.tar`, tar);
    execFileSync('zstd', ['-q', '-f', '-o', blob, `${blob}.tar`]);
    mediaType = 'application/vnd.oci.image.layer.v1.tar+zstd';
  } else {
    writeFileSync(blob, tar);
  }
  const stored = execFileSync('sha256sum', [blob]).toString().split(' ')[0];
  return { blob, layer: { digest: `sha256:${stored}`, diffId: diffId ?? sha(tar), size: tar.length, mediaType } };
}

/** Reads an xattr through python3 (Node has no getxattr); null when absent. */
export function getXattr(path: string, name: string): string | null {
  const out = execFileSync('python3', ['-c', 'import os,sys\ntry: print(os.getxattr(sys.argv[1], sys.argv[2], follow_symlinks=False).hex())\nexcept OSError: print("-")', path, name]);
  const s = out.toString().trim();
  return s === '-' ? null : s;
}
