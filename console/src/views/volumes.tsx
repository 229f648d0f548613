import { useState } from 'preact/hooks';
import type { Prism } from '../../../src/sdk/browser.js';
import { ago } from '../format.js';
import { useAction, useLoad } from '../hooks.js';
import { ErrorLine } from './error-line.js';

export function VolumesView({ client }: { client: Prism }) {
  const volumes = useLoad(() => client.volumes.list(), [client], 10_000);
  const nodes = useLoad(() => client.nodes.list(), [client], 30_000);
  const [name, setName] = useState('');
  const [sizeMb, setSizeMb] = useState('1024');
  const [multiAttach, setMultiAttach] = useState(false);
  // '' : the node the console talks to.
  const [node, setNode] = useState('');
  const create = useAction();
  const remove = useAction();
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    const req = { name: name.trim(), sizeMb: Number(sizeMb), ...(multiAttach ? { multiAttach } : {}), ...(node ? { node } : {}) };
    if (await create.run(() => client.volumes.create(req))) {
      setName('');
      volumes.reload();
    }
  };
  return (
    <section aria-labelledby="volumes-h">
      <h1 id="volumes-h">Volumes</h1>
      <form onSubmit={submit} class="row">
        <label>
          Volume name
          <input required value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Size (MiB)
          <input type="number" required min="16" value={sizeMb} onInput={(e) => setSizeMb((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Node
          <select value={node} onChange={(e) => setNode((e.target as HTMLSelectElement).value)}>
            <option value="">this node</option>
            {(nodes.data ?? []).filter((n) => n.status === 'alive').map((n) => (
              <option key={n.id} value={n.id}>
                {n.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          <input type="checkbox" checked={multiAttach} onChange={(e) => setMultiAttach((e.target as HTMLInputElement).checked)} />
          Shared read-write (containers)
        </label>
        <button type="submit" disabled={create.busy}>
          Create volume
        </button>
        <ErrorLine message={create.error} inline />
      </form>
      <ErrorLine message={volumes.error ?? remove.error} />
      {volumes.data && volumes.data.length === 0 && <p>No volumes yet.</p>}
      {volumes.data && volumes.data.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Size</th>
              <th scope="col">Node</th>
              <th scope="col">Shared</th>
              <th scope="col">Attached to</th>
              <th scope="col">Created</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {volumes.data.map((v) => (
              <tr key={v.name}>
                <td>{v.name}</td>
                <td>{v.sizeMb} MiB</td>
                <td class="mono">{v.node}</td>
                <td>{v.multiAttach ? 'yes' : 'no'}</td>
                <td>{v.attachments.map((a) => a.sandboxId).join(', ') || '–'}</td>
                <td>{ago(v.createdAt)}</td>
                <td>
                  <button
                    type="button"
                    class="danger"
                    aria-label={`Delete volume ${v.name}`}
                    disabled={remove.busy}
                    onClick={() => {
                      if (confirm(`Delete volume ${v.name} and its data?`)) void remove.run(() => client.volumes.delete(v.name)).then(volumes.reload);
                    }}
                  >
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
