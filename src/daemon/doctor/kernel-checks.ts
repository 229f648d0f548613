import type { HostSystem } from './host-system.js';
import { DOCS, severity, type Check, type DoctorContext } from './check.js';

/** `loaded` (in /sys/module), `available` (modprobe finds it: a module file or built in), or `absent`. */
export async function moduleState(sys: HostSystem, name: string): Promise<'loaded' | 'available' | 'absent'> {
  if (await sys.stat(`/sys/module/${name}`)) return 'loaded';
  const dryRun = await sys.run('modprobe', ['-n', '-q', name]);
  return dryRun.code === 0 ? 'available' : 'absent';
}

/** The oci runtime stacks image layers with overlayfs; its probe loads the module when it is one. */
export async function checkOverlay(ctx: DoctorContext): Promise<Check> {
  const filesystems = (await ctx.sys.readFile('/proc/filesystems')) ?? '';
  if (/\toverlay$/m.test(filesystems)) return { name: 'overlayfs', status: 'ok', detail: 'overlay is in /proc/filesystems' };
  if ((await moduleState(ctx.sys, 'overlay')) !== 'absent') {
    return { name: 'overlayfs', status: 'ok', detail: 'overlay is a module, not loaded yet (prismd loads it when the oci runtime starts)' };
  }
  return { name: 'overlayfs', status: severity(ctx.cfg, ['oci']), detail: 'the kernel has no overlay filesystem', fix: `a kernel with CONFIG_OVERLAY_FS (${DOCS}#overlayfs)` };
}

/** Every oci task's writable layer, and every volume, is an ext4 image on a loop device. */
export async function checkLoop(ctx: DoctorContext): Promise<Check> {
  const dev = await ctx.sys.stat('/dev/loop-control');
  if (dev?.kind === 'char') return { name: 'loop devices', status: 'ok', detail: '/dev/loop-control is there' };
  const state = await moduleState(ctx.sys, 'loop');
  const detail = '/dev/loop-control is missing: oci sandboxes (their writable disk) and volumes need loop devices';
  const fix = state === 'absent'
    ? `in a container, pass /dev/loop-control and /dev/loop* (docker run --device); else a kernel with CONFIG_BLK_DEV_LOOP (${DOCS}#loop-devices)`
    : 'modprobe loop';
  return { name: 'loop devices', status: severity(ctx.cfg, ['oci']), detail, fix };
}

const VETH_FIX = `modprobe veth (a kernel with CONFIG_VETH); only sandboxes with a network need it (docs/network.md)`;

/**
 * Sandbox networks are a veth pair into a network namespace. As root this makes one in a namespace of
 * its own and deletes both; otherwise it can only look for the module.
 */
export async function checkVeth(ctx: DoctorContext): Promise<Check> {
  const { sys } = ctx;
  if (sys.uid() !== 0) {
    const state = await moduleState(sys, 'veth');
    if (state !== 'absent') return { name: 'veth', status: 'ok', detail: `veth module ${state} (not tried: that needs root)` };
    return { name: 'veth', status: 'warn', detail: 'no veth module found, and only root can try a veth pair', fix: VETH_FIX };
  }
  const ns = `prism-doctor-${process.pid}`;
  const add = await sys.run('ip', ['netns', 'add', ns]);
  if (add.error === 'ENOENT') return { name: 'veth', status: 'warn', detail: 'the ip command is missing', fix: 'apt-get install iproute2' };
  if (add.code !== 0) return { name: 'veth', status: 'warn', detail: `cannot make a network namespace: ${firstLine(add.stderr || add.error)}`, fix: `${DOCS}#veth` };
  try {
    const link = await sys.run('ip', ['-n', ns, 'link', 'add', 'pd0', 'type', 'veth', 'peer', 'name', 'pd1']);
    if (link.code === 0) return { name: 'veth', status: 'ok', detail: 'made a veth pair in a throwaway network namespace' };
    return { name: 'veth', status: 'warn', detail: `cannot make a veth pair: ${firstLine(link.stderr || link.error)}`, fix: VETH_FIX };
  } finally {
    await sys.run('ip', ['netns', 'del', ns]);
  }
}

/** Egress policies are nftables rules; prismd runs `nft`, which needs the kernel's nf_tables. */
export async function checkNftables(ctx: DoctorContext): Promise<Check> {
  const { sys } = ctx;
  const version = await sys.run('nft', ['--version']);
  const fix = 'modprobe nf_tables (a kernel with CONFIG_NF_TABLES); only sandboxes with a network need it (docs/network.md)';
  if (version.code !== 0) {
    return { name: 'nftables', status: 'warn', detail: `nft does not run: ${firstLine(version.error ?? version.stderr)}; sandboxes with a network cannot be made`, fix: 'apt-get install nftables' };
  }
  const found = firstLine(version.stdout);
  if (sys.uid() !== 0) {
    const state = await moduleState(sys, 'nf_tables');
    if (state !== 'absent') return { name: 'nftables', status: 'ok', detail: `${found}; nf_tables module ${state} (not tried: that needs root)` };
    return { name: 'nftables', status: 'warn', detail: `${found}; no nf_tables module found, and only root can ask the kernel`, fix };
  }
  const list = await sys.run('nft', ['list', 'tables']);
  if (list.code === 0) return { name: 'nftables', status: 'ok', detail: `${found}; the kernel's nf_tables answers` };
  return { name: 'nftables', status: 'warn', detail: `${found}, but nft list tables fails: ${firstLine(list.stderr || list.error)}`, fix };
}

export function firstLine(s: string | undefined): string {
  return (s ?? '').trim().split('\n')[0]?.trim().slice(0, 300) || 'no message';
}
