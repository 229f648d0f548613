import type { Prism } from '../../../src/sdk/browser.js';
import { ago } from '../format.js';
import { useLoad } from '../hooks.js';
import { href, SANDBOX_TABS, type SandboxTab } from '../route.js';
import { SandboxActions } from './actions.js';
import { FilesPane } from './files.js';
import { LogsPane } from './logs.js';
import { MetricsPane } from './metrics.js';
import { ProcessesPane } from './processes.js';
import { TerminalPane } from './terminal.js';
import { ErrorLine } from './error-line.js';

const TAB_LABELS: Record<SandboxTab, string> = { terminal: 'Terminal', files: 'Files', logs: 'Exec logs', metrics: 'Metrics', processes: 'Processes' };

export function SandboxView({ client, id, tab }: { client: Prism; id: string; tab: SandboxTab }) {
  const sb = useLoad(() => client.sandboxes.get(id), [client, id], 5000);
  const h = sb.data;
  return (
    <section aria-labelledby="sandbox-h">
      <p>
        <a href={href({ page: 'sandboxes' })}>← Sandboxes</a>
      </p>
      <ErrorLine message={sb.error} />
      {h && (
        <>
          <h1 id="sandbox-h">
            {h.name} <span class={`status ${h.status}`}>{h.status}</span>
          </h1>
          <p class="sub">
            <span class="mono">{h.id}</span> · {h.info.image} · {h.info.runtime} · {h.info.cpus} CPU, {h.info.memoryMb} MiB · node {h.info.node || '–'} · created {ago(h.info.createdAt)}
          </p>
          {h.info.error && <p class="notice">{h.info.error.message}</p>}
          <SandboxActions sb={h} onDone={sb.reload} />
          <div role="tablist" aria-label="Sandbox views" class="tabs">
            {SANDBOX_TABS.map((t) => (
              <a role="tab" href={href({ page: 'sandbox', id, tab: t })} aria-selected={t === tab} id={`tab-${t}`}>
                {TAB_LABELS[t]}
              </a>
            ))}
          </div>
          <div role="tabpanel" aria-labelledby={`tab-${tab}`} class="panel">
            {h.status !== 'running' && tab !== 'logs' && tab !== 'metrics' ? (
              <p>The sandbox is {h.status}: start or resume it to use its {TAB_LABELS[tab].toLowerCase()}.</p>
            ) : tab === 'terminal' ? (
              <TerminalPane sb={h} />
            ) : tab === 'files' ? (
              <FilesPane sb={h} />
            ) : tab === 'logs' ? (
              <LogsPane sb={h} />
            ) : tab === 'metrics' ? (
              <MetricsPane sb={h} />
            ) : (
              <ProcessesPane sb={h} />
            )}
          </div>
        </>
      )}
    </section>
  );
}
