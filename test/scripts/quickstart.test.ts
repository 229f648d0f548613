import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const SCRIPTS = ['quickstart.sh', 'setup.sh', 'requirements.sh'].map((s) => join(ROOT, 'scripts', s));

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'prism-quickstart-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** prism_require_node with PATH holding only `dir`, where tests put a fake node (and npm). */
function requireNode(): { status: number | null; stderr: string } {
  const r = spawnSync('/bin/bash', ['-c', `source ${join(ROOT, 'scripts', 'requirements.sh')}; prism_require_node`], {
    env: { PATH: dir, HOME: dir },
    encoding: 'utf8',
    // Not a socket: bash reads ~/.bashrc when its stdin is one (it takes itself for a remote shell).
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return { status: r.status, stderr: r.stderr };
}

function fake(name: string, output: string): void {
  writeFileSync(join(dir, name), `#!/bin/sh\necho '${output}'\n`);
  chmodSync(join(dir, name), 0o755);
}

describe('the quick start scripts', () => {
  it('parse (bash -n)', () => {
    for (const s of SCRIPTS) {
      const r = spawnSync('bash', ['-n', s], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      expect(r.stderr, s).toBe('');
      expect(r.status, s).toBe(0);
    }
  });

  it('refuse Node.js 18 (Debian 12\'s own) and say how to get 20', () => {
    fake('node', 'v18.19.0');
    fake('npm', '9.2.0');
    const r = requireNode();
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`Prism needs Node.js >= 20.19; ${join(dir, 'node')} is v18.19.0.`);
    expect(r.stderr).toContain('https://deb.nodesource.com/node_20.x nodistro main');
    expect(r.stderr).toContain('README.md, "Requirements"');
  });

  it('refuse a missing node, a 20 older than 20.19, and a node without npm; take 20.19 and later', () => {
    expect(requireNode()).toMatchObject({ status: 1, stderr: expect.stringContaining('there is no node on PATH') });
    fake('node', 'v20.18.3');
    expect(requireNode()).toMatchObject({ status: 1, stderr: expect.stringContaining('is v20.18.3') });
    fake('node', 'v20.19.0');
    expect(requireNode()).toMatchObject({ status: 1, stderr: expect.stringContaining('Prism needs npm') });
    fake('npm', '10.8.2');
    expect(requireNode()).toEqual({ status: 0, stderr: '' });
    fake('node', 'v22.1.0');
    expect(requireNode()).toEqual({ status: 0, stderr: '' });
  });

  const built = existsSync(join(ROOT, 'dist', 'src', 'daemon', 'prismd.js')) && existsSync(join(ROOT, 'dist', 'src', 'cli', 'prismctl.js'));
  if (!built) console.warn('skipping the bin symlink test: not built (npm run build)');
  it.skipIf(!built)('run prismd and prismctl through symlinks elsewhere, as the quick start puts them in /usr/local/bin', () => {
    const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    mkdirSync(join(dir, 'bin'));
    for (const b of ['prismd', 'prismctl']) {
      symlinkSync(join(ROOT, 'bin', `${b}.js`), join(dir, 'bin', b));
      const r = spawnSync(join(dir, 'bin', b), ['--version'], { encoding: 'utf8', env: { ...process.env, PATH: `${resolve(process.execPath, '..')}:/usr/bin:/bin` } });
      expect(r.stderr, b).toBe('');
      expect(r.stdout.trim(), b).toBe(version);
    }
  });
});
