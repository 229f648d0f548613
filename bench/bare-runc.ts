/**
 * The baseline of the oci benches: bare runc on the same image layers, config and host cgroups as the
 * oci driver uses, without Prism (no API, store, disk image or exec agent). One overlay rootfs serves
 * every container of a run.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBinaryPath } from '../src/daemon/package-info.js';
import { mountOverlay, unmountAll } from '../src/runtime/oci/overlay-mount.js';
import { buildProcess, buildRuntimeSpec } from '../src/runtime/oci/runtime-spec.js';
import { taskCgroups } from '../src/runtime/cgroups/select-cgroups.js';

/** Runs a command; resolves on exit 0, or at its first output byte with `untilOutput`. */
export function run(cmd: string, args: string[], untilOutput = false): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr.on('data', (b) => (err += b));
    if (untilOutput) p.stdout.once('data', () => resolve());
    else p.stdout.resume();
    p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')}: ${code} ${err}`))));
  });
}

export class BareRunc {
  private readonly cg = taskCgroups('prism');
  private constructor(private readonly dir: string, private readonly layers: string[], private readonly env: Record<string, string>) {}

  static async setup(layers: string[], env: Record<string, string>): Promise<BareRunc> {
    const dir = await mkdtemp(join(tmpdir(), 'prism-bench-'));
    await Promise.all(['upper', 'work', 'rootfs', 'bundle'].map((d) => mkdir(join(dir, d))));
    await mountOverlay(layers, join(dir, 'upper'), join(dir, 'work'), join(dir, 'rootfs'));
    return new BareRunc(dir, layers, env);
  }

  get bundle(): string {
    return join(this.dir, 'bundle');
  }

  /** A bundle of its own for container `id` (its own cgroup path), running `process`; returns its path. */
  async bundleFor(id: string, process: string[]): Promise<string> {
    const b = join(this.dir, `bundle-${id}`);
    await mkdir(b, { recursive: true });
    await this.configure(process, id, b);
    return b;
  }

  /** Writes a bundle's config.json: the driver's spec for container `id`'s cgroup, running `process`. */
  async configure(process: string[], id = 'bench', bundle = this.bundle): Promise<void> {
    const s = buildRuntimeSpec({
      spec: { id, hostname: 'bench', layers: this.layers, env: this.env, workdir: '/', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
      rootfs: join(this.dir, 'rootfs'),
      initBinary: initBinaryPath(),
      // The host's cgroups as the driver uses them (v1 dirs or v2 systemd scopes), so the baseline pays the same.
      cgroups: { path: this.cg.runcPath(id), swapAccounting: this.cg.swapAccounting(), namespace: this.cg.version === 2 },
    });
    s.process = buildProcess(process, this.env, '/', 4096);
    await writeFile(join(bundle, 'config.json'), JSON.stringify(s));
  }

  /** runc's arguments for this run's state root and the host's cgroup flags. */
  args(...a: string[]): string[] {
    return ['--root', join(this.dir, 'runc'), ...this.cg.runcFlags(), ...a];
  }

  async dispose(): Promise<void> {
    await unmountAll(this.dir).catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}
