import { useState } from 'preact/hooks';
import type { SandboxHandle } from '../../../src/sdk/browser.js';
import { ago } from '../format.js';
import { useAction, useLoad } from '../hooks.js';
import { ErrorLine } from './error-line.js';

/** Background processes (POST /sandboxes/:id/processes): list, start, kill. */
export function ProcessesPane({ sb }: { sb: SandboxHandle }) {
  const procs = useLoad(() => sb.processes.list(), [sb.id], 5000);
  const [cmd, setCmd] = useState('');
  const act = useAction();
  const start = async (e: Event): Promise<void> => {
    e.preventDefault();
    if (await act.run(() => sb.processes.start(cmd))) setCmd('');
    procs.reload();
  };
  return (
    <div>
      <form class="row" onSubmit={start}>
        <label>
          Background command
          <input required value={cmd} placeholder="python3 -m http.server 8000" onInput={(e) => setCmd((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" disabled={act.busy}>
          Start
        </button>
      </form>
      <ErrorLine message={procs.error ?? act.error} />
      {procs.data && procs.data.length === 0 && <p>No background processes.</p>}
      {procs.data && procs.data.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">Command</th>
              <th scope="col">Status</th>
              <th scope="col">Output</th>
              <th scope="col">Started</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {procs.data.map((p) => (
              <tr key={p.id}>
                <td class="mono">{p.info.cmd.join(' ')}</td>
                <td>{p.status === 'exited' ? `exited ${p.info.signal ?? p.info.exitCode ?? ''}` : 'running'}</td>
                <td>
                  {p.info.stdoutBytes} + {p.info.stderrBytes} bytes
                </td>
                <td>{ago(p.info.startedAt)}</td>
                <td>
                  {p.status === 'running' ? (
                    <button type="button" class="danger" aria-label={`Kill ${p.info.cmd.join(' ')}`} onClick={() => void act.run(() => p.kill()).then(procs.reload)}>
                      Kill
                    </button>
                  ) : (
                    <button type="button" aria-label={`Remove ${p.info.cmd.join(' ')}`} onClick={() => void act.run(() => p.remove()).then(procs.reload)}>
                      Remove
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
