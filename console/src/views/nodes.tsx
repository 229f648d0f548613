import type { Prism } from '../../../src/sdk/browser.js';
import { ago, bytes, percent } from '../format.js';
import { useLoad } from '../hooks.js';
import { ErrorLine } from './error-line.js';

export function NodesView({ client }: { client: Prism }) {
  const nodes = useLoad(() => client.nodes.list(), [client], 5000);
  return (
    <section aria-labelledby="nodes-h">
      <h1 id="nodes-h">Nodes</h1>
      <ErrorLine message={nodes.error} />
      {nodes.data && (
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Status</th>
              <th scope="col">Runtimes</th>
              <th scope="col">Sandboxes</th>
              <th scope="col">Reserved / capacity</th>
              <th scope="col">CPU use</th>
              <th scope="col">Memory use</th>
              <th scope="col">Disk use</th>
              <th scope="col">Heartbeat</th>
            </tr>
          </thead>
          <tbody>
            {nodes.data.map((n) => {
              const c = n.capacity;
              return (
                <tr key={n.id}>
                  <td>
                    {n.name}
                    <div class="sub mono">{n.address}</div>
                  </td>
                  <td>
                    <span class={`status ${n.status === 'alive' ? 'running' : 'failed'}`}>{n.status}</span>
                  </td>
                  <td>{n.runtimes.map((r) => (r === n.defaultRuntime ? `${r} (default)` : r)).join(', ')}</td>
                  <td>
                    {n.sandboxes}
                    {c.maxSandboxes > 0 ? ` of ${c.maxSandboxes}` : ''}
                  </td>
                  <td>
                    {n.reserved.cpus} of {c.cpus * (c.cpuOvercommit ?? 1)} CPUs, {n.reserved.memoryMb} of {Math.round(c.memoryMb * (c.memoryOvercommit ?? 1))} MiB
                  </td>
                  <td>
                    {percent(n.resources.cpuPercent)} of {n.resources.cpus}
                  </td>
                  <td>
                    {bytes(n.resources.memoryUsedBytes)} of {bytes(n.resources.memoryBytes)}
                  </td>
                  <td>
                    {bytes(n.resources.diskUsedBytes)} of {bytes(n.resources.diskBytes)}
                  </td>
                  <td>{ago(n.heartbeatAt)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}
