import type { SdkPlatform } from './client.js';
import { connectionError, errorFromResponse } from './errors.js';
import type { MessageSocket, SocketOpening } from './socket.js';

/**
 * The SDK on Node: a private CA through undici (what Node's fetch is built on), WebSockets through the
 * `ws` package (Node 20 has no global WebSocket), the token as an `Authorization` header on both.
 * Both packages load on first use, so a client that never needs them never pays for them.
 */
export const nodePlatform: SdkPlatform = {
  fetchTrusting(ca) {
    let ready: Promise<typeof fetch> | undefined;
    const load = async (): Promise<typeof fetch> => {
      const undici = await import('undici');
      const dispatcher = new undici.Agent({ connect: { ca: typeof ca === 'string' ? ca : Buffer.from(ca) } });
      return ((input: string | URL | Request, init?: RequestInit) =>
        undici.fetch(input as string, { ...(init as object), dispatcher } as Parameters<typeof undici.fetch>[1])) as unknown as typeof fetch;
    };
    return async (input, init) => (await (ready ??= load()))(input, init);
  },

  async openSocket(url, { token, ca, baseUrl, what }): Promise<SocketOpening> {
    const { WebSocket } = await import('ws');
    const ws = new WebSocket(url, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      ...(ca !== undefined ? { ca: typeof ca === 'string' ? ca : Buffer.from(ca) } : {}),
      perMessageDeflate: false,
    });
    const opened = new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (req, res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () => {
          req.destroy();
          const answer = new Response(Buffer.concat(chunks), { status: res.statusCode ?? 500 });
          void errorFromResponse(answer, what).then(reject);
        });
      });
      ws.once('error', (e) => reject(connectionError(baseUrl, e)));
    });
    opened.catch(() => undefined); // the caller awaits it after attaching its listeners
    return { socket: ws as unknown as MessageSocket, opened };
  },
};
