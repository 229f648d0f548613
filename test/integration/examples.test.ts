import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

/**
 * Every program in examples/ runs against a real prismd, exactly as a user would run it (the compiled
 * file, importing the package by name, connecting from the environment), and must print what it
 * promises. An example without an entry here fails the suite, so none can rot unseen.
 */
const expected: Record<string, RegExp[]> = {
  'files-and-volumes.ts': [/^archive of \/cache\/results: \d+ bytes$/m, /^sum from the first sandbox: 10$/m, /^results: squares\.txt, sum\.txt$/m, /^write to the read-only mount: exit [12]$/m, /^reading a missing file: NOT_FOUND$/m],
  'agent-loop.ts': [/^attempt 1: failed\nattempt 2: ok\nresult: median: 3\.5$/m, /^final program has 3 lines$/m, /^work dir: main\.py \(file, \d+ bytes\)$/m],
  'terminal.ts': [/^size 30x100, then 40x120$/m, /^Ctrl-C interrupted sleep/m, /^shell exited with 7$/m],
  'hello.ts': [/^sandbox \S+ says 42$/m],
  'background.ts': [/^started ex-[0-9a-f]{12}: running$/m, /^echo: hello\necho: world\nbye\nexit 0$/m, /^sleeper ended by SIGTERM$/m, /^streamed\nforeground exit 3$/m],
  'streaming.ts': [/out: tick 0\nout: tick 1\nout: tick 2\nerr: done/, /^exit 0$/m, /^timed out: true \(TIMEOUT\)$/m, /^lookup failed with NOT_FOUND$/m],
};

const skip = integrationSkipReason();

function runExample(file: string, env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(REPO_ROOT, 'dist', 'examples', file.replace(/\.ts$/, '.js'))], {
      cwd: REPO_ROOT,
      env: { ...process.env, PRISM_CONFIG: '/nonexistent/config.json', ...env },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

describe.skipIf(!!skip)('examples/', () => {
  let d: Prismd;
  beforeAll(async () => {
    d = await startPrismd();
  });
  afterAll(async () => {
    await d?.dispose();
  });

  const files = readdirSync(join(REPO_ROOT, 'examples')).filter((f) => f.endsWith('.ts'));

  it('has an expectation for every example', () => {
    expect(files.sort()).toEqual(Object.keys(expected).sort());
  });

  for (const file of files) {
    it(`${file} runs and prints what it promises`, async () => {
      const r = await runExample(file, { PRISM_API: d.api, PRISM_TOKEN: d.token });
      expect(r.code, `${r.out}\n${r.err}`).toBe(0);
      for (const re of expected[file] ?? []) expect(r.out).toMatch(re);
      // Each example cleans up after itself.
      const left = await (await fetch(`${d.url}/api/v1/sandboxes`, { headers: { authorization: `Bearer ${d.token}` } })).json() as { sandboxes: unknown[] };
      expect(left.sandboxes).toEqual([]);
      const vols = await (await fetch(`${d.url}/api/v1/volumes`, { headers: { authorization: `Bearer ${d.token}` } })).json() as { volumes: unknown[] };
      expect(vols.volumes).toEqual([]);
    });
  }
});
