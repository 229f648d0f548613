import { execFile } from 'node:child_process';
import { PrismError } from '../../core/errors.js';

/** The tap QEMU opens, made in the sandbox's namespace beside the NetworkManager's `eth0`. */
export const VM_TAP = 'tap0';
const NS_LINK = 'eth0';

/** What the guest's NIC takes over from the namespace's `eth0` (the agent's `N` frame, QEMU's `mac=`). */
export interface GuestNic {
  mac: string;
  /** `a.b.c.d/prefix` */
  address: string;
  gateway: string;
  mtu: number;
}

/**
 * Wires a tap into the sandbox's network namespace (made by the NetworkManager: `eth0` with the
 * sandbox's address and default route) so that the VM's NIC stands in for `eth0`: tc `mirred`
 * redirects every frame arriving on `eth0` out of the tap and every frame from the tap out of `eth0`
 * (the "tc-redirect-tap" of the Firecracker/Kata CNI plugins). The namespace's own stack never sees
 * a packet; the host side (veth host end, nft rules, DNS filter) is exactly as for a container. The
 * guest gets `eth0`'s MAC (so the host's neighbour entry is right), address, gateway and MTU.
 *
 * Idempotent (a stopped VM's next boot): an existing tap and its qdiscs are replaced. Nothing needs
 * undoing: the tap and the qdiscs go with the namespace, which the NetworkManager deletes.
 */
export async function prepareTap(netnsPath: string): Promise<GuestNic> {
  const nic = await readNic(netnsPath);
  await inNetns(netnsPath, 'ip', ['-b', '-'], [
    ...(await tapExists(netnsPath) ? [`link delete ${VM_TAP}`] : []),
    `tuntap add dev ${VM_TAP} mode tap`,
    `link set ${VM_TAP} mtu ${nic.mtu} up`,
  ].join('\n') + '\n');
  const qdiscs = JSON.parse(await inNetns(netnsPath, 'tc', ['-j', 'qdisc', 'show', 'dev', NS_LINK])) as Array<{ kind?: string }>;
  await inNetns(netnsPath, 'tc', ['-b', '-'], [
    ...(qdiscs.some((q) => q.kind === 'ingress') ? [`qdisc del dev ${NS_LINK} ingress`] : []),
    `qdisc add dev ${NS_LINK} ingress`,
    `filter add dev ${NS_LINK} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev ${VM_TAP}`,
    `qdisc add dev ${VM_TAP} ingress`,
    `filter add dev ${VM_TAP} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev ${NS_LINK}`,
  ].join('\n') + '\n');
  return nic;
}

/** `eth0`'s MAC, address, MTU and default gateway, as the NetworkManager set them. */
async function readNic(netnsPath: string): Promise<GuestNic> {
  // Not `-4`: it leaves out the link's MAC.
  const links = JSON.parse(await inNetns(netnsPath, 'ip', ['-j', 'addr', 'show', 'dev', NS_LINK])) as Array<{
    address?: string; mtu?: number; addr_info?: Array<{ family?: string; local?: string; prefixlen?: number }>;
  }>;
  const routes = JSON.parse(await inNetns(netnsPath, 'ip', ['-j', '-4', 'route', 'show', 'default'])) as Array<{ gateway?: string }>;
  const link = links[0];
  const addr = link?.addr_info?.find((a) => a.family === 'inet');
  const gateway = routes[0]?.gateway;
  if (!link?.address || !addr?.local || addr.prefixlen === undefined || !gateway) {
    throw new PrismError('INTERNAL', `the sandbox namespace ${netnsPath} has no configured ${NS_LINK} with a default route`);
  }
  return { mac: link.address, address: `${addr.local}/${addr.prefixlen}`, gateway, mtu: link.mtu ?? 1500 };
}

async function tapExists(netnsPath: string): Promise<boolean> {
  const out = JSON.parse(await inNetns(netnsPath, 'ip', ['-j', 'link', 'show'])) as Array<{ ifname?: string }>;
  return out.some((l) => l.ifname === VM_TAP);
}

/** The argv prefix that runs a command in the namespace at `netnsPath` (nsenter execs it: same pid). */
export function netnsExec(netnsPath: string): string[] {
  if (!/^\/[A-Za-z0-9_./-]+$/.test(netnsPath)) throw new PrismError('INVALID_ARGUMENT', `invalid network namespace path ${JSON.stringify(netnsPath)}`);
  return ['nsenter', `--net=${netnsPath}`, '--'];
}

function inNetns(netnsPath: string, cmd: string, args: string[], input?: string): Promise<string> {
  const [bin, ...pre] = netnsExec(netnsPath);
  return new Promise((resolve, reject) => {
    const child = execFile(bin!, [...pre, cmd, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return reject(new PrismError('FAILED_PRECONDITION', 'nsenter is not installed (util-linux)', { cause: err }));
      }
      reject(new PrismError('INTERNAL', `${cmd} ${args.join(' ')} in ${netnsPath}: ${stderr.trim().split('\n').slice(0, 4).join(' | ') || err.message}`, { cause: err }));
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}
