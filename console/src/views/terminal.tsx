import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { Pty, SandboxHandle } from '../../../src/sdk/browser.js';
import { describeError } from '../session.js';

/** xterm.js on the sandbox's PTY WebSocket (GET /sandboxes/:id/pty): the login shell, sized to fit. */
export function TerminalPane({ sb }: { sb: SandboxHandle }) {
  const host = useRef<HTMLDivElement>(null);
  const [state, setState] = useState<string>('connecting');
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000, screenReaderMode: false });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el);
    fit.fit();
    let pty: Pty | undefined;
    let closed = false;
    setState('connecting');
    sb.pty({ cols: term.cols, rows: term.rows, onData: (d) => term.write(d) }).then(
      (p) => {
        if (closed) return p.close();
        pty = p;
        setState('connected');
        term.focus();
        p.wait().then(
          (exit) => {
            term.write(`\r\n[exited with code ${exit.exitCode}${exit.signal ? ` (${exit.signal})` : ''}]\r\n`);
            if (!closed) setState('exited');
          },
          (e: unknown) => {
            if (!closed) setState(`disconnected: ${describeError(e)}`);
          },
        );
      },
      (e: unknown) => {
        if (!closed) setState(`could not connect: ${describeError(e)}`);
      },
    );
    const input = term.onData((d) => pty?.write(d));
    const resized = term.onResize(({ cols, rows }) => pty?.resize(cols, rows));
    const observer = new ResizeObserver(() => fit.fit());
    observer.observe(el);
    return () => {
      closed = true;
      observer.disconnect();
      input.dispose();
      resized.dispose();
      pty?.close();
      term.dispose();
    };
  }, [sb.id, attempt]);
  return (
    <div class="terminal-pane">
      <div class="row">
        <span role="status" data-terminal-state={state.split(':')[0]}>
          Terminal: {state}
        </span>
        {state !== 'connected' && state !== 'connecting' && (
          <button type="button" onClick={() => setAttempt((a) => a + 1)}>
            Reconnect
          </button>
        )}
      </div>
      <div class="term-host" ref={host} aria-label="Terminal" />
    </div>
  );
}
