import { useState } from 'preact/hooks';
import type { ExecResult, SandboxHandle } from '../../../src/sdk/browser.js';
import { ago } from '../format.js';
import { useAction, useLoad } from '../hooks.js';
import { ErrorLine } from './error-line.js';

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/** Run a command, and the sandbox's exec log (GET /sandboxes/:id/logs). */
export function LogsPane({ sb }: { sb: SandboxHandle }) {
  const logs = useLoad(() => sb.logs(), [sb.id]);
  const [cmd, setCmd] = useState('');
  const [result, setResult] = useState<ExecResult | undefined>(undefined);
  const act = useAction();
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    setResult(undefined);
    await act.run(async () => setResult(await sb.exec(cmd)));
    logs.reload();
  };
  return (
    <div>
      <form class="row" onSubmit={submit}>
        <label>
          Command
          <input required value={cmd} placeholder="ls -la" onInput={(e) => setCmd((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" disabled={act.busy}>
          {act.busy ? 'Running…' : 'Run'}
        </button>
      </form>
      <ErrorLine message={act.error} />
      {result && (
        <div class="result" aria-label="Result">
          <p>exit code {result.exitCode}</p>
          <pre>{text(result.stdout)}</pre>
          {result.stderr.length > 0 && <pre class="stderr">{text(result.stderr)}</pre>}
        </div>
      )}
      <h2>Exec log</h2>
      <ErrorLine message={logs.error} />
      {logs.data && logs.data.length === 0 && <p>No commands run yet.</p>}
      <ul class="log">
        {[...(logs.data ?? [])].reverse().map((l) => (
          <li key={l.id}>
            <details>
              <summary>
                <code>{l.cmd.join(' ')}</code> → {l.signal ? l.signal : `exit ${l.exitCode}`}, {l.durationMs} ms, {ago(l.startedAt)}
                {l.truncated ? ' (output truncated)' : ''}
              </summary>
              <pre>{l.text()}</pre>
              {l.stderr.length > 0 && <pre class="stderr">{text(l.stderr)}</pre>}
            </details>
          </li>
        ))}
      </ul>
    </div>
  );
}
