import { describe, expect, it } from 'vitest';
import { PrismError } from '../core/errors.js';
import type { Volume, VolumeAttachment } from '../core/types.js';
import { checkAttach, detached, validateVolumeMounts } from './volume-rules.js';

const vol = (attachments: VolumeAttachment[], multiAttach = false): Volume => ({ name: 'data', sizeMb: 64, node: 'n1', multiAttach, createdAt: '', attachments });
const att = (sandboxId: string, readOnly: boolean, runtime: VolumeAttachment['runtime'] = 'oci'): VolumeAttachment => ({ sandboxId, mountPath: '/data', readOnly, runtime });

function code(f: () => void): string | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    return (e as PrismError).code;
  }
}

describe('validateVolumeMounts', () => {
  const m = (mountPath: string, name = 'v') => ({ name, mountPath, readOnly: false });
  it('accepts plain absolute paths', () => {
    expect(code(() => validateVolumeMounts([m('/data'), m('/home/sandbox/work', 'w')]))).toBeUndefined();
  });
  it.each(['data', '/', '/proc', '/proc/x', '/sys/fs', '/dev', '/.prism', '/.prism/init', '/a/../b', '/a//b', '/a/', '/a/.'])('refuses %s', (p) => {
    expect(code(() => validateVolumeMounts([m(p)]))).toBe('INVALID_ARGUMENT');
  });
  it('allows names that merely start like a reserved path', () => {
    expect(code(() => validateVolumeMounts([m('/devdata'), m('/process', 'w')]))).toBeUndefined();
  });
  it('refuses duplicates, nesting and too many', () => {
    expect(code(() => validateVolumeMounts([m('/a'), m('/b')]))).toBe('INVALID_ARGUMENT'); // same volume twice
    expect(code(() => validateVolumeMounts([m('/a', 'x'), m('/a', 'y')]))).toBe('INVALID_ARGUMENT');
    expect(code(() => validateVolumeMounts([m('/a', 'x'), m('/a/b', 'y')]))).toBe('INVALID_ARGUMENT');
    expect(code(() => validateVolumeMounts(['a', 'b', 'c', 'd', 'e'].map((n) => m(`/${n}`, n))))).toBe('INVALID_ARGUMENT');
  });
});

describe('checkAttach', () => {
  it('one writer at a time unless multiAttach', () => {
    expect(code(() => checkAttach(vol([]), att('a', false)))).toBeUndefined();
    expect(code(() => checkAttach(vol([att('a', false)]), att('b', false)))).toBe('CONFLICT');
    expect(code(() => checkAttach(vol([att('a', false)], true), att('b', false)))).toBeUndefined();
  });
  it('readers join a writer on the host kernel', () => {
    expect(code(() => checkAttach(vol([att('a', false)]), att('b', true)))).toBeUndefined();
    expect(code(() => checkAttach(vol([att('a', false, 'docker')]), att('b', true, 'oci')))).toBeUndefined();
  });
  it('a microVM shares a volume only read-only with other microVMs', () => {
    expect(code(() => checkAttach(vol([], true), att('b', false, 'microvm')))).toBeUndefined();
    expect(code(() => checkAttach(vol([att('a', true, 'microvm')]), att('b', true, 'microvm')))).toBeUndefined();
    expect(code(() => checkAttach(vol([att('a', true, 'microvm')]), att('b', true, 'oci')))).toBe('CONFLICT');
    expect(code(() => checkAttach(vol([att('a', true)]), att('b', true, 'microvm')))).toBe('CONFLICT');
    expect(code(() => checkAttach(vol([att('a', false)], true), att('b', true, 'microvm')))).toBe('CONFLICT');
    expect(code(() => checkAttach(vol([att('a', true)], true), att('b', false, 'microvm')))).toBe('CONFLICT');
    expect(code(() => checkAttach(vol([att('a', false, 'microvm')], true), att('b', false, 'microvm')))).toBe('CONFLICT');
    expect(code(() => checkAttach(vol([att('a', true, 'microvm')], true), att('b', false, 'microvm')))).toBe('CONFLICT');
  });
  it('re-attaching the same sandbox replaces its own attachment; detached drops it', () => {
    expect(code(() => checkAttach(vol([att('a', false)]), att('a', false)))).toBeUndefined();
    expect(detached(vol([att('a', false), att('b', true)]), 'a').attachments.map((a) => a.sandboxId)).toEqual(['b']);
  });
});
