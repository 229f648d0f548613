import { describe, expect, it } from 'vitest';
import type { RuntimeProbeInfo } from '../core/types.js';
import { chooseDefaultRuntime, pickAuto } from './runtime-candidates.js';

const oci: RuntimeProbeInfo = { name: 'oci', usable: true };
const docker: RuntimeProbeInfo = { name: 'docker', usable: true };
const vm = (accelerator: string): RuntimeProbeInfo => ({ name: 'microvm', usable: true, details: { accelerator } });

describe('--runtime=auto', () => {
  it('never picks docker, even when it is the only usable runtime', () => {
    expect(pickAuto([docker])).toBeUndefined();
    expect(pickAuto([docker, oci])).toBe('oci');
  });

  it('prefers a KVM microvm, else oci', () => {
    expect(pickAuto([vm('kvm'), oci, docker])).toBe('microvm');
    expect(pickAuto([vm('tcg (kvm unusable: /dev/kvm: ENOENT)'), oci, docker])).toBe('oci');
    expect(pickAuto([{ ...vm('kvm'), usable: false }, { ...oci, usable: false }])).toBeUndefined();
  });
});

describe('the default runtime', () => {
  it('is the requested one when its probe says usable, else a problem quoting the probe', () => {
    expect(chooseDefaultRuntime('oci', [oci])).toEqual({ runtime: 'oci' });
    expect(chooseDefaultRuntime('oci', [{ name: 'oci', usable: false, reason: 'runc does not run: ENOENT' }]))
      .toEqual({ problem: 'runtime oci is not usable on this host: runc does not run: ENOENT' });
  });

  it('under auto, names every candidate and why it was not taken', () => {
    const r = chooseDefaultRuntime('auto', [{ name: 'oci', usable: false, reason: 'the oci driver must run as root' }, vm('tcg (no /dev/kvm)'), docker]);
    expect(r).toEqual({ problem: expect.stringMatching(/^no usable runtime.*oci: the oci driver must run as root; microvm: usable only without KVM.*--runtime microvm\)$/) });
  });
});
