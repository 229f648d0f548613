import type { FastifyInstance } from 'fastify';
import type { PromMetrics } from '../service/prometheus.js';

/** Where Prometheus scrapes a node: beside the API, not under /api/v1 (a scrape config names only a host). */
export const METRICS_PATH = '/metrics';

/** GET /metrics in the Prometheus text format; every request served is counted by its route template. */
export function registerMetricsRoute(app: FastifyInstance, metrics: PromMetrics): void {
  app.addHook('onResponse', async (req, reply) => {
    // The template (`/api/v1/sandboxes/:id`), not the URL: sandbox ids never become label values.
    // Requests no route matched (404s of unknown paths) go under one label.
    const route = req.routeOptions.url ?? 'unmatched';
    metrics.observeRequest(req.method, route, reply.statusCode, reply.elapsedTime / 1000);
  });
  app.get(METRICS_PATH, { schema: { hide: true } }, async (_req, reply) => {
    const { contentType, body } = await metrics.render();
    return reply.type(contentType).send(body);
  });
}
