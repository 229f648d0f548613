import { PrismError } from '../core/errors.js';

/**
 * Image references, after the Docker distribution grammar: `[domain[:port]/]path[:tag]` or
 * `...name@sha256:<64 hex>`. Normalised form: lower-case name; a missing tag is `latest`; when both a
 * tag and a digest are given the digest pins the content, so the tag is dropped.
 */
export interface ImageReference {
  /** Repository name, e.g. `prism.local/base`. */
  name: string;
  /** Set when `digest` is not. */
  tag?: string;
  /** `sha256:<hex>`; set when `tag` is not. */
  digest?: string;
}

export const DEFAULT_TAG = 'latest';

const MAX_NAME_LENGTH = 255;
const DOMAIN_COMPONENT = '(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])';
const DOMAIN = new RegExp(`^${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*(?::[0-9]+)?$`);
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

function invalid(input: string, why: string): PrismError {
  return new PrismError('INVALID_ARGUMENT', `invalid image reference ${JSON.stringify(input)}: ${why}`);
}

/**
 * Canonicalises a repository name. Today that is lower-casing and validation; Docker Hub's implicit
 * `docker.io/library/` prefix will be added here when pulling arrives, so every caller gets it for free.
 */
export function normalizeName(name: string): string {
  return checkName(name, name);
}

function checkName(name: string, input: string): string {
  const lower = name.toLowerCase();
  if (lower.length === 0) throw invalid(input, 'the name is empty');
  if (lower.length > MAX_NAME_LENGTH) throw invalid(input, `the name is longer than ${MAX_NAME_LENGTH} characters`);
  const parts = lower.split('/');
  // As in Docker: the first part is a registry host when it looks like one (has '.' or ':' or is localhost).
  const first = parts[0]!;
  const hasDomain = parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost');
  if (hasDomain && !DOMAIN.test(first)) throw invalid(input, `${JSON.stringify(first)} is not a valid registry host`);
  for (const part of hasDomain ? parts.slice(1) : parts) {
    if (!PATH_COMPONENT.test(part)) {
      throw invalid(
        input,
        `name component ${JSON.stringify(part)} must be lower-case letters and digits, optionally separated by '.', '_', '__' or '-'`,
      );
    }
  }
  return lower;
}

/** Parses and normalises a reference; INVALID_ARGUMENT with the reason when it is malformed. */
export function parseReference(input: string): ImageReference {
  if (typeof input !== 'string' || input.trim() === '') throw invalid(String(input), 'it is empty');
  if (input !== input.trim()) throw invalid(input, 'it has leading or trailing spaces');
  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid(input, 'the digest must be sha256: followed by 64 lower-case hex digits');
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) {
      throw invalid(input, 'a tag is 1-128 characters of letters, digits, "_", "." and "-", not starting with "." or "-"');
    }
  }
  const name = checkName(rest, input);
  return digest !== undefined ? { name, digest } : { name, tag: tag ?? DEFAULT_TAG };
}

export function formatReference(ref: ImageReference): string {
  return ref.digest !== undefined ? `${ref.name}@${ref.digest}` : `${ref.name}:${ref.tag ?? DEFAULT_TAG}`;
}

/** `Python:3.12` -> `python:3.12`, `alpine` -> `alpine:latest`. */
export function normalizeReference(input: string): string {
  return formatReference(parseReference(input));
}
