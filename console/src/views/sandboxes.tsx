import { useEffect, useState } from 'preact/hooks';
import type { CreateSandboxOptions, Prism, RuntimeName } from '../../../src/sdk/browser.js';
import { ago } from '../format.js';
import { useAction, useLoad } from '../hooks.js';
import { href } from '../route.js';
import { SandboxActions } from './actions.js';
import { ErrorLine } from './error-line.js';

/** Live: reloads on every lifecycle event (GET /events), and every 15 s in case the stream broke. */
export function SandboxesView({ client }: { client: Prism }) {
  const list = useLoad((signal) => client.sandboxes.list().then((l) => (signal.aborted ? [] : l)), [client], 15_000);
  const [live, setLive] = useState(false);
  useEffect(() => {
    const ac = new AbortController();
    let pending: ReturnType<typeof setTimeout> | undefined;
    void (async () => {
      try {
        for await (const _ev of client.events({ signal: ac.signal, onOpen: () => setLive(true) })) {
          clearTimeout(pending);
          pending = setTimeout(list.reload, 150); // a burst of events, one reload
        }
      } catch {
        /* the periodic reload still runs */
      }
      setLive(false);
    })();
    return () => {
      ac.abort();
      clearTimeout(pending);
    };
    // One stream per client; an older `list.reload` still works (it only calls a state setter).
  }, [client]);
  const sandboxes = list.data ?? [];
  return (
    <section aria-labelledby="sandboxes-h">
      <h1 id="sandboxes-h">
        Sandboxes <span class={live ? 'live on' : 'live'}>{live ? 'live' : 'not live'}</span>
      </h1>
      <CreateForm client={client} onCreated={list.reload} />
      <ErrorLine message={list.error} />
      {list.data && sandboxes.length === 0 && <p>No sandboxes yet.</p>}
      {sandboxes.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Status</th>
              <th scope="col">Image</th>
              <th scope="col">Runtime</th>
              <th scope="col">Limits</th>
              <th scope="col">Node</th>
              <th scope="col">Created</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {sandboxes.map((sb) => (
              <tr key={sb.id} data-sandbox={sb.id}>
                <td>
                  <a href={href({ page: 'sandbox', id: sb.id, tab: 'terminal' })}>{sb.name}</a>
                  <div class="sub">{sb.id}</div>
                </td>
                <td>
                  <span class={`status ${sb.status}`}>{sb.status}</span>
                  {sb.info.error && <div class="sub">{sb.info.error.message}</div>}
                </td>
                <td class="mono">{sb.info.image}</td>
                <td>{sb.info.runtime}</td>
                <td>
                  {sb.info.cpus} CPU, {sb.info.memoryMb} MiB
                </td>
                <td class="mono">{sb.info.node || '–'}</td>
                <td>{ago(sb.info.createdAt)}</td>
                <td>
                  <SandboxActions sb={sb} onDone={list.reload} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

const RUNTIMES: RuntimeName[] = ['oci', 'microvm', 'docker'];

function CreateForm({ client, onCreated }: { client: Prism; onCreated: () => void }) {
  const [image, setImage] = useState('');
  const [name, setName] = useState('');
  const [runtime, setRuntime] = useState('');
  const [cpus, setCpus] = useState('');
  const [memoryMb, setMemoryMb] = useState('');
  const [egress, setEgress] = useState<'none' | 'all'>('none');
  const act = useAction();
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    const opts: CreateSandboxOptions = { image: image.trim(), network: { egress } };
    if (name.trim()) opts.name = name.trim();
    if (runtime) opts.runtime = runtime as RuntimeName;
    if (cpus) opts.cpus = Number(cpus);
    if (memoryMb) opts.memoryMb = Number(memoryMb);
    if (await act.run(() => client.sandboxes.create(opts))) {
      setName('');
      onCreated();
    }
  };
  return (
    <details class="create">
      <summary>Create a sandbox</summary>
      <form onSubmit={submit} class="grid">
        <label>
          Image
          <input required value={image} placeholder="e.g. python:3.12-slim" onInput={(e) => setImage((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Name (optional)
          <input value={name} pattern="[a-z0-9]([a-z0-9\-]*[a-z0-9])?" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Runtime
          <select value={runtime} onChange={(e) => setRuntime((e.target as HTMLSelectElement).value)}>
            <option value="">the node's default</option>
            {RUNTIMES.map((r) => (
              <option value={r}>{r}</option>
            ))}
          </select>
        </label>
        <label>
          CPUs
          <input type="number" min="0.01" max="64" step="0.01" value={cpus} placeholder="1" onInput={(e) => setCpus((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Memory (MiB)
          <input type="number" min="16" max="262144" step="1" value={memoryMb} placeholder="512" onInput={(e) => setMemoryMb((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Network egress
          <select value={egress} onChange={(e) => setEgress((e.target as HTMLSelectElement).value as 'none' | 'all')}>
            <option value="none">none</option>
            <option value="all">all</option>
          </select>
        </label>
        <div class="row">
          <button type="submit" disabled={act.busy}>
            {act.busy ? 'Creating…' : 'Create'}
          </button>
          <ErrorLine message={act.error} inline />
        </div>
      </form>
    </details>
  );
}
