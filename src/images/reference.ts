import { PrismError } from '../core/errors.js';

/**
 * Image references, after the Docker distribution grammar: `[domain[:port]/]path[:tag]` or
 * `...name@sha256:<64 hex>`. Normalised form, as Docker normalises: lower-case name; a name without a
 * registry host is on Docker Hub (`docker.io`), and a single-component Hub name is in `library/`
 * (`python:3.12` -> `docker.io/library/python:3.12`); a missing tag is `latest`; when both a tag and a
 * digest are given the digest pins the content, so the tag is dropped.
 */
export interface ImageReference {
  /** Fully qualified repository name, e.g. `prism.local/base` or `docker.io/library/python`. */
  name: string;
  /** Set when `digest` is not. */
  tag?: string;
  /** `sha256:<hex>`; set when `tag` is not. */
  digest?: string;
}

export const DEFAULT_TAG = 'latest';
export const DOCKER_HUB_DOMAIN = 'docker.io';
/** Docker Hub's names live on `docker.io`, but its registry API is served from this host. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

const LEGACY_HUB_DOMAIN = 'index.docker.io';
const OFFICIAL_NAMESPACE = 'library';
const MAX_NAME_LENGTH = 255;
const DOMAIN_COMPONENT = '(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])';
const IPV6_HOST = '\\[[0-9a-f:.]+\\]';
const DOMAIN = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|${IPV6_HOST})(?::[0-9]+)?$`);
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

function invalid(input: string, why: string): PrismError {
  return new PrismError('INVALID_ARGUMENT', `invalid image reference ${JSON.stringify(input)}: ${why}`);
}

/** Canonicalises a repository name: lower-cased, validated and qualified with its registry host. */
export function normalizeName(name: string): string {
  return checkName(name, name);
}

/** As in Docker: the first part names a registry host when it looks like one (has '.' or ':' or is localhost). */
function splitDomain(parts: string[]): { domain: string; path: string[] } {
  const first = parts[0]!;
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    return { domain: first, path: parts.slice(1) };
  }
  return { domain: DOCKER_HUB_DOMAIN, path: parts };
}

function checkName(name: string, input: string): string {
  const lower = name.toLowerCase();
  if (lower.length === 0) throw invalid(input, 'the name is empty');
  if (lower.length > MAX_NAME_LENGTH) throw invalid(input, `the name is longer than ${MAX_NAME_LENGTH} characters`);
  let { domain, path } = splitDomain(lower.split('/'));
  if (!DOMAIN.test(domain)) throw invalid(input, `${JSON.stringify(domain)} is not a valid registry host`);
  for (const part of path) {
    if (!PATH_COMPONENT.test(part)) {
      throw invalid(
        input,
        `name component ${JSON.stringify(part)} must be lower-case letters and digits, optionally separated by '.', '_', '__' or '-'`,
      );
    }
  }
  if (domain === LEGACY_HUB_DOMAIN) domain = DOCKER_HUB_DOMAIN;
  if (domain === DOCKER_HUB_DOMAIN && path.length === 1) path = [OFFICIAL_NAMESPACE, ...path];
  return `${domain}/${path.join('/')}`;
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

/** `Python:3.12` -> `docker.io/library/python:3.12`, `user/app` -> `docker.io/user/app:latest`. */
export function normalizeReference(input: string): string {
  return formatReference(parseReference(input));
}

function qualified(ref: ImageReference | string): ImageReference {
  return typeof ref === 'string' ? parseReference(ref) : { ...ref, name: normalizeName(ref.name) };
}

/** The registry's domain as written in the name, e.g. `docker.io` or `localhost:5000`. */
export function registryDomain(ref: ImageReference | string): string {
  const name = qualified(ref).name;
  return name.slice(0, name.indexOf('/'));
}

/** The host[:port] serving the registry API for `ref` (`docker.io` -> `registry-1.docker.io`). */
export function registryHost(ref: ImageReference | string): string {
  const domain = registryDomain(ref);
  return domain === DOCKER_HUB_DOMAIN ? DOCKER_HUB_API_HOST : domain;
}

/** The repository path within its registry, e.g. `library/python`. */
export function repositoryPath(ref: ImageReference | string): string {
  const name = qualified(ref).name;
  return name.slice(name.indexOf('/') + 1);
}
