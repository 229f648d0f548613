import { useState } from 'preact/hooks';
import type { Prism } from '../../../src/sdk/browser.js';
import { ago, bytes } from '../format.js';
import { useAction, useLoad } from '../hooks.js';
import { ErrorLine } from './error-line.js';

export function ImagesView({ client }: { client: Prism }) {
  const images = useLoad(() => client.images.list(), [client]);
  const [ref, setRef] = useState('');
  const [progress, setProgress] = useState('');
  const pull = useAction();
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    const ok = await pull.run(() =>
      client.images.pull(ref.trim(), {
        onProgress: (p) => setProgress(`${p.phase}${p.total ? ` ${bytes(p.current ?? 0)} of ${bytes(p.total)}` : ''}`),
      }),
    );
    setProgress('');
    if (ok) {
      setRef('');
      images.reload();
    }
  };
  return (
    <section aria-labelledby="images-h">
      <h1 id="images-h">Images</h1>
      <form onSubmit={submit} class="row">
        <label>
          Image reference
          <input required value={ref} placeholder="registry:5000/python:3.12" onInput={(e) => setRef((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" disabled={pull.busy}>
          {pull.busy ? 'Pulling…' : 'Pull'}
        </button>
        {progress && <span role="status">{progress}</span>}
        <ErrorLine message={pull.error} inline />
      </form>
      <ErrorLine message={images.error} />
      {images.data && images.data.length === 0 && <p>No images on this node yet.</p>}
      {images.data && images.data.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">References</th>
              <th scope="col">Digest</th>
              <th scope="col">Platform</th>
              <th scope="col">Size</th>
              <th scope="col">Pulled</th>
            </tr>
          </thead>
          <tbody>
            {images.data.map((img) => (
              <tr key={img.digest}>
                <td class="mono">{img.refs.join(', ') || '–'}</td>
                <td class="mono">{img.digest.slice(0, 19)}</td>
                <td>
                  {img.os}/{img.architecture}
                </td>
                <td>{bytes(img.size)}</td>
                <td>{ago(img.createdAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
