import type { TSchema } from '@sinclair/typebox';
import { ErrorBody } from '../core/wire.js';

/** The routes' schemas are the wire contract in src/core/wire.ts; this adds what only routes need. */
export * from '../core/wire.js';

/** Standard error responses for a route, so the OpenAPI document lists them. */
export function withErrors(ok: Record<number, TSchema>, ...codes: number[]): Record<number, TSchema> {
  const out: Record<number, TSchema> = { ...ok };
  for (const c of [400, 500, ...codes]) out[c] = ErrorBody;
  return out;
}
