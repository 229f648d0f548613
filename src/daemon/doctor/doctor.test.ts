import { describe, expect, it } from 'vitest';
import type { Check, DoctorCheck } from './check.js';
import { DOCTOR_CHECKS, doctorExitCode, formatChecks, formatChecksJson, runChecks } from './doctor.js';
import { fakeContext } from './fake-host.test-support.js';

const ok: Check = { name: 'root', status: 'ok', detail: 'running as root', fix: 'never shown for ok' };
const warn: Check = { name: 'kvm', status: 'warn', detail: 'kvm unusable: /dev/kvm: ENOENT', fix: 'modprobe kvm_intel' };
const fail: Check = { name: 'default runtime', status: 'fail', detail: 'runtime docker is not usable on this host:\nno engine', fix: 'start dockerd' };

describe('prismd doctor', () => {
  it('exits 1 only when a check fails: warnings alone exit 0', () => {
    expect(doctorExitCode([ok, warn])).toBe(0);
    expect(doctorExitCode([ok, warn, fail])).toBe(1);
  });

  it('prints one line per check: status, name, what was found, and the fix of a warn or fail', () => {
    expect(formatChecks([ok, warn, fail])).toBe(
      'ok    root             running as root\n'
      + 'warn  kvm              kvm unusable: /dev/kvm: ENOENT | fix: modprobe kvm_intel\n'
      + 'fail  default runtime  runtime docker is not usable on this host: no engine | fix: start dockerd\n',
    );
  });

  it('prints the checks as JSON with --json', () => {
    expect(JSON.parse(formatChecksJson([ok, fail]))).toEqual({ exitCode: 1, checks: [ok, fail] });
  });

  it('runs the checks in order, and reports a check that throws as a warning rather than a host failure', async () => {
    const broken: DoctorCheck = async function checkBroken() {
      throw new Error('bug');
    };
    const out = await runChecks(fakeContext(), [async () => ok, broken, async () => warn]);
    expect(out.map((c) => c.name)).toEqual(['root', 'checkBroken', 'kvm']);
    expect(out[1]).toMatchObject({ status: 'warn', detail: 'the check itself failed: bug' });
  });

  it('has a check for each thing the brief lists, each returning a named line on a bare host', async () => {
    const out = await runChecks(fakeContext({ flags: { guestDir: '/nonexistent' } }), DOCTOR_CHECKS);
    expect(out.map((c) => c.name)).toEqual([
      'root', 'node', 'cgroups', 'cgroup driver', 'runc', 'overlayfs', 'loop devices', 'veth', 'nftables',
      'vmm', 'guest files', 'kvm', 'data dir', 'disk space', 'api port',
      'runtime oci', 'runtime microvm', 'runtime docker', 'default runtime',
    ]);
    expect(out.filter((c) => c.status !== 'ok' && !c.fix)).toEqual([]);
  });
});
