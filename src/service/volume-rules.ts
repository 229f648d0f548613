import { posix } from 'node:path';
import { PrismError } from '../core/errors.js';
import { MAX_VOLUMES_PER_SANDBOX, type Volume, type VolumeAttachment, type VolumeMount } from '../core/types.js';

/** Pure rules of volumes: where a sandbox may mount them and who may hold one at the same time. */

/** Paths a volume may not cover: the kernel's and Prism's own (prism-init lives at /.prism/init). */
const RESERVED = ['/proc', '/sys', '/dev', '/.prism'];

/**
 * Checks a create request's volume mounts: at most MAX_VOLUMES_PER_SANDBOX, each an absolute,
 * normalised path that is not `/` nor at or under a reserved path, no volume or path twice, and no
 * path inside another (mount order would decide which one a file lands on).
 */
export function validateVolumeMounts(mounts: VolumeMount[]): void {
  if (mounts.length > MAX_VOLUMES_PER_SANDBOX) {
    throw new PrismError('INVALID_ARGUMENT', `a sandbox mounts at most ${MAX_VOLUMES_PER_SANDBOX} volumes, got ${mounts.length}`);
  }
  const names = new Set<string>();
  for (const m of mounts) {
    const p = m.mountPath;
    if (!p.startsWith('/') || posix.normalize(p) !== p || (p.length > 1 && p.endsWith('/'))) {
      throw new PrismError('INVALID_ARGUMENT', `volume mountPath must be an absolute, normalised path (no '..', '//' or trailing '/'), got '${p}'`);
    }
    if (p === '/') throw new PrismError('INVALID_ARGUMENT', `volume '${m.name}' cannot be mounted on /`);
    const reserved = RESERVED.find((r) => p === r || p.startsWith(`${r}/`));
    if (reserved) throw new PrismError('INVALID_ARGUMENT', `volume mountPath '${p}' is under ${reserved}, which is reserved`);
    if (names.has(m.name)) throw new PrismError('INVALID_ARGUMENT', `volume '${m.name}' is listed twice`);
    names.add(m.name);
  }
  for (const a of mounts) {
    for (const b of mounts) {
      if (a === b) continue;
      if (a.mountPath === b.mountPath) throw new PrismError('INVALID_ARGUMENT', `two volumes are mounted on '${a.mountPath}'`);
      if (b.mountPath.startsWith(`${a.mountPath}/`)) throw new PrismError('INVALID_ARGUMENT', `volume mountPath '${b.mountPath}' is inside '${a.mountPath}'`);
    }
  }
}

/**
 * CONFLICT when `next` may not join the volume's current attachments. One sandbox writes at a time
 * unless the volume was created `multiAttach` (containers: they share the host's kernel, which mounts
 * the file system once). ext4 is not a cluster file system, so a microVM (a kernel of its own) shares
 * a volume only when every attachment is a microVM's and read-only; alone, it may write.
 */
export function checkAttach(v: Volume, next: VolumeAttachment): void {
  const others = v.attachments.filter((a) => a.sandboxId !== next.sandboxId);
  const all = [...others, next];
  const writers = all.filter((a) => !a.readOnly);
  if (writers.length > 1 && !v.multiAttach) {
    const other = writers.find((a) => a.sandboxId !== next.sandboxId)!;
    throw new PrismError('CONFLICT', `volume '${v.name}' is attached read-write to sandbox ${other.sandboxId}; mount it read-only, or create the volume with multiAttach`);
  }
  const vm = all.some((a) => a.runtime === 'microvm');
  if (vm && others.length > 0 && !all.every((a) => a.runtime === 'microvm' && a.readOnly)) {
    const held = others.map((a) => `${a.sandboxId} (${a.runtime}, ${a.readOnly ? 'read-only' : 'read-write'})`).join(', ');
    throw new PrismError('CONFLICT', `volume '${v.name}' is attached to ${held}; a microVM mounts the volume with its own kernel, so it shares it only read-only with other microVMs`);
  }
}

/** The volume without `sandboxId`'s attachment. */
export function detached(v: Volume, sandboxId: string): Volume {
  return { ...v, attachments: v.attachments.filter((a) => a.sandboxId !== sandboxId) };
}
