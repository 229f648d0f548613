import { describe, expect, it } from 'vitest';
import { bearerToken, chooseProtocol } from '../api/auth.js';
import { BEARER_PROTOCOL_PREFIX, PTY_PROTOCOL, bearerProtocol, tokenFromProtocols } from './socket-protocols.js';

describe('WebSocket token subprotocol', () => {
  it('round-trips a token, as a valid subprotocol token (no = + / or spaces)', () => {
    for (const token of ['prism_abc123_' + 'x'.repeat(43), 'with spaces/and+slashes=', 'ünïcödé']) {
      const proto = bearerProtocol(token);
      expect(proto.startsWith(BEARER_PROTOCOL_PREFIX)).toBe(true);
      expect(proto).toMatch(/^[A-Za-z0-9._-]+$/);
      expect(tokenFromProtocols(`${PTY_PROTOCOL}, ${proto}`)).toBe(token);
    }
  });

  it('finds nothing in headers without one, or with a malformed one', () => {
    expect(tokenFromProtocols(undefined)).toBeUndefined();
    expect(tokenFromProtocols(PTY_PROTOCOL)).toBeUndefined();
    expect(tokenFromProtocols(`${BEARER_PROTOCOL_PREFIX}%%%`)).toBeUndefined();
    expect(tokenFromProtocols(`${BEARER_PROTOCOL_PREFIX}${btoa('\xff\xfe')}`)).toBeUndefined(); // not UTF-8
  });

  it('reads the header first, the subprotocol only on an upgrade without one', () => {
    const proto = bearerProtocol('from-protocol');
    expect(bearerToken({ authorization: 'Bearer from-header', upgrade: 'websocket', 'sec-websocket-protocol': proto })).toBe('from-header');
    expect(bearerToken({ upgrade: 'websocket', 'sec-websocket-protocol': `${PTY_PROTOCOL}, ${proto}` })).toBe('from-protocol');
    expect(bearerToken({ 'sec-websocket-protocol': proto })).toBe(''); // not an upgrade
    expect(bearerToken({ authorization: 'Basic abc' })).toBe('');
  });

  it('answers with the terminal protocol only when offered', () => {
    expect(chooseProtocol(new Set([PTY_PROTOCOL, bearerProtocol('t')]))).toBe(PTY_PROTOCOL);
    expect(chooseProtocol(new Set(['other']))).toBe(false);
  });
});
