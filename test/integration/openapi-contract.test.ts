import AjvModule from 'ajv';
import addFormatsModule from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, integrationSkipReason, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();

interface OpenApiDoc {
  openapi: string;
  paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: object }> }> }>>;
}

describe.skipIf(!!skip)('responses match the served OpenAPI document', () => {
  let d: Prismd;
  let doc: OpenApiDoc;
  // ajv and ajv-formats are CommonJS with a default export; under NodeNext it sits on .default.
  const Ajv = (AjvModule as unknown as { default: typeof AjvModule }).default ?? AjvModule;
  const addFormats = (addFormatsModule as unknown as { default: typeof addFormatsModule }).default ?? addFormatsModule;
  const ajv = new (Ajv as unknown as new (o: object) => import('ajv').default)({ strict: false, allErrors: true });
  (addFormats as unknown as (a: unknown) => void)(ajv);

  /** Validates a live response against the document's schema for that route and status. */
  function check(method: string, route: string, status: number, body: unknown): void {
    const op = doc.paths[route]?.[method.toLowerCase()];
    expect(op, `${method} ${route} is documented`).toBeDefined();
    const resp = op!.responses[String(status)];
    expect(resp, `${method} ${route} documents status ${status}`).toBeDefined();
    const schema = resp!.content?.['application/json']?.schema;
    if (!schema) {
      expect(body ?? '').toBe('');
      return;
    }
    const validate = ajv.compile(schema);
    expect(validate(body), `${method} ${route} ${status}: ${ajv.errorsText(validate.errors)}`).toBe(true);
  }

  beforeAll(async () => {
    d = await startPrismd();
    doc = (await call(d.url, 'GET', '/openapi.json')).body;
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('serves an OpenAPI 3 document listing every route', () => {
    expect(doc.openapi).toMatch(/^3\./);
    for (const p of ['/api/v1/health', '/api/v1/cluster/info', '/api/v1/nodes', '/api/v1/nodes/{id}', '/api/v1/sandboxes', '/api/v1/sandboxes/{id}',
      '/api/v1/sandboxes/{id}/exec', '/api/v1/sandboxes/{id}/logs', '/api/v1/sandboxes/{id}/stop', '/api/v1/sandboxes/{id}/start']) {
      expect(Object.keys(doc.paths)).toContain(p);
    }
  });

  it('every answer of a whole sandbox lifecycle validates', async () => {
    const steps: [string, string, string, unknown?][] = [
      ['GET', '/api/v1/health', '/health'],
      ['GET', '/api/v1/cluster/info', '/cluster/info'],
      ['GET', '/api/v1/nodes', '/nodes'],
      ['POST', '/api/v1/sandboxes', '/sandboxes', { name: 'contract', env: { A: '1' } }],
    ];
    for (const [m, route, path, body] of steps) {
      const r = await call(d.url, m, path, body);
      check(m, route, r.status, r.body);
    }
    const nodes = (await call(d.url, 'GET', '/nodes')).body.nodes;
    const n = await call(d.url, 'GET', `/nodes/${nodes[0].id}`);
    check('GET', '/api/v1/nodes/{id}', n.status, n.body);
    const more: [string, string, string, unknown?][] = [
      ['GET', '/api/v1/sandboxes', '/sandboxes'],
      ['GET', '/api/v1/sandboxes/{id}', '/sandboxes/contract'],
      ['POST', '/api/v1/sandboxes/{id}/exec', '/sandboxes/contract/exec', { command: 'echo hi; printf "\\377" >&2; exit 2' }],
      ['GET', '/api/v1/sandboxes/{id}/logs', '/sandboxes/contract/logs'],
      ['POST', '/api/v1/sandboxes/{id}/stop', '/sandboxes/contract/stop'],
      ['POST', '/api/v1/sandboxes/{id}/exec', '/sandboxes/contract/exec', { command: 'true' }],
      ['POST', '/api/v1/sandboxes/{id}/start', '/sandboxes/contract/start'],
      ['POST', '/api/v1/sandboxes/{id}/files/mkdir', '/sandboxes/contract/files/mkdir', { path: '/home/sandbox/c/d', parents: true }],
      ['PUT', '/api/v1/sandboxes/{id}/files', '/sandboxes/contract/files?path=/home/sandbox/c/d/f', 'bytes'],
      ['GET', '/api/v1/sandboxes/{id}/files/list', '/sandboxes/contract/files/list?path=/home/sandbox/c/d'],
      ['GET', '/api/v1/sandboxes/{id}/files/stat', '/sandboxes/contract/files/stat?path=/home/sandbox/c'],
      ['POST', '/api/v1/sandboxes/{id}/files/move', '/sandboxes/contract/files/move', { from: '/home/sandbox/c/d/f', to: '/home/sandbox/c/g' }],
      ['GET', '/api/v1/sandboxes/{id}/files/stat', '/sandboxes/contract/files/stat?path=/home/sandbox/c/d/f'],
      ['DELETE', '/api/v1/sandboxes/{id}/files', '/sandboxes/contract/files?path=/home/sandbox/c&recursive=true'],
      ['POST', '/api/v1/sandboxes', '/sandboxes', { name: 'contract' }],
      ['POST', '/api/v1/sandboxes', '/sandboxes', { bogus: true }],
      ['GET', '/api/v1/sandboxes/{id}', '/sandboxes/nope'],
      ['DELETE', '/api/v1/sandboxes/{id}', '/sandboxes/contract'],
    ];
    const statuses: number[] = [];
    for (const [m, route, path, body] of more) {
      const r = await call(d.url, m, path, body);
      statuses.push(r.status);
      check(m, route, r.status, r.body);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 412, 200, 204, 200, 200, 200, 204, 404, 204, 409, 400, 404, 204]);
  });

  it('every answer of a background process validates', async () => {
    await call(d.url, 'POST', '/sandboxes', { name: 'contract-procs' });
    const base = '/sandboxes/contract-procs';
    const started = await call(d.url, 'POST', `${base}/exec`, { cmd: ['cat'], background: true });
    check('POST', '/api/v1/sandboxes/{id}/exec', started.status, started.body);
    const pid = started.body.id;
    const P = '/api/v1/sandboxes/{id}/processes/{pid}';
    const steps: [string, string, string, unknown?][] = [
      ['GET', '/api/v1/sandboxes/{id}/processes', `${base}/processes`],
      ['GET', P, `${base}/processes/${pid}`],
      ['POST', `${P}/stdin`, `${base}/processes/${pid}/stdin`, { data: '\u00ff', close: false }],
      ['POST', `${P}/wait`, `${base}/processes/${pid}/wait?timeoutSec=0.1`],
      ['GET', `${P}/output`, `${base}/processes/${pid}/output?stdoutOffset=0&stderrOffset=0`],
      ['POST', `${P}/signal`, `${base}/processes/${pid}/signal`, { signal: 'SIGTERM' }],
      ['POST', `${P}/wait`, `${base}/processes/${pid}/wait?timeoutSec=10`],
      ['POST', `${P}/signal`, `${base}/processes/${pid}/signal`, { signal: 'SIGTERM' }],
      ['GET', `${P}/output`, `${base}/processes/${pid}/output?stdoutOffset=x`],
      ['DELETE', P, `${base}/processes/${pid}`],
      ['GET', P, `${base}/processes/${pid}`],
    ];
    const statuses: number[] = [];
    for (const [m, route, path, body] of steps) {
      const r = await call(d.url, m, path, body);
      statuses.push(r.status);
      check(m, route, r.status, r.body);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 200, 412, 400, 204, 404]);
    await call(d.url, 'DELETE', base);
  });

  it('every answer of a volume lifecycle validates', async () => {
    const V = '/api/v1/volumes/{name}';
    const steps: [string, string, string, unknown?][] = [
      ['POST', '/api/v1/volumes', '/volumes', { name: 'contract-vol', sizeMb: 16 }],
      ['POST', '/api/v1/volumes', '/volumes', { name: 'contract-vol', sizeMb: 16 }],
      ['POST', '/api/v1/volumes', '/volumes', { name: 'contract-vol', sizeMb: 1 }],
      ['POST', '/api/v1/sandboxes', '/sandboxes', { name: 'contract-vol-sb', volumes: [{ name: 'contract-vol', mountPath: '/data' }] }],
      ['GET', '/api/v1/volumes', '/volumes'],
      ['GET', V, '/volumes/contract-vol'],
      ['DELETE', V, '/volumes/contract-vol'],
      ['DELETE', '/api/v1/sandboxes/{id}', '/sandboxes/contract-vol-sb'],
      ['DELETE', V, '/volumes/contract-vol'],
      ['GET', V, '/volumes/contract-vol'],
    ];
    const statuses: number[] = [];
    for (const [m, route, path, body] of steps) {
      const r = await call(d.url, m, path, body);
      statuses.push(r.status);
      check(m, route, r.status, r.body);
    }
    expect(statuses).toEqual([201, 409, 400, 201, 200, 200, 409, 204, 204, 404]);
  });
});
