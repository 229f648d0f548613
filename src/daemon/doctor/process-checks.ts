import { join } from 'node:path';
import { severity, type Check, type DoctorContext } from './check.js';

/** The oci and microvm runtimes make namespaces, cgroups, mounts and devices: they need root. */
export async function checkRoot(ctx: DoctorContext): Promise<Check> {
  const uid = ctx.sys.uid();
  if (uid === 0) return { name: 'root', status: 'ok', detail: 'running as root' };
  return {
    name: 'root',
    status: severity(ctx.cfg, ['oci', 'microvm']),
    detail: `running as uid ${uid}: the oci and microvm runtimes, sandbox networks and volumes need root`,
    fix: 'run prismd (and prismd doctor) as root, e.g. sudo prismd doctor',
  };
}

/** Node.js at least package.json's `engines.node` (a `>=X.Y[.Z]` range). */
export async function checkNode(ctx: DoctorContext): Promise<Check> {
  const pkg = await ctx.sys.readFile(join(ctx.packageRoot, 'package.json'));
  const range = pkg === undefined ? undefined : (JSON.parse(pkg) as { engines?: { node?: string } }).engines?.node;
  const min = /^>=\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(range?.trim() ?? '');
  const have = ctx.sys.nodeVersion;
  if (!min) return { name: 'node', status: 'warn', detail: `Node.js ${have}; cannot read the required version from package.json (${range ?? 'no engines.node'})`, fix: 'reinstall Prism' };
  const want = [1, 2, 3].map((i) => Number(min[i] ?? 0));
  const got = have.split('.').map(Number);
  const cmp = want.map((w, i) => (got[i] ?? 0) - w).find((d) => d !== 0) ?? 0;
  if (cmp >= 0) return { name: 'node', status: 'ok', detail: `Node.js ${have} (Prism needs ${range})` };
  return {
    name: 'node',
    status: 'fail',
    detail: `Node.js ${have} is older than Prism needs (${range})`,
    fix: `install Node.js ${want.slice(0, min[3] ? 3 : 2).join('.')} or later (README.md "Requirements" says how on Debian 12)`,
  };
}
