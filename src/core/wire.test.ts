import type { Static } from '@sinclair/typebox';
import { describe, expectTypeOf, it } from 'vitest';
import type { CreateSandboxOptions } from '../sdk/client.js';
import type { CreateSandboxRequest } from '../service/sandbox-service.js';
import type { ExecRecord, Sandbox } from './types.js';
import type { CreateSandboxBody, ExecRecordSchema, SandboxSchema } from './wire.js';

// One contract: the domain records serialise into the wire schemas, and the SDK and the service take
// the create body from the schema. A field added to one side and not the other fails to compile here.
describe('the wire contract', () => {
  it('a stored sandbox is what the API serialises', () => {
    expectTypeOf<Sandbox>().toExtend<Static<typeof SandboxSchema>>();
  });
  it('an exec record is what logs serialises', () => {
    expectTypeOf<ExecRecord>().toExtend<Static<typeof ExecRecordSchema>>();
  });
  it('the SDK and the service take the create body from the schema', () => {
    expectTypeOf<CreateSandboxOptions>().toEqualTypeOf<Static<typeof CreateSandboxBody>>();
    expectTypeOf<CreateSandboxRequest>().toEqualTypeOf<Static<typeof CreateSandboxBody>>();
  });
});
