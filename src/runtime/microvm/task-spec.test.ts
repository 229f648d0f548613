import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { imageHome } from './task-spec.js';

describe('imageHome', () => {
  const root = mkdtempSync(join(tmpdir(), 'prism-home-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const layer = (name: string, passwd?: string) => {
    const dir = join(root, name);
    mkdirSync(join(dir, 'etc'), { recursive: true });
    if (passwd !== undefined) writeFileSync(join(dir, 'etc', 'passwd'), passwd);
    return dir;
  };
  const base = layer('base', 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n');
  const user = layer('user', 'root:x:0:0:root:/root:/bin/bash\nsandbox:x:1000:1000:Prism:/home/sandbox:/bin/bash\n');
  const noPasswd = layer('empty');

  it("reads the user's home from the top-most layer that has /etc/passwd", async () => {
    expect(await imageHome([base, user, noPasswd], '1000:1000')).toBe('/home/sandbox');
    expect(await imageHome([base, user], '1000')).toBe('/home/sandbox');
    expect(await imageHome([user, base], '1000')).toBe('/'); // the top layer's passwd wins and lacks uid 1000
    expect(await imageHome([base], undefined)).toBe('/root');
    expect(await imageHome([base], '4242')).toBe('/');
    expect(await imageHome([base], 'sandbox')).toBe('/'); // names are not resolved on microvm
  });

  it('follows no symlink out of the layer', async () => {
    const linkedFile = join(root, 'linked-file');
    mkdirSync(join(linkedFile, 'etc'), { recursive: true });
    symlinkSync(join(user, 'etc', 'passwd'), join(linkedFile, 'etc', 'passwd'));
    expect(await imageHome([linkedFile], '1000')).toBe('/');
    const linkedDir = join(root, 'linked-dir');
    mkdirSync(linkedDir);
    symlinkSync(join(user, 'etc'), join(linkedDir, 'etc'));
    expect(await imageHome([linkedDir], '1000')).toBe('/');
  });
});
