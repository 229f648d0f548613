import { describe, expect, it } from 'vitest';
import type { RuntimeName } from '../core/types.js';
import type { RuntimeDriver } from '../runtime/driver.js';
import { pickAuto } from './daemon.js';

const drivers = (...names: RuntimeName[]) => new Map(names.map((n) => [n, {} as RuntimeDriver]));

describe('--runtime=auto', () => {
  it('never picks docker, even when it is the only usable runtime', () => {
    expect(pickAuto(drivers('docker'), [{ name: 'docker', usable: true }])).toBeUndefined();
    expect(pickAuto(drivers('docker', 'oci'), [{ name: 'docker', usable: true }, { name: 'oci', usable: true }])).toBe('oci');
  });

  it('prefers a KVM microvm, else oci', () => {
    const info = [{ name: 'microvm' as const, usable: true, details: { accelerator: 'kvm' } }];
    expect(pickAuto(drivers('microvm', 'oci', 'docker'), info)).toBe('microvm');
    expect(pickAuto(drivers('microvm', 'oci', 'docker'), [{ name: 'microvm', usable: true, details: { accelerator: 'tcg' } }])).toBe('oci');
  });
});
