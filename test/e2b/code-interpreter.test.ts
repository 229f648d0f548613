/**
 * The official @e2b/code-interpreter SDK (2.8.0, a pinned test fixture), unchanged, against a real
 * prismd on oci: the `code-interpreter-v1` template is Prism's code-interpreter image, and runCode runs
 * in a real IPython kernel inside the sandbox.
 */
import { execFileSync } from 'node:child_process';
import { Sandbox } from '@e2b/code-interpreter';
import { NotFoundError } from 'e2b';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, integrationSkipReason, startPrismd, type Prismd } from '../integration/prismd-harness.js';
import { join } from 'node:path';

/** Its own image store: the code-interpreter image is large, and the host VM carries the main store. */
const CI_IMAGES_DIR = process.env.PRISM_TEST_CI_IMAGES_DIR ?? '/var/lib/prism-test/code-interpreter-images';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping code interpreter tests: ${skip}`);

describe.skipIf(!!skip)('the official @e2b/code-interpreter SDK against prismd (oci)', () => {
  let d: Prismd;
  let sbx: Sandbox;

  beforeAll(async () => {
    // Built once per machine (.ci/run does it first; a few minutes), a no-op when present.
    execFileSync(process.execPath, [join(REPO_ROOT, 'bin', 'prismd.js'), 'build-base-image', '--code-interpreter', '--images-dir', CI_IMAGES_DIR], { stdio: 'inherit' });
    d = await startPrismd({ imagesDir: CI_IMAGES_DIR, extraArgs: ['--default-image', 'prism.local/code-interpreter:bookworm'] });
    sbx = await Sandbox.create({ apiKey: d.token, apiUrl: `${d.url}/e2b`, sandboxUrl: `${d.url}/e2b/envd`, requestTimeoutMs: 120_000 });
  }, 900_000);
  afterAll(async () => {
    await sbx?.kill().catch(() => undefined);
    await d?.dispose();
  });

  it('keeps state between runCode calls and returns the last value as text', async () => {
    await sbx.runCode('x = 40');
    const r = await sbx.runCode('x + 2');
    expect(r.text).toBe('42');
    expect(r.error).toBeUndefined();
  }, 180_000);

  it('streams stdout and stderr, and reports errors with name, value and traceback', async () => {
    const out: string[] = [];
    const r = await sbx.runCode('import sys\nprint("to out")\nprint("to err", file=sys.stderr)', { onStdout: (m) => void out.push(m.line) });
    expect(r.logs.stdout.join('')).toBe('to out\n');
    expect(r.logs.stderr.join('')).toBe('to err\n');
    expect(out.join('')).toBe('to out\n');
    const bad = await sbx.runCode('1/0');
    expect(bad.error).toMatchObject({ name: 'ZeroDivisionError', value: 'division by zero' });
    expect(bad.error?.traceback).toContain('ZeroDivisionError');
  });

  it('returns a matplotlib chart as a PNG and a pandas DataFrame as HTML', async () => {
    const chart = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()');
    const png = chart.results.find((x) => x.png)?.png;
    expect(png).toBeDefined();
    expect(Buffer.from(png!, 'base64').subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a');
    const df = await sbx.runCode('import pandas as pd\npd.DataFrame({"a": [1, 2], "b": ["x", "y"]})');
    expect(df.results[0]?.html).toContain('<table');
    expect(df.text).toContain('a  b');
  });

  it('runs in contexts of their own: separate state, listed, restarted, removed', async () => {
    const ctx = await sbx.createCodeContext({ cwd: '/tmp' });
    expect(ctx).toMatchObject({ language: 'python', cwd: '/tmp' });
    await sbx.runCode('y = "in ctx"', { context: ctx });
    expect((await sbx.runCode('y', { context: ctx })).text).toBe("'in ctx'");
    expect((await sbx.runCode('import os; os.getcwd()', { context: ctx })).text).toBe("'/tmp'");
    expect((await sbx.runCode('y')).error?.name).toBe('NameError');
    expect((await sbx.listCodeContexts()).map((c) => c.id)).toContain(ctx.id);
    await sbx.restartCodeContext(ctx);
    expect((await sbx.runCode('y', { context: ctx })).error?.name).toBe('NameError');
    await sbx.removeCodeContext(ctx);
    expect((await sbx.listCodeContexts()).map((c) => c.id)).not.toContain(ctx.id);
    await expect(sbx.runCode('1', { context: ctx })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('applies env_vars for one execution only, and the sandbox is an ordinary one for commands', async () => {
    expect((await sbx.runCode('import os; os.environ.get("ONLY_NOW")', { envs: { ONLY_NOW: 'yes' } })).text).toBe("'yes'");
    expect((await sbx.runCode('import os; os.environ.get("ONLY_NOW")')).text).toBeUndefined();
    expect((await sbx.commands.run('whoami; pwd')).stdout).toBe('user\n/home/user\n');
  });
});
