import { describe, expect, it } from 'vitest';
import { PrismError } from '../core/errors.js';
import { envWithHome, parseTaskUser, userSpec } from './task-user.js';

const passwd = 'root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234:app:/home/app:/bin/sh\n';
const group = 'root:x:0:\napp:x:1234:\nextra:x:2000:app,other\nstaff:x:50:\n';

const codeOf = (f: () => unknown) => {
  try {
    f();
    return 'resolved';
  } catch (e) {
    return e instanceof PrismError ? e.code : String(e);
  }
};

describe('parseTaskUser', () => {
  it('resolves a name to its ids, primary group, supplementary groups and home', () => {
    const u = parseTaskUser('app', passwd, group);
    expect(u).toEqual({ uid: 1234, gid: 1234, groups: [1234, 2000], home: '/home/app' });
    expect(userSpec(u)).toBe('1234 1234 1234,2000');
  });

  it('takes a group by name or id, and numeric users the image does not list', () => {
    expect(parseTaskUser('app:staff', passwd, group)).toMatchObject({ uid: 1234, gid: 50 });
    expect(parseTaskUser('app:7', passwd, group)).toMatchObject({ gid: 7 });
    expect(parseTaskUser('4321', passwd, group)).toEqual({ uid: 4321, gid: 0, groups: [0], home: '/' });
    expect(parseTaskUser('4321:4321', '', '')).toEqual({ uid: 4321, gid: 4321, groups: [4321], home: '/' });
  });

  it('refuses names the image does not have (INVALID_ARGUMENT)', () => {
    expect(codeOf(() => parseTaskUser('ghost', passwd, group))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => parseTaskUser('app:ghosts', passwd, group))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => parseTaskUser('app', '', ''))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => parseTaskUser(':1', passwd, group))).toBe('INVALID_ARGUMENT');
  });
});

describe('envWithHome', () => {
  it('gives a non-root user its home as HOME unless the command sets one; root keeps the env as it is', () => {
    expect(envWithHome({ A: '1' }, true, '/home/u')).toEqual({ A: '1', HOME: '/home/u' });
    expect(envWithHome({ HOME: '/tmp' }, true, '/home/u')).toEqual({ HOME: '/tmp' });
    expect(envWithHome({ A: '1' }, false, '/root')).toEqual({ A: '1' });
  });
});
