/** The console's pages, addressed by the URL fragment (#/sandboxes/sb-1): never anything secret. */
export type Route =
  | { page: 'sandboxes' }
  | { page: 'sandbox'; id: string; tab: SandboxTab }
  | { page: 'nodes' }
  | { page: 'images' }
  | { page: 'volumes' };

export const SANDBOX_TABS = ['terminal', 'files', 'logs', 'metrics', 'processes'] as const;
export type SandboxTab = (typeof SANDBOX_TABS)[number];

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const [page, id, tab] = parts;
  if (page === 'sandboxes' && id) return { page: 'sandbox', id, tab: (SANDBOX_TABS as readonly string[]).includes(tab ?? '') ? (tab as SandboxTab) : 'terminal' };
  if (page === 'nodes' || page === 'images' || page === 'volumes') return { page };
  return { page: 'sandboxes' };
}

export function href(r: Route): string {
  if (r.page === 'sandbox') return `#/sandboxes/${encodeURIComponent(r.id)}/${r.tab}`;
  return `#/${r.page}`;
}
