import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';

/** Where guest RAM files live by default: a tmpfs of its own (see ensureRamDir). */
export const DEFAULT_VM_RAM_DIR = '/run/prism/vm-ram';
const TMPFS_MAGIC = 0x01021994;

/**
 * A tmpfs directory for guest RAM files (qemu-args.ts `memory`), mounting one if `dir` is not on a
 * tmpfs yet. Its own mount, sized to the host's RAM, because /dev/shm is capped at half of it by
 * default and a VM whose RAM file cannot grow dies of SIGBUS; what a VM may use is its cgroup's limit.
 * Files there are unlinked as soon as QEMU has them mapped, so the mount holds nothing that outlives
 * a VM (copies a crash left are swept here), and it is shared by every prismd on the host. Undefined (VMs get anonymous RAM) when
 * neither works, e.g. without the right to mount.
 */
export async function ensureRamDir(dir: string, scratchPrefix: string): Promise<string | undefined> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    if ((await statfs(dir)).type === TMPFS_MAGIC) {
      await sweepScratch(dir, scratchPrefix);
      return dir;
    }
    const memKb = Number(/^MemTotal:\s+(\d+)/m.exec(await readFile('/proc/meminfo', 'utf8'))?.[1]);
    if (!memKb) return undefined;
    await new Promise<void>((resolve, reject) =>
      execFile('mount', ['-t', 'tmpfs', '-o', `size=${memKb}k,mode=0700,nosuid,nodev,noexec`, 'prism-vm-ram', dir], (err, _o, stderr) => (err ? reject(new Error(String(stderr).trim() || err.message)) : resolve())));
    return (await statfs(dir)).type === TMPFS_MAGIC ? dir : undefined;
  } catch {
    return undefined;
  }
}

/** A restore's RAM copy lives under its name only until QEMU maps it; one older than this was left by a crash. */
const SCRATCH_MAX_AGE_MS = 10 * 60_000;

/** Unlinking a file QEMU still maps is harmless (the mapping keeps it), so any old copy can go. */
async function sweepScratch(dir: string, prefix: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!name.startsWith(prefix)) continue;
    const f = join(dir, name);
    const st = await stat(f).catch(() => null);
    if (st && Date.now() - st.mtimeMs > SCRATCH_MAX_AGE_MS) await rm(f, { force: true });
  }
}
