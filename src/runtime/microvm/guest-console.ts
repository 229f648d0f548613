import { open, stat } from 'node:fs/promises';

/**
 * The guest's serial console as QEMU writes it to `console.log`. The guest kernel's OOM killer logs
 * "Killed process <pid> (<comm>)" at KERN_ERR, which passes `quiet`, so an OOM kill is visible here
 * without running anything in the guest (no exec, no image binary needed).
 */

const OOM_KILL = /Killed process \d+/;
const MAX_SCAN = 1 << 20;

export async function consoleSize(file: string): Promise<number> {
  return (await stat(file).catch(() => null))?.size ?? 0;
}

/**
 * True when an OOM kill was logged after byte `offset`. printk reaches the UART just before the
 * victim dies, but the exit frame can overtake QEMU's file write, so it looks twice more briefly.
 */
export async function oomKillLoggedSince(file: string, offset: number): Promise<boolean> {
  for (let attempt = 0; attempt < 3; attempt++) {
    if (OOM_KILL.test(await readFrom(file, offset))) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

async function readFrom(file: string, offset: number): Promise<string> {
  const fh = await open(file, 'r').catch(() => null);
  if (!fh) return '';
  try {
    const length = Math.min((await fh.stat()).size - offset, MAX_SCAN);
    if (length <= 0) return '';
    const { buffer, bytesRead } = await fh.read(Buffer.alloc(length), 0, length, offset);
    return buffer.subarray(0, bytesRead).toString('latin1');
  } finally {
    await fh.close();
  }
}
