import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * Vitest's order (failed and slow files first, by the cache; by size on a clean clone) with the host VM
 * run at the very front: it takes most of the suite's time in one worker while the other worker runs
 * the rest, so started last (a small file) it would add its whole length to the suite.
 */
export default class HostVmFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const first = (f: TestSpecification) => (f.moduleId.endsWith('/test/integration/host-vm.test.ts') ? 0 : 1);
    return [...sorted].sort((a, b) => first(a) - first(b));
  }
}
